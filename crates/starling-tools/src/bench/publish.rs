//! The publishing end: WebSocket publishers with a fixed schedule (open loop) or a window of
//! publishes in flight (closed loop), and HTTP publishers with one request in flight.
//!
//! Each publish carries its send time twice: in the data (for subscribers) and as the
//! `req` the ack echoes (for ack latency), so no publisher keeps a table of what is in
//! flight.

use super::clients::{self, now_us, stamped_data, Live, Window};
use super::report::histogram;
use super::BenchError;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use starling_client::Client;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Publishes per second from this publisher, on a fixed schedule.
    Rate(f64),
    /// Publishes in flight at a time.
    Window(usize),
}

impl Pace {
    /// `rate` msg/s shared by `publishers`, or closed loop with `window` when `rate` is 0.
    pub fn of(rate: u64, publishers: usize, window: usize) -> Pace {
        match rate {
            0 => Pace::Window(window.max(1)),
            r => Pace::Rate(r as f64 / publishers.max(1) as f64),
        }
    }
}

/// What one publisher does.
#[derive(Clone)]
pub struct Plan {
    pub base: String,
    pub topics: Arc<Vec<String>>,
    /// Index of the topic its first publish goes to; then round robin.
    pub first: usize,
    pub size: usize,
    pub pace: Pace,
    pub window: Window,
}

impl Plan {
    /// The plan of publisher number `p`: its first topic is `p` (round robin after that).
    pub fn of(
        p: usize,
        base: &str,
        topics: &Arc<Vec<String>>,
        size: usize,
        pace: Pace,
        window: Window,
    ) -> Plan {
        Plan {
            base: base.to_string(),
            topics: topics.clone(),
            first: p % topics.len(),
            size,
            pace,
            window,
        }
    }
}

/// What one publisher did inside the window.
pub struct Published {
    /// Publishes sent, per topic.
    pub sent: Vec<u64>,
    pub acked: u64,
    pub errors: u64,
    /// Ack latency, microseconds.
    pub ack_us: Histogram<u64>,
}

impl Published {
    pub fn new(topics: usize) -> Published {
        Published {
            sent: vec![0; topics],
            acked: 0,
            errors: 0,
            ack_us: histogram(),
        }
    }

    pub fn merge(&mut self, other: &Published) {
        for (a, b) in self.sent.iter_mut().zip(&other.sent) {
            *a += b;
        }
        self.acked += other.acked;
        self.errors += other.errors;
        let _ = self.ack_us.add(&other.ack_us);
    }
}

/// Waits until publish number `k` is due (rate) or a credit is free (window).
pub async fn ready(pace: Pace, start: Instant, k: u64, credits: &Semaphore) {
    match pace {
        Pace::Rate(r) => {
            tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / r)).into()).await
        }
        Pace::Window(_) => {
            if let Ok(p) = credits.acquire().await {
                p.forget();
            }
        }
    }
}

/// Publishes over one WebSocket until `stop_send`, reads acks until `stop_all`.
pub async fn ws(
    plan: Plan,
    live: Arc<Live>,
    stop_send: CancellationToken,
    stop_all: CancellationToken,
) -> Result<Published, BenchError> {
    let (mut tx, rx) = clients::connect(&plan.base).await?.into_inner().split();
    let window = match plan.pace {
        Pace::Window(w) => w,
        Pace::Rate(_) => 0,
    };
    let credits = Arc::new(Semaphore::new(window));
    let acks = tokio::spawn(read_acks(
        rx,
        plan.topics.len(),
        plan.window,
        live.clone(),
        credits.clone(),
        stop_all,
    ));
    let names: Vec<String> = plan
        .topics
        .iter()
        .map(|t| serde_json::Value::from(t.as_str()).to_string())
        .collect();
    let pad = "x".repeat(plan.size);
    let mut sent = vec![0u64; names.len()];
    let start = Instant::now();
    let mut k = 0u64;
    loop {
        tokio::select! {
            _ = stop_send.cancelled() => break,
            _ = ready(plan.pace, start, k, &credits) => {}
        }
        let t = now_us();
        let i = (plan.first + k as usize) % names.len();
        let frame = format!(
            "{{\"type\":\"publish\",\"topic\":{},\"data\":{},\"req\":{t}}}",
            names[i],
            stamped_data(t, &pad)
        );
        if tx.send(Message::text(frame)).await.is_err() {
            Live::add(&live.errors, 1);
            break;
        }
        Live::add(&live.sent, 1);
        if plan.window.contains(t) {
            sent[i] += 1;
        }
        k += 1;
    }
    let mut done = acks
        .await
        .map_err(|e| BenchError::Setup(format!("ack reader failed: {e}")))?;
    done.sent = sent;
    Ok(done)
}

async fn read_acks<R>(
    mut rx: R,
    topics: usize,
    window: Window,
    live: Arc<Live>,
    credits: Arc<Semaphore>,
    stop_all: CancellationToken,
) -> Published
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut done = Published::new(topics);
    loop {
        let m = tokio::select! {
            _ = stop_all.cancelled() => break,
            m = rx.next() => m,
        };
        let text = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        let Some(sent) = clients::number_after(&text, "\"req\":") else {
            continue;
        };
        credits.add_permits(1);
        if text.contains("\"published\"") {
            Live::add(&live.acked, 1);
            if window.contains(sent) {
                done.acked += 1;
                done.ack_us
                    .saturating_record(now_us().saturating_sub(sent).max(1));
            }
        } else {
            Live::add(&live.errors, 1);
            if window.contains(sent) {
                done.errors += 1;
            }
        }
    }
    done
}

/// Publishes with POST, one request at a time, until `stop_send`.
pub async fn http(plan: Plan, live: Arc<Live>, stop_send: CancellationToken) -> Published {
    let client = Client::new(&plan.base);
    let pad = "x".repeat(plan.size);
    let mut done = Published::new(plan.topics.len());
    let never = Semaphore::new(1);
    let start = Instant::now();
    let mut k = 0u64;
    loop {
        tokio::select! {
            _ = stop_send.cancelled() => break,
            _ = ready(plan.pace, start, k, &never) => {}
        }
        never.add_permits(1);
        let t = now_us();
        let i = (plan.first + k as usize) % plan.topics.len();
        let body = format!("{{\"data\":{}}}", stamped_data(t, &pad));
        let ok = client.publish_body(&plan.topics[i], body).await.is_ok();
        Live::add(&live.sent, 1);
        Live::add(if ok { &live.acked } else { &live.errors }, 1);
        if plan.window.contains(t) {
            done.sent[i] += 1;
            if ok {
                done.acked += 1;
                done.ack_us
                    .saturating_record(now_us().saturating_sub(t).max(1));
            } else {
                done.errors += 1;
            }
        }
        k += 1;
    }
    done
}
