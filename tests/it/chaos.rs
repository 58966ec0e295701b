//! `starling chaos`: the CI scenario on a cluster of its own (every kind of fault, every
//! transport, a consumer group; the checker must pass; partitions in network namespaces
//! when run as root), a short partition through the fault injector, and `--check` of
//! hand-written histories (a hole fails, a clean one passes).

use starling_tools::chaos::history::{self, Event, FaultKind, Transport};
use starling_tools::chaos::scenario::Scenario;
use starling_tools::chaos::schedule::{self, Op};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const CI_SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chaos/ci.toml");
const SEED: u64 = 7;
/// A short run with one partition, for `--net injector`.
const SHORT_PARTITION: &str = r#"
nodes = 3
duration_s = 12
topics = 2

[workload]
http_publishers = 1
ws_publishers = 1
publish_rate = 10

[[faults.step]]
at_s = 3
action = "partition"
nodes = ["n3"]

[[faults.step]]
at_s = 8
action = "heal"
"#;

fn chaos(args: &[&str], out: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_starling"));
    command.arg("chaos").args(args).env("RUST_LOG", "warn");
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    command.output().expect("run starling chaos")
}

/// The `network` the run recorded in `report.json`.
fn network(dir: &Path) -> String {
    let json = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json parses");
    report["network"].as_str().expect("a network").to_string()
}

fn partitions(dir: &Path) -> usize {
    let jsonl = std::fs::read_to_string(dir.join("history.jsonl")).expect("history");
    let events = history::parse(&jsonl).expect("history parses");
    let partition = |e: &Event| {
        matches!(
            e,
            Event::Fault {
                kind: FaultKind::Partition,
                ..
            }
        )
    };
    events.iter().filter(|e| partition(e)).count()
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_ci_scenario_passes_with_every_fault_kind_and_transport() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = SEED.to_string();
    let out = chaos(&[CI_SCENARIO, "--seed", &seed], Some(dir.path()));
    assert!(out.status.success(), "chaos run failed:\n{}", text(&out));
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let want = match unsafe { libc::geteuid() } {
        0 => "netns",
        _ => "injector",
    };
    assert_eq!(network(dir.path()), want, "{}", text(&out));
    let printed = match want {
        "netns" => "network: netns (each node in its own namespace)",
        _ => "network: fault injector",
    };
    assert!(text(&out).contains(printed), "{}", text(&out));

    let scenario = Scenario::parse(&std::fs::read_to_string(CI_SCENARIO).expect("scenario"))
        .expect("the CI scenario parses");
    let scheduled: BTreeSet<String> = schedule::build(&scenario, SEED)
        .iter()
        .filter_map(|s| match s.op {
            Op::Kill(_) => Some(FaultKind::Kill),
            Op::Stop(_) => Some(FaultKind::Stop),
            Op::Term(_) => Some(FaultKind::Term),
            Op::Partition(_) => Some(FaultKind::Partition),
            _ => None,
        })
        .map(|k| format!("{k:?}"))
        .collect();
    assert_eq!(scheduled.len(), 4, "the CI scenario schedules every kind");

    let jsonl = std::fs::read_to_string(dir.path().join("history.jsonl")).expect("history");
    let events = history::parse(&jsonl).expect("history parses");
    let injected: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Fault { kind, .. } => Some(format!("{kind:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        injected, scheduled,
        "every scheduled kind of fault was injected"
    );
    for via in [Transport::Ws, Transport::Sse, Transport::Poll] {
        let n = events
            .iter()
            .filter(|e| matches!(e, Event::Deliver { via: v, .. } if *v == via))
            .count();
        assert!(n > 0, "no delivery over {via:?}");
    }
    let consumed = events
        .iter()
        .filter(|e| matches!(e, Event::ConsumerDeliver { .. }))
        .count();
    assert!(consumed > 0, "no consumer delivery");
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).expect("report.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(dir.path().join("report.json").exists());
}

#[test]
fn a_partition_through_the_fault_injector_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("partition.toml");
    std::fs::write(&scenario, SHORT_PARTITION).expect("write the scenario");
    let out_dir = dir.path().join("out");
    let args = [scenario.to_str().expect("utf-8 path"), "--seed", "3"];
    let out = chaos(
        &[&args[..], &["--net", "injector"]].concat(),
        Some(&out_dir),
    );
    assert!(out.status.success(), "chaos run failed:\n{}", text(&out));
    assert_eq!(network(&out_dir), "injector");
    assert!(text(&out).contains("network: fault injector"));
    assert_eq!(partitions(&out_dir), 1, "{}", text(&out));
}

