//! The socket under every client connection, as hyper (and, after an upgrade, the
//! WebSocket) sees it. It adds what hyper does not do:
//! - a write that makes no progress for `write_timeout` fails the connection, so a client
//!   that stopped reading cannot hold a descriptor and its unsent data for minutes;
//! - a connection that was dropped that way, or killed (a slow SSE consumer), is closed
//!   with a reset: the kernel discards what was still unsent instead of keeping it;
//! - hyper's own replies to requests it could not parse (400, 414, 431, sent with an empty
//!   body) get the protocol's JSON error body;
//! - the open-connection count lives here, so it follows the socket through an upgrade.

use super::server::OpenGuard;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub(crate) struct ConnIo {
    inner: TcpStream,
    write_timeout: Duration,
    /// Armed while a write is pending; fires after `write_timeout` without progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Cancelled when the connection is to be dropped at once.
    kill: CancellationToken,
    /// Close with a reset (set when a write stalled).
    reset: bool,
    /// A replacement for one of hyper's empty error replies, and how much of it is written.
    rewrite: Option<(Vec<u8>, usize)>,
    _open: OpenGuard,
}

impl ConnIo {
    pub(crate) fn new(
        inner: TcpStream,
        write_timeout: Duration,
        kill: CancellationToken,
        open: OpenGuard,
    ) -> ConnIo {
        ConnIo {
            inner,
            write_timeout,
            stall: None,
            kill,
            reset: false,
            rewrite: None,
            _open: open,
        }
    }

    /// Called when a write is pending: fails it once it has been pending too long.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.reset = true;
                metrics::counter!("starling_http_timeouts_total", "kind" => "write").increment(1);
                tracing::debug!("client stopped reading; dropping the connection");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write made no progress",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Takes `reply` in place of hyper's `len` bytes; errors surface on the next write or
    /// flush.
    fn start_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        reply: Vec<u8>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        metrics::counter!("starling_http_refused_total", "reason" => "unparsable").increment(1);
        self.rewrite = Some((reply, 0));
        let _ = self.poll_rewrite(cx);
        Poll::Ready(Ok(len))
    }

    /// Writes what is left of a rewritten reply; `Ready(Ok)` once all of it is out.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.rewrite {
            if *done == bytes.len() {
                self.rewrite = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *done += n;
                    self.stall = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.poll_stall(cx),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_rewrite(cx))?;
        if let Some(reply) = json_error_reply(buf) {
            return this.start_rewrite(cx, reply, buf.len());
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_stall(cx),
            done => {
                this.stall = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_rewrite(cx))?;
        if let Some(reply) = bufs
            .iter()
            .find(|b| !b.is_empty())
            .and_then(|b| json_error_reply(b))
        {
            let total = bufs.iter().map(|b| b.len()).sum();
            return this.start_rewrite(cx, reply, total);
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_stall(cx),
            done => {
                this.stall = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset || self.kill.is_cancelled() {
            // Linger 0: close with a reset and free the unsent data now.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
        }
    }
}

/// hyper answers a request it cannot parse itself, with an empty body: 400 (bad request
/// line or header), 414 (URI too long) or 431 (head too large). Our own replies with these
/// statuses always have a JSON body, so an empty one is hyper's; it becomes the protocol's
/// error reply.
fn json_error_reply(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    const KNOWN: [(&[u8], &str); 3] = [
        (b"HTTP/1.1 400 Bad Request\r\n", "malformed HTTP request"),
        (
            b"HTTP/1.1 414 URI Too Long\r\n",
            "the request URI is too long",
        ),
        (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "the request headers are too large",
        ),
    ];
    let (status_line, message) = KNOWN.iter().find(|(line, _)| buf.starts_with(line))?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end + 2];
    let empty = head
        .windows(19)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0"));
    let typed = head
        .windows(14)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-type"));
    if !empty || typed {
        return None;
    }
    let error = crate::protocol::ApiError::bad_request(*message);
    Some(raw_error_reply(status_line, "", &error))
}

/// A whole HTTP/1.1 reply with the protocol's JSON error, for the places that write to the
/// socket below hyper: `status_line` ends with CRLF, `extra` is more header lines (each
/// ending with CRLF). The connection closes after it.
pub(crate) fn raw_error_reply(
    status_line: &[u8],
    extra: &str,
    error: &crate::protocol::ApiError,
) -> Vec<u8> {
    let body = error.to_http_body();
    let head = format!(
        "content-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    );
    [status_line, head.as_bytes(), body.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::json_error_reply;

    #[test]
    fn hypers_empty_error_replies_get_a_json_body() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_error_reply(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
    }

    #[test]
    fn our_own_replies_pass_through() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(json_error_reply(ours).is_none());
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n{}";
        assert!(json_error_reply(ours).is_none());
        assert!(json_error_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_error_reply(b"HTTP/1.1 400 Bad Req").is_none());
    }
}
