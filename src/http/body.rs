//! Request bodies: a length is required and bounded, and the body must arrive in time
//! (a client that sends half a body and stops must not hold its connection).

use crate::config::Config;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::TryStreamExt;
use std::time::Duration;
use warp::{Filter, Rejection};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// It did not arrive within `[http] body_read_timeout_ms` (408).
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The connection failed while it was read (400).
    #[error("the request body could not be read")]
    Broken,
}

impl warp::reject::Reject for BodyError {}

/// The whole body: `Content-Length` required (411), at most the largest message plus room
/// for the envelope (413), within the body timeout (408).
pub(crate) fn read(config: &Config) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    let limit = config.limits.max_message_bytes as u64 + 4096;
    let timeout = Duration::from_millis(config.http.body_read_timeout_ms);
    warp::body::content_length_limit(limit)
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(move |len: Option<u64>, stream| collect(stream, len, limit, timeout))
}

async fn collect<S, B>(
    stream: S,
    len: Option<u64>,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let read = async move {
        let mut buf = BytesMut::with_capacity(len.unwrap_or(0).min(limit) as usize);
        futures_util::pin_mut!(stream);
        while let Some(mut chunk) = stream.try_next().await? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                buf.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok::<_, warp::Error>(buf.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading a request body failed");
            Err(warp::reject::custom(BodyError::Broken))
        }
        Err(_) => {
            metrics::counter!("starling_http_timeouts_total", "kind" => "body").increment(1);
            Err(warp::reject::custom(BodyError::Timeout))
        }
    }
}
