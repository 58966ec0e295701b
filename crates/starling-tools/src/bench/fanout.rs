//! `bench fanout`: subscribers (WS or SSE) on the sub URLs, WebSocket publishers on --url at
//! a fixed offered rate; deliveries/s, acked publishes/s and publish-to-deliver latency.

use super::args::{FanoutArgs, Load, Target, Transport};
use super::clients::{topic_names, Live, Window};
use super::publish::{self, Pace, Plan, Published};
use super::report::{count, histogram, latency_cell, latency_json, Report};
use super::subscribe::{self, Received};
use super::BenchError;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Subscriptions opened at a time while connecting.
const CONNECT_PARALLEL: usize = 32;

pub async fn run(a: &FanoutArgs) -> Result<Report, BenchError> {
    let l = &a.load;
    if a.target == Target::Nats && a.transport == Transport::Sse {
        return Err(BenchError::Setup("--target nats is WebSocket only".into()));
    }
    let url = a.url.trim_end_matches('/').to_string();
    let sub_urls: Vec<String> = match a.sub_urls.is_empty() {
        true => vec![url.clone()],
        false => a
            .sub_urls
            .iter()
            .map(|u| u.trim_end_matches('/').into())
            .collect(),
    };
    let topics = Arc::new(topic_names(l.topic.as_deref(), "bench-fanout", l.topics));
    let live = Arc::new(Live::default());
    let (stop_send, stop_all) = (CancellationToken::new(), CancellationToken::new());

    let connected = AtomicU64::new(0);
    let conns: Vec<subscribe::Conn> = futures_util::stream::iter(0..a.subscribers)
        .map(|i| {
            let (base, topic) = (&sub_urls[i % sub_urls.len()], &topics[i % topics.len()]);
            let connected = &connected;
            async move {
                let c = match a.target {
                    Target::Starling => subscribe::open(a.transport, base, topic).await?,
                    Target::Nats => {
                        let (ws, parser) = super::nats::open_sub(base, topic).await?;
                        subscribe::Conn::Nats(Box::new(ws), parser)
                    }
                };
                let n = connected.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(100) || n as usize == a.subscribers {
                    eprint!("\rsubscribers connected: {n}   ");
                }
                Ok::<_, BenchError>(c)
            }
        })
        .buffer_unordered(CONNECT_PARALLEL)
        .try_collect()
        .await?;
    if !conns.is_empty() {
        eprintln!();
    }

    let window = Window::after(l.warmup, l.duration);
    let readers: Vec<_> = conns
        .into_iter()
        .map(|c| subscribe::spawn(c, window, live.clone(), stop_all.clone()))
        .collect();
    let pace = Pace::of(l.rate, l.publishers, l.window);
    let publishers: Vec<_> = (0..l.publishers)
        .map(|p| {
            let plan = Plan::of(p, &url, &topics, l.size, pace, window);
            let (live, stop_send, stop_all) = (live.clone(), stop_send.clone(), stop_all.clone());
            let target = a.target;
            tokio::spawn(async move {
                match target {
                    Target::Starling => publish::ws(plan, live, stop_send, stop_all).await,
                    Target::Nats => {
                        let ack = super::nats::Ack::Pong;
                        super::nats::publish(plan, ack, live, stop_send, stop_all).await
                    }
                }
            })
        })
        .collect();
    let stop_progress = CancellationToken::new();
    super::clients::progress("fanout".into(), live.clone(), stop_progress.clone());
    tokio::time::sleep(l.warmup + l.duration).await;
    stop_send.cancel();
    super::clients::settle(&live).await;
    stop_all.cancel();
    stop_progress.cancel();

    let mut sent = Published::new(topics.len());
    for p in publishers {
        let p = p
            .await
            .map_err(|e| BenchError::Setup(format!("publisher failed: {e}")))??;
        sent.merge(&p);
    }
    let mut got = Received {
        delivered: 0,
        latency_us: histogram(),
    };
    for r in readers {
        if let Ok(r) = r.await {
            got.merge(&r);
        }
    }
    // Subscriber i listens to topic i % topics.
    let expected: u64 = (0..topics.len())
        .map(|t| {
            let subs = (0..a.subscribers).filter(|i| i % topics.len() == t).count();
            sent.sent[t] * subs as u64
        })
        .sum();
    Ok(report(a, l, &topics, window, &sent, &got, expected))
}

fn report(
    a: &FanoutArgs,
    l: &Load,
    topics: &[String],
    window: Window,
    sent: &Published,
    got: &Received,
    expected: u64,
) -> Report {
    let secs = window.secs();
    let sent_total: u64 = sent.sent.iter().sum();
    let mut r = Report::new(
        "fanout",
        json!({
            "target": a.target.name(),
            "url": a.url,
            "sub_urls": a.sub_urls,
            "subscribers": a.subscribers,
            "transport": match a.transport { Transport::Ws => "ws", Transport::Sse => "sse" },
            "publishers": l.publishers,
            "topics": topics.len(),
            "topic": topics.first(),
            "size": l.size,
            "rate": l.rate,
            "window": if l.rate == 0 { Some(l.window) } else { None },
            "duration_secs": l.duration.as_secs_f64(),
            "warmup_secs": l.warmup.as_secs_f64(),
        }),
    );
    let ratio = (expected > 0).then(|| got.delivered as f64 / expected as f64);
    r.results = json!({
        "deliveries_per_sec": got.delivered as f64 / secs,
        "delivered": got.delivered,
        "expected": expected,
        "delivered_ratio": ratio,
        "publishes_sent": sent_total,
        "publishes_per_sec": sent_total as f64 / secs,
        "publishes_acked_per_sec": sent.acked as f64 / secs,
        "publish_errors": sent.errors,
        "latency_ms": latency_json(&got.latency_us),
        "ack_latency_ms": latency_json(&sent.ack_us),
    });
    let offered = match l.rate {
        0 => format!("closed loop, {} in flight per publisher", l.window),
        r => format!("{} msg/s", count(r as f64)),
    };
    r.row("target", a.target.name());
    r.row("offered", offered);
    r.row(
        "subscribers",
        format!("{} over {} topic(s)", a.subscribers, topics.len()),
    );
    r.row("deliveries/s", count(got.delivered as f64 / secs));
    r.row(
        "delivered / expected",
        match ratio {
            Some(x) => format!("{} / {} ({:.4})", got.delivered, expected, x),
            None => format!("{} / (publishers elsewhere)", got.delivered),
        },
    );
    r.row("publishes sent/s", count(sent_total as f64 / secs));
    let acked = match a.target {
        Target::Starling => "publishes acked/s",
        Target::Nats => "publishes acked/s (PONG after each)",
    };
    r.row(
        acked,
        format!(
            "{} ({} errors)",
            count(sent.acked as f64 / secs),
            sent.errors
        ),
    );
    r.row("publish-to-deliver", latency_cell(&got.latency_us));
    r.row("publish-to-ack", latency_cell(&sent.ack_us));
    r
}