/// Three messages published and acked, delivered to a WS subscriber and the consumer group;
/// the subscriber sees `seen`.
fn history_with(seen: &[u64]) -> String {
    let mut lines = vec![
        r#"{"ev":"start","t_ms":0,"seed":1,"nodes":["n1"],"topics":["t0"],"consumer":"chaos"}"#
            .to_string(),
        r#"{"ev":"subscribed","t_ms":1,"sub":"ws-t0","node":"n1","via":"ws","topic":"t0","epoch":"e1","recovered":true,"first":1}"#.to_string(),
    ];
    for o in 1..=3u64 {
        lines.push(format!(
            r#"{{"ev":"pub_req","t_ms":{o}0,"pid":{o},"client":"hp0","node":"n1","via":"http","topic":"t0","id":"hp0-{o}"}}"#
        ));
        lines.push(format!(
            r#"{{"ev":"pub_ok","t_ms":{o}1,"pid":{o},"topic":"t0","id":"hp0-{o}","epoch":"e1","offset":{o},"duplicate":false}}"#
        ));
        lines.push(format!(
            r#"{{"ev":"consumer_deliver","t_ms":{o}2,"sub":"cg-t0-0","topic":"t0","epoch":"e1","offset":{o},"id":"hp0-{o}","attempt":1}}"#
        ));
    }
    for o in seen {
        lines.push(format!(
            r#"{{"ev":"deliver","t_ms":5{o},"sub":"ws-t0","via":"ws","topic":"t0","epoch":"e1","offset":{o},"id":"hp0-{o}"}}"#
        ));
    }
    lines.push(r#"{"ev":"end","t_ms":100}"#.into());
    lines.push(r#"{"ev":"healed","t_ms":101}"#.into());
    lines.push(r#"{"ev":"converged","t_ms":102,"ok":true,"detail":"ok"}"#.into());
    lines.push(r#"{"ev":"final_meta","topic":"t0","epoch":"e1","first":1,"head":3}"#.into());
    for o in 1..=3u64 {
        lines.push(format!(
            r#"{{"ev":"final_log","topic":"t0","epoch":"e1","offset":{o},"id":"hp0-{o}"}}"#
        ));
    }
    lines.join("\n") + "\n"
}

#[test]
fn check_fails_a_history_with_a_hole_and_passes_a_clean_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (holed, clean) = (
        dir.path().join("hole.jsonl"),
        dir.path().join("clean.jsonl"),
    );
    std::fs::write(&holed, history_with(&[1, 3])).expect("write");
    std::fs::write(&clean, history_with(&[1, 2, 3])).expect("write");

    let out = chaos(&["--check", holed.to_str().expect("utf-8 path")], None);
    assert!(!out.status.success(), "a hole passed:\n{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let named = table
        .lines()
        .any(|l| l.starts_with("silent loss") && l.ends_with("fail"));
    assert!(named, "the table does not name the violation:\n{table}");
    assert!(table.contains("offsets 2..=2 missing"), "{table}");

    let out = chaos(&["--check", clean.to_str().expect("utf-8 path")], None);
    assert!(
        out.status.success(),
        "a clean history failed:\n{}",
        text(&out)
    );
}
