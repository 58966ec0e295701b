//! `bench failover`: a publish (each with its own id) on a fixed schedule over HTTP; every
//! window in which publishes failed or the epoch changed is reported as the time between
//! the last publish accepted before it and the first accepted after it. Kill or hang the
//! topic's owner meanwhile.

use super::args::FailoverArgs;
use super::clients::topic_names;
use super::report::Report;
use super::BenchError;
use serde_json::json;
use starling_client::Client;
use std::time::{Duration, Instant};

pub async fn run(a: &FailoverArgs) -> Result<Report, BenchError> {
    let topic = topic_names(a.topic.as_deref(), "bench-failover", 1).remove(0);
    let client = Client::new(&a.url).timeout(Duration::from_secs(5));
    eprintln!(
        "publishing to {topic} every {:?} for {:?}: kill the owner now",
        a.interval, a.duration
    );
    let end = Instant::now() + a.duration;
    let mut tick = tokio::time::interval(a.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_ok, mut epoch, mut failed) = (Instant::now(), String::new(), 0u32);
    let (mut accepted, mut failures) = (0u64, 0u64);
    let mut stalls = Vec::new();
    let mut k = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        k += 1;
        let id = format!("f-{}-{k}", std::process::id());
        let Ok(v) = client.publish(&topic, &k.into(), Some(&id)).await else {
            failed += 1;
            failures += 1;
            continue;
        };
        accepted += 1;
        let e = v.epoch;
        if !epoch.is_empty() && (failed > 0 || e != epoch) {
            let stall = json!({
                "without_accepted_publish_ms": last_ok.elapsed().as_secs_f64() * 1000.0,
                "failed": failed,
                "epoch_before": epoch,
                "epoch_after": e,
                "offset": v.offset,
            });
            eprintln!("\nstall: {stall}");
            stalls.push(stall);
        }
        (last_ok, epoch, failed) = (Instant::now(), e, 0);
        if k.is_multiple_of(200) {
            eprint!("\rpublishes accepted {accepted}, failed {failures}   ");
        }
    }
    eprintln!();
    let mut r = Report::new(
        "failover",
        json!({
            "url": client.base(),
            "topic": topic,
            "interval_ms": a.interval.as_secs_f64() * 1000.0,
            "duration_secs": a.duration.as_secs_f64(),
        }),
    );
    r.row("publishes accepted", accepted.to_string());
    r.row("publishes failed", failures.to_string());
    for (i, s) in stalls.iter().enumerate() {
        r.row(
            format!("stall {}", i + 1),
            format!(
                "{:.0} ms without an accepted publish ({} failed), epoch {} -> {}",
                s["without_accepted_publish_ms"].as_f64().unwrap_or(0.0),
                s["failed"],
                s["epoch_before"].as_str().unwrap_or_default(),
                s["epoch_after"].as_str().unwrap_or_default(),
            ),
        );
    }
    r.results = json!({"accepted": accepted, "failed": failures, "stalls": stalls});
    Ok(r)
}
