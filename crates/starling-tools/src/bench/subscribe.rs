//! The receiving end: stream subscribers over WebSocket or SSE that count deliveries of
//! messages sent inside the window and record their publish-to-deliver latency.

use super::args::Transport;
use super::clients::{self, now_us, Live, Window, Ws, SETUP_TIMEOUT};
use super::report::histogram;
use super::BenchError;
use futures_util::{Stream, StreamExt};
use hdrhistogram::Histogram;
use std::pin::Pin;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What one subscriber received.
pub struct Received {
    /// Deliveries of messages sent inside the window.
    pub delivered: u64,
    /// Their publish-to-deliver latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl Received {
    pub fn new() -> Received {
        Received {
            delivered: 0,
            latency_us: histogram(),
        }
    }

    pub fn record(&mut self, frame: &str, window: Window, live: &Live) {
        let Some(sent) = clients::stamp(frame) else {
            return;
        };
        Live::add(&live.delivered, 1);
        if window.contains(sent) {
            self.delivered += 1;
            self.latency_us
                .saturating_record(now_us().saturating_sub(sent).max(1));
        }
    }

    pub fn merge(&mut self, other: &Received) {
        self.delivered += other.delivered;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// An open subscription, not yet read.
pub enum Conn {
    Ws(Box<Ws>),
    Sse {
        body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
        buf: Vec<u8>,
    },
    /// A NATS subscription (`--target nats`).
    Nats(Box<Ws>, super::nats_proto::Parser),
}

/// Connects to `base` and subscribes to `topic`.
pub async fn open(transport: Transport, base: &str, topic: &str) -> Result<Conn, BenchError> {
    match transport {
        Transport::Ws => {
            let mut ws = clients::connect(base).await?;
            clients::subscribe(&mut ws, topic, serde_json::json!({})).await?;
            Ok(Conn::Ws(Box::new(ws)))
        }
        Transport::Sse => open_sse(base, topic).await,
    }
}

/// `GET /v1/topics/{topic}/events`, once the stream has begun.
async fn open_sse(base: &str, topic: &str) -> Result<Conn, BenchError> {
    let url = format!("{base}/v1/topics/{}/events", clients::topic_path(topic));
    let fail = |reason: String| BenchError::Connect {
        url: url.clone(),
        reason,
    };
    let res = tokio::time::timeout(SETUP_TIMEOUT, reqwest::get(&url))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !res.status().is_success() {
        return Err(fail(res.status().to_string()));
    }
    let mut body = Box::pin(res.bytes_stream());
    // The stream opens with `retry:` once the subscription is live.
    let first = tokio::time::timeout(SETUP_TIMEOUT, body.next())
        .await
        .map_err(|_| fail("no first event".into()))?;
    match first {
        Some(Ok(b)) => Ok(Conn::Sse {
            body,
            buf: b.to_vec(),
        }),
        _ => Err(fail("stream closed".into())),
    }
}

/// Reads `conn` until `stop`, counting what was sent inside `window`.
pub fn spawn(
    conn: Conn,
    window: Window,
    live: Arc<Live>,
    stop: CancellationToken,
) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut got = Received::new();
        match conn {
            Conn::Ws(mut ws) => loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => m,
                };
                match m {
                    Some(Ok(Message::Text(t))) => got.record(&t, window, &live),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            },
            Conn::Sse { mut body, mut buf } => loop {
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.starts_with(b"data:") {
                        got.record(&String::from_utf8_lossy(&line), window, &live);
                    }
                }
                let chunk = tokio::select! {
                    _ = stop.cancelled() => break,
                    c = body.next() => c,
                };
                match chunk {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(_)) | None => break,
                }
            },
            Conn::Nats(ws, parser) => {
                super::nats::read_sub(*ws, parser, window, &live, &stop, &mut got).await
            }
        }
        got
    })
}
