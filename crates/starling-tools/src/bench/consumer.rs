//! `bench consumer`: publishes a backlog, then drains it three ways: a stream subscriber
//! replaying from `after=0`; an acked consumer with --consumers connections, each acking
//! every message as it arrives; and a consumer with max_inflight 1 (one deliver+ack round
//! trip per message).

use super::args::ConsumerArgs;
use super::clients::{self, topic_names, Live, Window};
use super::publish::{self, Pace, Plan};
use super::report::{count, Report};
use super::BenchError;
use serde_json::json;
use starling_client::Subscribe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A drain that received nothing for this long is over.
const IDLE: Duration = Duration::from_secs(3);

pub async fn run(a: &ConsumerArgs) -> Result<Report, BenchError> {
    let url = a.url.trim_end_matches('/');
    let topic = topic_names(a.topic.as_deref(), "bench-consumer", 1).remove(0);
    prefill(url, &topic, a.size, a.messages).await?;

    let stream = drain_with(url, &topic, None, 1, a.messages).await?;
    let acked = drain_with(
        url,
        &topic,
        Some(("bench", a.inflight)),
        a.consumers,
        a.messages,
    )
    .await?;
    let one_n = a.messages.min(2000);
    let one = drain_with(url, &topic, Some(("bench-one", 1)), 1, one_n).await?;

    let mut r = Report::new(
        "consumer",
        json!({
            "url": url,
            "topic": topic,
            "messages": a.messages,
            "consumers": a.consumers,
            "inflight": a.inflight,
            "size": a.size,
        }),
    );
    let round_trip_ms = (one.1 > 0.0).then(|| 1000.0 / one.1);
    r.results = json!({
        "stream_deliveries_per_sec": stream.1,
        "stream_delivered": stream.0,
        "acked_deliveries_per_sec": acked.1,
        "acked_delivered": acked.0,
        "inflight1_deliveries_per_sec": one.1,
        "inflight1_round_trip_ms": round_trip_ms,
    });
    r.row(
        "stream replay deliveries/s",
        format!("{} ({} of {})", count(stream.1), stream.0, a.messages),
    );
    r.row(
        format!(
            "acked consumer deliveries/s ({} connections, max_inflight {})",
            a.consumers, a.inflight
        ),
        format!("{} ({} of {})", count(acked.1), acked.0, a.messages),
    );
    r.row(
        "max_inflight 1: deliveries/s, round trip",
        format!("{} ({:.3} ms)", count(one.1), round_trip_ms.unwrap_or(0.0)),
    );
    Ok(r)
}

/// Publishes `n` messages to `topic` over 16 pipelined WebSocket connections.
async fn prefill(url: &str, topic: &str, size: usize, n: u64) -> Result<(), BenchError> {
    let live = Arc::new(Live::default());
    let (stop_send, stop_all) = (CancellationToken::new(), CancellationToken::new());
    let plan = Plan {
        base: url.to_string(),
        topics: Arc::new(vec![topic.to_string()]),
        first: 0,
        size,
        pace: Pace::Window(16),
        window: Window::after(Duration::ZERO, Duration::ZERO),
    };
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(publish::ws(
                plan.clone(),
                live.clone(),
                stop_send.clone(),
                stop_all.clone(),
            ))
        })
        .collect();
    let start = Instant::now();
    while live.acked.load(Ordering::Relaxed) < n {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = live.acked.load(Ordering::Relaxed);
        eprint!(
            "\rbacklog published: {done} ({:.0}/s)   ",
            done as f64 / start.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    stop_send.cancel();
    stop_all.cancel();
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Setup(format!("publisher failed: {e}")))??;
    }
    Ok(())
}

/// Subscribes `conns` connections from offset 0 (as consumer `name` with its max_inflight,
/// acking every delivery, or as stream subscribers) and reads until `n` deliveries or
/// nothing came for a while: deliveries and deliveries/s.
async fn drain_with(
    url: &str,
    topic: &str,
    consumer: Option<(&str, usize)>,
    conns: usize,
    n: u64,
) -> Result<(u64, f64), BenchError> {
    let done = Arc::new(AtomicU64::new(0));
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns.max(1) {
        let mut ws = clients::connect(url).await?;
        let mut sub = Subscribe::topic(topic).after(0);
        if let Some((name, inflight)) = consumer {
            sub.consumer = Some(name.to_string());
            sub.max_inflight = Some(u32::try_from(inflight).unwrap_or(u32::MAX));
        }
        clients::subscribe(&mut ws, &sub).await?;
        socks.push(ws);
    }
    let start = Instant::now();
    let finished = CancellationToken::new();
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|mut ws| {
            let (done, topic, finished) = (done.clone(), topic.to_string(), finished.clone());
            let name = consumer.map(|c| c.0.to_string());
            tokio::spawn(async move {
                let mut last = Duration::ZERO;
                loop {
                    let m = tokio::select! {
                        _ = finished.cancelled() => break,
                        m = tokio::time::timeout(IDLE, ws.next_text()) => m,
                    };
                    let Ok(Ok(txt)) = m else {
                        break;
                    };
                    if !txt.starts_with("{\"type\":\"message\"") {
                        continue;
                    }
                    last = start.elapsed();
                    if done.fetch_add(1, Ordering::Relaxed) + 1 >= n {
                        finished.cancel();
                    }
                    let (Some(name), Some(offset)) =
                        (&name, clients::number_after(&txt, "\"offset\":"))
                    else {
                        continue;
                    };
                    if ws.ack(&topic, name, offset).await.is_err() {
                        break;
                    }
                }
                last
            })
        })
        .collect();
    // The time of the last delivery: a stalled drain's idle wait is left out.
    let mut took = Duration::ZERO;
    for t in tasks {
        if let Ok(d) = t.await {
            took = took.max(d);
        }
    }
    let got = done.load(Ordering::Relaxed).min(n);
    Ok((got, got as f64 / took.as_secs_f64().max(1e-6)))
}
