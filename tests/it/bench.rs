//! `starling bench`: tiny scenarios against a real node report sane, nonzero figures.

use crate::harness::*;
use serde_json::Value;
use std::process::Command;

/// Runs `starling bench <args> --json FILE`, asserts it succeeded, returns the record.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run starling bench");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON record");
    serde_json::from_str(&text).expect("valid JSON")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn fanout_reports_deliveries_and_ordered_latency() {
    let node = TestNode::start("");
    let url = node.http();
    let rec = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "3",
        "--publishers",
        "1",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ]);
    assert_eq!(rec["scenario"], "fanout");
    assert!(rec["machine"]["cores"].as_u64() > Some(0));
    let r = &rec["results"];
    assert!(num(r, "deliveries_per_sec") > 0.0, "{r}");
    assert!(num(r, "delivered") > 0.0, "{r}");
    assert!(num(r, "publishes_acked_per_sec") > 0.0, "{r}");
    let lat = &r["latency_ms"];
    let (p50, p99, max) = (num(lat, "p50"), num(lat, "p99"), num(lat, "max"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{lat}");
}

#[test]
fn consumer_reports_acked_deliveries() {
    let node = TestNode::start("");
    let url = node.http();
    let rec = bench(&[
        "consumer",
        "--url",
        &url,
        "--messages",
        "300",
        "--consumers",
        "2",
    ]);
    let r = &rec["results"];
    assert_eq!(r["stream_delivered"], 300, "{r}");
    assert!(num(r, "stream_deliveries_per_sec") > 0.0, "{r}");
    assert!(num(r, "acked_deliveries_per_sec") > 0.0, "{r}");
    assert!(num(r, "inflight1_deliveries_per_sec") > 0.0, "{r}");
}
