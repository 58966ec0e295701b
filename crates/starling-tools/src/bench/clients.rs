//! What every scenario shares: WebSocket connections, send-time stamps, the measuring
//! window, topic names and the progress line.

use super::BenchError;
use starling_client::{Subscribe, WsConn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

pub use starling_client::{topic_path, ws_url, Ws};

/// How long one request of the setup (connect, subscribe) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the send time in a bench message's data.
const STAMP_KEY: &str = "\"bench_t\":";

/// Opens Starling's WebSocket at node `base`.
pub async fn connect(base: &str) -> Result<WsConn, BenchError> {
    let conn = WsConn::connect(base, SETUP_TIMEOUT).await;
    conn.map_err(|e| BenchError::Connect {
        url: ws_url(base),
        reason: e.to_string(),
    })
}

/// Opens a WebSocket to `url`, within the setup timeout.
pub async fn dial(url: String) -> Result<Ws, BenchError> {
    let fail = |reason: String| BenchError::Connect {
        url: url.clone(),
        reason,
    };
    match tokio::time::timeout(
        SETUP_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(&url, None, true),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("timed out".into())),
    }
}

/// Subscribes and waits for `subscribed`.
pub async fn subscribe(ws: &mut WsConn, sub: &Subscribe) -> Result<(), BenchError> {
    match ws.subscribe(sub, 0, SETUP_TIMEOUT).await {
        Ok(_) => Ok(()),
        Err(e) => Err(BenchError::Protocol(format!(
            "subscribe to {}: {e}",
            sub.topic
        ))),
    }
}

/// Microseconds since the Unix epoch: comparable between generator processes.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A message's data: its send time and `size` bytes of padding.
pub fn stamped_data(sent_us: u64, pad: &str) -> String {
    format!("{{{STAMP_KEY}{sent_us},\"pad\":\"{pad}\"}}")
}

/// The send time carried by a delivered frame, found without parsing the whole frame.
pub fn stamp(frame: &str) -> Option<u64> {
    number_after(frame, STAMP_KEY)
}

/// The unsigned number right after `key` in `text`.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The measuring window, in `now_us` time: messages sent inside it count.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start_us: u64,
    pub end_us: u64,
}

impl Window {
    /// Starts after `warmup` from now and lasts `duration`.
    pub fn after(warmup: Duration, duration: Duration) -> Window {
        let start_us = now_us() + warmup.as_micros() as u64;
        Window {
            start_us,
            end_us: start_us + duration.as_micros() as u64,
        }
    }

    pub fn contains(&self, t_us: u64) -> bool {
        (self.start_us..self.end_us).contains(&t_us)
    }

    pub fn secs(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 1e6
    }
}

/// Topic names: `name` (or a fresh one per run), suffixed `-k` when there are several.
pub fn topic_names(name: Option<&str>, prefix: &str, n: usize) -> Vec<String> {
    let base = name
        .map(str::to_string)
        .unwrap_or_else(|| format!("{prefix}-{}-{}", std::process::id(), now_us() % 1_000_000));
    match n {
        0 | 1 => vec![base],
        n => (0..n).map(|k| format!("{base}-{k}")).collect(),
    }
}

/// Counters the progress line reads while a scenario runs.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Lets the last deliveries and acks arrive after publishing stopped: waits until neither
/// moved for half a second, at most five seconds.
pub async fn settle(live: &Live) {
    let mut last = (u64::MAX, u64::MAX);
    for _ in 0..10 {
        let now = (
            live.delivered.load(Ordering::Relaxed),
            live.acked.load(Ordering::Relaxed),
        );
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rewrites one stderr line every second until `stop`: elapsed time and per-second rates.
pub fn progress(label: String, live: Arc<Live>, stop: CancellationToken) {
    tokio::spawn(async move {
        let start = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = [0u64; 4];
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = [
                live.sent.load(Ordering::Relaxed),
                live.acked.load(Ordering::Relaxed),
                live.delivered.load(Ordering::Relaxed),
                live.errors.load(Ordering::Relaxed),
            ];
            eprint!(
                "\r{label} {:>4.0}s: sent {}/s, acked {}/s, delivered {}/s, errors {}      ",
                start.elapsed().as_secs_f64(),
                now[0] - last[0],
                now[1] - last[1],
                now[2] - last[2],
                now[3],
            );
            last = now;
        }
        eprintln!();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_a_frame() {
        let data = stamped_data(1234567, "xx");
        let frame = format!(r#"{{"type":"message","topic":"t","offset":3,"data":{data}}}"#);
        assert_eq!(stamp(&frame), Some(1234567));
        assert_eq!(stamp(r#"{"type":"published","req":5}"#), None);
        assert_eq!(number_after(r#"{"req":42,"x":1}"#, "\"req\":"), Some(42));
    }

    #[test]
    fn window_bounds() {
        let w = Window {
            start_us: 10,
            end_us: 20,
        };
        assert!(w.contains(10) && w.contains(19) && !w.contains(20) && !w.contains(9));
        assert_eq!(topic_names(Some("t"), "p", 2), vec!["t-0", "t-1"]);
    }
}
