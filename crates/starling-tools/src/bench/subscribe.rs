//! The receiving end: stream subscribers over WebSocket or SSE that count deliveries of
//! messages sent inside the window and record their publish-to-deliver latency.

use super::args::Transport;
use super::clients::{self, now_us, Live, Window, Ws, SETUP_TIMEOUT};
use super::report::histogram;
use super::BenchError;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use starling_client::{Client, Events, Subscribe};
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
    Sse(Box<Events>),
    /// A NATS subscription (`--target nats`).
    Nats(Box<Ws>, super::nats_proto::Parser),
}

/// Connects to `base` and subscribes to `topic`.
pub async fn open(transport: Transport, base: &str, topic: &str) -> Result<Conn, BenchError> {
    match transport {
        Transport::Ws => {
            let mut ws = clients::connect(base).await?;
            clients::subscribe(&mut ws, &Subscribe::topic(topic)).await?;
            Ok(Conn::Ws(Box::new(ws.into_inner())))
        }
        Transport::Sse => open_sse(base, topic).await,
    }
}

/// `GET /v1/topics/{topic}/events`, once the stream has begun.
async fn open_sse(base: &str, topic: &str) -> Result<Conn, BenchError> {
    let client = Client::new(base).timeout(SETUP_TIMEOUT);
    match client.events(topic, None, &None).await {
        Ok(events) => Ok(Conn::Sse(Box::new(events))),
        Err(e) => Err(BenchError::Connect {
            url: format!("{base}/v1/topics/{}/events", clients::topic_path(topic)),
            reason: e.to_string(),
        }),
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
            Conn::Sse(mut events) => loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = events.next() => e,
                };
                match event {
                    Ok(e) => got.record(&e.data, window, &live),
                    Err(_) => break,
                }
            },
            Conn::Nats(ws, parser) => {
                super::nats::read_sub(*ws, parser, window, &live, &stop, &mut got).await
            }
        }
        got
    })
}
