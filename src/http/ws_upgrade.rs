//! The WebSocket handshake (RFC 6455), done here rather than by `warp::ws` so that the
//! socket gets our `WebSocketConfig`: warp 0.4 keeps tungstenite's default 128 KiB read
//! buffer, which is allocated per connection up front and zeroed again on every read (most
//! of a connection's memory and a visible share of the publish path, BENCHMARKS.md).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// The server side of an upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Bytes read from the socket at a time; a frame larger than this is read in several
/// steps.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Outgoing frames are gathered up to this size before they are written.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A request to the WebSocket route whose `Connection` header does not ask for an upgrade.
#[derive(Debug)]
pub struct NotUpgrade;

impl warp::reject::Reject for NotUpgrade {}

/// A valid upgrade request, not yet answered.
pub struct Handshake {
    key: String,
    on_upgrade: Option<OnUpgrade>,
}

/// Matches `GET` with the upgrade headers RFC 6455 requires (else the route's rejection
/// says which header is missing or wrong).
pub fn handshake() -> impl Filter<Extract = (Handshake,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::<String>("connection"))
        .and_then(|connection: String| async move {
            let upgrade = connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            if upgrade {
                Ok(())
            } else {
                Err(warp::reject::custom(NotUpgrade))
            }
        })
        .untuple_one()
        .and(warp::header::exact_ignore_case("upgrade", "websocket"))
        .and(warp::header::exact("sec-websocket-version", "13"))
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .map(|key, on_upgrade| Handshake { key, on_upgrade })
}

impl Handshake {
    /// Answers 101 and runs `serve` on the socket once hyper hands the connection over.
    /// Frames and messages above `max_frame_bytes` are refused by the codec.
    pub fn accept<F, Fut>(self, max_frame_bytes: usize, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_frame_size(Some(max_frame_bytes))
            .max_message_size(Some(max_frame_bytes));
        match self.on_upgrade {
            Some(on_upgrade) => {
                tokio::spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let io = TokioIo::new(upgraded);
                            serve(
                                WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                                    .await,
                            )
                            .await
                        }
                        Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                    }
                });
            }
            None => tracing::debug!("websocket request without an upgradable connection"),
        }
        let mut res = Response::default();
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = res.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        res
    }
}
