//! `bench durable`: acked publishes/s and ack latency for each fsync level, each on a node
//! of its own (or once on --url).

use super::args::{DurableArgs, Load, Target, Via};
use super::clients::{progress, settle, topic_names, Live, Window};
use super::publish::{self, Pace, Plan, Published};
use super::report::{count, latency_cell, latency_json, Report};
use super::spawn::OwnNode;
use super::BenchError;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(a: &DurableArgs) -> Result<Report, BenchError> {
    let l = &a.load;
    let nats_level = format!("jetstream-file-r{}", a.replicas);
    let levels: Vec<&str> = match (&a.url, a.target) {
        (Some(_), Target::Nats) => vec![nats_level.as_str()],
        (Some(_), Target::Starling) => vec![a.fsync_label.as_str()],
        (None, Target::Nats) => {
            return Err(BenchError::Setup(
                "--target nats needs --url ws://HOST:PORT".into(),
            ))
        }
        (None, Target::Starling) => a.levels.iter().map(|f| f.name()).collect(),
    };
    if a.target == Target::Nats && a.via == Via::Http {
        return Err(BenchError::Setup("--target nats is WebSocket only".into()));
    }
    let mut r = Report::new(
        "durable",
        json!({
            "target": a.target.name(),
            "url": a.url,
            "levels": levels,
            "replicas": (a.target == Target::Nats).then_some(a.replicas),
            "via": match a.via { Via::Ws => "ws", Via::Http => "http" },
            "publishers": l.publishers,
            "topics": l.topics,
            "size": l.size,
            "rate": l.rate,
            "window": if l.rate == 0 && a.via == Via::Ws { Some(l.window) } else { None },
            "duration_secs": l.duration.as_secs_f64(),
            "warmup_secs": l.warmup.as_secs_f64(),
        }),
    );
    let mut results = serde_json::Map::new();
    for level in levels {
        let (p, secs) = match &a.url {
            Some(url) if a.target == Target::Nats => {
                let url = url.trim_end_matches('/');
                super::nats::create_stream(url, "BENCH", a.replicas).await?;
                eprintln!("JetStream stream BENCH created ({} replicas)", a.replicas);
                measure(url, l, a.via, level, a.target).await?
            }
            Some(url) => measure(url.trim_end_matches('/'), l, a.via, level, a.target).await?,
            None => {
                let node =
                    OwnNode::start(level, &format!("[storage]\nfsync = \"{level}\"\n")).await?;
                eprintln!("fsync = {level}: node started on {}", node.url);
                let m = measure(&node.url, l, a.via, level, a.target).await;
                node.stop().await;
                m?
            }
        };
        let sent: u64 = p.sent.iter().sum();
        results.insert(
            level.to_string(),
            json!({
                "publishes_sent": sent,
                "acked": p.acked,
                "acked_per_sec": p.acked as f64 / secs,
                "errors": p.errors,
                "ack_latency_ms": latency_json(&p.ack_us),
            }),
        );
        r.row(
            format!("fsync = {level}: acked publishes/s"),
            format!("{} ({} errors)", count(p.acked as f64 / secs), p.errors),
        );
        r.row(
            format!("fsync = {level}: ack latency"),
            latency_cell(&p.ack_us),
        );
    }
    r.results = json!({ "levels": results });
    Ok(r)
}

/// Publishes to `url` for the warm-up and the window; what the window saw and its length.
async fn measure(
    url: &str,
    l: &Load,
    via: Via,
    level: &str,
    target: Target,
) -> Result<(Published, f64), BenchError> {
    let mut topics = topic_names(l.topic.as_deref(), "bench-durable", l.topics);
    if target == Target::Nats {
        topics = topics
            .iter()
            .map(|t| super::nats::durable_subject(t))
            .collect();
    }
    let topics = Arc::new(topics);
    let live = Arc::new(Live::default());
    let (stop_send, stop_all) = (CancellationToken::new(), CancellationToken::new());
    let window = Window::after(l.warmup, l.duration);
    let pace = Pace::of(l.rate, l.publishers, l.window);
    let publishers: Vec<_> = (0..l.publishers)
        .map(|p| {
            let plan = Plan::of(p, url, &topics, l.size, pace, window);
            let (live, stop_send, stop_all) = (live.clone(), stop_send.clone(), stop_all.clone());
            tokio::spawn(async move {
                match (target, via) {
                    (Target::Nats, _) => {
                        let ack = super::nats::Ack::JetStream;
                        super::nats::publish(plan, ack, live, stop_send, stop_all).await
                    }
                    (_, Via::Ws) => publish::ws(plan, live, stop_send, stop_all).await,
                    (_, Via::Http) => Ok(publish::http(plan, live, stop_send).await),
                }
            })
        })
        .collect();
    let stop_progress = CancellationToken::new();
    progress(
        format!("fsync = {level}"),
        live.clone(),
        stop_progress.clone(),
    );
    tokio::time::sleep(l.warmup + l.duration).await;
    stop_send.cancel();
    settle(&live).await;
    stop_all.cancel();
    stop_progress.cancel();
    let mut total = Published::new(topics.len());
    for p in publishers {
        let p = p
            .await
            .map_err(|e| BenchError::Setup(format!("publisher failed: {e}")))??;
        total.merge(&p);
    }
    Ok((total, window.secs()))
}
