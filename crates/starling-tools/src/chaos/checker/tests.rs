//! Hand-written histories, one per kind of violation (and per thing that must not be one).

use super::*;
use crate::chaos::history::{parse, FaultEnd};

const T: &str = "t1";

fn start(consumer: &str) -> Event {
    Event::Start {
        t_ms: 0,
        seed: 1,
        nodes: vec!["n1".into(), "n2".into(), "n3".into()],
        topics: vec![T.into()],
        consumer: consumer.into(),
        majority_faults: false,
    }
}

fn req(t_ms: u64, pid: u64, id: &str) -> Event {
    Event::PubReq {
        t_ms,
        pid,
        client: "p1".into(),
        node: "n1".into(),
        via: Transport::Http,
        topic: T.into(),
        id: id.into(),
    }
}

fn ok(t_ms: u64, pid: u64, id: &str, epoch: &str, offset: u64) -> Event {
    Event::PubOk {
        t_ms,
        pid,
        topic: T.into(),
        id: id.into(),
        epoch: epoch.into(),
        offset,
        duplicate: false,
    }
}

fn err(t_ms: u64, pid: u64, id: &str) -> Event {
    Event::PubErr {
        t_ms,
        pid,
        topic: T.into(),
        id: id.into(),
        error: "unavailable".into(),
    }
}

fn subscribed(sub: &str, epoch: &str, recovered: bool, first: u64) -> Event {
    Event::Subscribed {
        t_ms: 1,
        sub: sub.into(),
        node: "n1".into(),
        via: Transport::Ws,
        topic: T.into(),
        epoch: epoch.into(),
        recovered,
        first,
    }
}

fn reset(sub: &str, epoch: &str, first: u64) -> Event {
    Event::Reset {
        t_ms: 1,
        sub: sub.into(),
        topic: T.into(),
        epoch: epoch.into(),
        first,
    }
}

fn deliver(sub: &str, epoch: &str, offset: u64, id: &str) -> Event {
    Event::Deliver {
        t_ms: 1,
        sub: sub.into(),
        via: Transport::Ws,
        topic: T.into(),
        epoch: epoch.into(),
        offset,
        id: id.into(),
    }
}

fn consumed(epoch: &str, offset: u64, id: &str, attempt: u32) -> Event {
    Event::ConsumerDeliver {
        t_ms: 1,
        sub: "c1".into(),
        topic: T.into(),
        epoch: epoch.into(),
        offset,
        id: id.into(),
        attempt,
    }
}

fn fault(t_ms: u64, kind: FaultKind, node: &str) -> Event {
    Event::Fault {
        t_ms,
        kind,
        nodes: vec![node.into()],
    }
}

fn fault_end(t_ms: u64, end: FaultEnd, node: &str) -> Event {
    Event::FaultEnd {
        t_ms,
        end,
        nodes: vec![node.into()],
    }
}

fn converged(t_ms: u64, ok: bool) -> Event {
    Event::Converged {
        t_ms,
        ok,
        detail: if ok { String::new() } else { "n2 down".into() },
    }
}

fn final_log(epoch: &str, offset: u64, id: &str) -> Event {
    Event::FinalLog {
        topic: T.into(),
        epoch: epoch.into(),
        offset,
        id: id.into(),
    }
}

fn final_meta(epoch: &str, first: u64, head: u64) -> Event {
    Event::FinalMeta {
        topic: T.into(),
        epoch: epoch.into(),
        first,
        head,
    }
}

/// Publishes m1..m3 in epoch E, one WS subscriber and the consumer group get them all, n2 is
/// killed and restarted, the cluster heals and converges, the final log has all three.
fn clean() -> Vec<Event> {
    vec![
        start("c"),
        subscribed("s1", "E", true, 1),
        req(10, 1, "m1"),
        ok(20, 1, "m1", "E", 1),
        deliver("s1", "E", 1, "m1"),
        consumed("E", 1, "m1", 1),
        fault(100, FaultKind::Kill, "n2"),
        req(110, 2, "m2"),
        ok(120, 2, "m2", "E", 2),
        deliver("s1", "E", 2, "m2"),
        consumed("E", 2, "m2", 1),
        fault_end(200, FaultEnd::Restart, "n2"),
        req(210, 3, "m3"),
        ok(220, 3, "m3", "E", 3),
        deliver("s1", "E", 3, "m3"),
        consumed("E", 3, "m3", 1),
        Event::End { t_ms: 300 },
        Event::Healed { t_ms: 400 },
        converged(900, true),
        final_meta("E", 1, 3),
        final_log("E", 1, "m1"),
        final_log("E", 2, "m2"),
        final_log("E", 3, "m3"),
    ]
}

fn run(events: &[Event]) -> Report {
    check(
        events,
        &Bounds {
            convergence_ms: 30_000,
            majority_faults: false,
        },
    )
}

/// Checks as a run whose scenario allowed majority faults.
fn run_with_majority_faults(events: &[Event]) -> Report {
    check(
        events,
        &Bounds {
            convergence_ms: 30_000,
            majority_faults: true,
        },
    )
}

fn result<'a>(r: &'a Report, name: &str) -> &'a CheckResult {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

/// Asserts that only `name` failed, `count` times, and returns its examples.
fn only_failure(r: &Report, name: &str, count: u64) -> Vec<String> {
    for c in &r.checks {
        let want = if c.name == name { count } else { 0 };
        assert_eq!(c.count, want, "{}: {:?}", c.name, c.examples);
    }
    assert!(!r.passed());
    result(r, name).examples.clone()
}

/// Replaces the events at `at..at + n` of the clean history.
fn clean_with(at: usize, n: usize, with: Vec<Event>) -> Vec<Event> {
    let mut evs = clean();
    evs.splice(at..at + n, with);
    evs
}

#[test]
fn clean_history_passes() {
    let r = run(&clean());
    assert!(r.passed(), "{}", r.table());
    assert!(!result(&r, "consumer loss").skipped);
    assert_eq!(r.summary.events, 23);
    assert_eq!(r.summary.publishes_sent, 3);
    assert_eq!(r.summary.publishes_acked, 3);
    assert_eq!(r.summary.deliveries_by_transport.get("ws"), Some(&3));
    assert_eq!(r.summary.consumer_deliveries, 3);
    assert_eq!(r.summary.faults_by_kind.get("kill"), Some(&1));
    assert_eq!(r.summary.duration_ms, 900);
    let table = r.table();
    assert!(table.contains("silent loss"));
    assert!(!table.contains("FAIL"));
}

#[test]
fn hole_without_reset_is_silent_loss() {
    // s1 gets 1 and then 3: offset 2 vanished silently.
    let evs = clean_with(9, 1, vec![]);
    let r = run(&evs);
    let ex = only_failure(&r, "silent loss", 1);
    assert_eq!(
        ex,
        ["sub s1 (ws) topic t1 epoch E: offsets 2..=2 missing, no reset"]
    );
    assert_eq!(r.info.missing_offsets, 1);
    let table = r.table();
    assert!(table.contains("FAIL"));
    assert!(table.contains("offsets 2..=2 missing"));
}

#[test]
fn delivery_before_any_subscription_starts_from_zero() {
    let r = run(&[deliver("s9", "E", 4, "x")]);
    let ex = &result(&r, "silent loss").examples;
    assert_eq!(
        ex,
        &["sub s9 (ws) topic t1 epoch E: offsets 1..=3 missing, no reset"]
    );
    assert_eq!(r.info.missing_offsets, 3);
}

#[test]
fn hole_covered_by_reset_passes() {
    let evs = clean_with(9, 1, vec![reset("s1", "E", 3)]);
    let r = run(&evs);
    assert!(r.passed(), "{}", r.table());
    assert_eq!(r.info.missing_offsets, 0);
}

#[test]
fn unannounced_epoch_change_is_silent_loss() {
    // A resume that claims recovery in another epoch, then a delivery in a third epoch.
    let evs = clean_with(
        14,
        1,
        vec![
            subscribed("s1", "F", true, 1),
            deliver("s1", "F", 1, "f1"),
            deliver("s1", "G", 1, "g1"),
        ],
    );
    let r = run(&evs);
    let ex = only_failure(&r, "silent loss", 2);
    assert_eq!(
        ex,
        [
            "sub s1 (ws) topic t1 epoch E: resumed in epoch F with recovered:true, no reset",
            "sub s1 (ws) topic t1 epoch F: offset 1 delivered in epoch G, no reset",
        ]
    );
}

#[test]
fn epoch_change_announced_by_subscribed_passes() {
    let evs = clean_with(
        14,
        1,
        vec![
            subscribed("s1", "F", false, 1),
            deliver("s1", "F", 1, "f1"),
            deliver("s1", "F", 2, "f2"),
        ],
    );
    let r = run(&evs);
    assert!(r.passed(), "{}", r.table());
}

#[test]
fn order_violations_duplicate_and_backwards() {
    let evs = clean_with(
        14,
        1,
        vec![
            deliver("s1", "E", 3, "m3"),
            deliver("s1", "E", 3, "m3"),
            deliver("s1", "E", 1, "m1"),
        ],
    );
    let r = run(&evs);
    let ex = only_failure(&r, "order", 2);
    assert_eq!(
        ex,
        [
            "sub s1 (ws) topic t1 epoch E: offset 3 delivered after 3",
            "sub s1 (ws) topic t1 epoch E: offset 1 delivered after 3",
        ]
    );
}

#[test]
fn divergence_between_pub_ok_and_deliver() {
    let evs = clean_with(9, 1, vec![deliver("s1", "E", 2, "other")]);
    let r = run(&evs);
    let ex = only_failure(&r, "divergence", 1);
    assert_eq!(
        ex,
        ["topic t1 epoch E offset 2: id m2 (pub_ok pid 2) vs id other (deliver to s1)"]
    );
}

#[test]
fn divergence_between_two_subscribers() {
    let evs = vec![
        subscribed("s1", "E", false, 5),
        subscribed("s2", "E", false, 5),
        deliver("s1", "E", 5, "a"),
        deliver("s2", "E", 5, "b"),
        deliver("s2", "E", 5, "c"),
    ];
    let r = run(&evs);
    assert_eq!(
        result(&r, "divergence").examples,
        ["topic t1 epoch E offset 5: id a (deliver to s1) vs id b (deliver to s2)"]
    );
    assert_eq!(result(&r, "order").count, 1);
}

#[test]
fn acked_publish_missing_from_final_log() {
    let mut evs = clean();
    evs.retain(|e| *e != final_log("E", 2, "m2"));
    let r = run(&evs);
    let ex = only_failure(&r, "acked missing from final log", 1);
    assert_eq!(
        ex,
        ["topic t1 epoch E offset 2: acked id m2 (pid 2) not in final log"]
    );
}

#[test]
fn topic_without_final_meta_fails() {
    let mut evs = clean();
    evs.retain(|e| !matches!(e, Event::FinalMeta { .. } | Event::FinalLog { .. }));
    let r = run(&evs);
    let ex = only_failure(&r, "acked missing from final log", 1);
    assert_eq!(ex, ["topic t1: 3 acked publishes but no final meta"]);
}

/// m0 was acked in epoch D, whose loss was announced; the final epoch is E.
fn acked_in_replaced_epoch() -> Vec<Event> {
    let mut evs = clean();
    evs.insert(2, req(5, 9, "m0"));
    evs.insert(3, ok(6, 9, "m0", "D", 1));
    evs
}

#[test]
fn acked_in_lost_epoch_fails_without_majority_faults() {
    let r = run(&acked_in_replaced_epoch());
    let ex = only_failure(&r, "acked in lost epochs", 1);
    assert_eq!(
        ex,
        [
            "topic t1 epoch D offset 1: acked id m0 (pid 9) in an epoch the topic lost \
          (final epoch E) without majority faults"
        ]
    );
    assert_eq!(r.info.acked_in_lost_epochs, 1);
    assert!(
        r.table().contains("majority faults: not allowed"),
        "{}",
        r.table()
    );
    assert!(r.table().contains("acked in lost epochs"), "{}", r.table());
}

#[test]
fn acked_in_lost_epoch_is_informational_with_majority_faults() {
    let r = run_with_majority_faults(&acked_in_replaced_epoch());
    assert!(r.passed(), "{}", r.table());
    assert!(result(&r, "acked in lost epochs").skipped);
    assert_eq!(r.info.acked_in_lost_epochs, 1);
    assert!(r.majority_faults);
    assert!(
        r.table().contains("majority faults: allowed"),
        "{}",
        r.table()
    );
    let json = serde_json::to_value(&r).expect("report serializes");
    assert_eq!(json["majority_faults"], true);
}

#[test]
fn a_history_records_whether_majority_faults_were_allowed() {
    let line = |extra: &str| {
        format!(
            r#"{{"ev":"start","t_ms":0,"seed":7,"nodes":["n1"],"topics":["t1"],"consumer":""{extra}}}"#
        )
    };
    let allowed = parse(&line(r#","majority_faults":true"#)).expect("valid");
    assert!(majority_faults(&allowed));
    // Histories from before the key existed parse, as not allowed.
    assert!(!majority_faults(&parse(&line("")).expect("valid")));
    assert!(!majority_faults(&clean()));
}

#[test]
fn trimmed_by_retention_is_informational() {
    let mut evs = clean();
    evs.retain(|e| {
        !matches!(
            e,
            Event::FinalMeta { .. } | Event::FinalLog { offset: 1 | 2, .. }
        )
    });
    evs.push(final_meta("E", 3, 3));
    let r = run(&evs);
    assert!(r.passed(), "{}", r.table());
    assert_eq!(r.info.trimmed_by_retention, 2);
}

#[test]
fn consumer_never_got_an_acked_publish() {
    let evs = clean_with(10, 1, vec![]);
    let r = run(&evs);
    let ex = only_failure(&r, "consumer loss", 1);
    assert_eq!(
        ex,
        ["topic t1 epoch E offset 2: acked id m2 (pid 2) never reached consumer group"]
    );
}

#[test]
fn consumer_duplicates_are_counted_not_failed() {
    let mut evs = clean();
    evs.insert(11, consumed("E", 1, "m1", 2));
    let r = run(&evs);
    assert!(r.passed(), "{}", r.table());
    assert_eq!(r.info.consumer_duplicates, 1);
}

#[test]
fn consumer_check_skipped_without_group() {
    let mut evs = clean();
    evs[0] = start("");
    evs.retain(|e| !matches!(e, Event::ConsumerDeliver { .. }));
    let r = run(&evs);
    assert!(r.passed());
    assert!(result(&r, "consumer loss").skipped);
    assert!(r.table().contains("SKIP"));
}

#[test]
fn availability_windows_are_attributed_to_the_fault_at_their_start() {
    let evs = vec![
        req(950, 1, "a"),
        ok(1_000, 1, "a", "E", 1),
        fault(2_000, FaultKind::Kill, "n2"),
        req(2_100, 10, "b"),
        req(2_050, 11, "c"),
        err(4_100, 10, "b"),
        err(5_000, 11, "c"),
        fault_end(6_000, FaultEnd::Restart, "n2"),
        req(7_000, 12, "d"),
        ok(7_100, 12, "d", "E", 2),
        // Kill window: 2_050..7_100. The partition ends 2 s before the next outage starts,
        // whose timeout is reported only after the topic recovered.
        fault(10_000, FaultKind::Partition, "n1"),
        fault_end(11_000, FaultEnd::Heal, "n1"),
        req(13_000, 13, "e"),
        req(14_000, 14, "f"),
        ok(14_500, 14, "f", "E", 3),
        err(15_500, 13, "e"),
        // Long after every fault: none, 400 ms; then one still open at End: 1_000 ms.
        req(30_000, 15, "g"),
        err(30_100, 15, "g"),
        req(30_300, 16, "h"),
        ok(30_400, 16, "h", "E", 4),
        req(40_000, 17, "i"),
        err(40_500, 17, "i"),
        // Unanswered: ignored.
        req(40_600, 19, "lost"),
        Event::End { t_ms: 41_000 },
        // Probes after End do not count.
        req(41_100, 18, "probe"),
        err(45_000, 18, "probe"),
    ];
    let r = run(&evs);
    let rows: Vec<(&str, u64, u64, &str, u64)> = r
        .availability
        .iter()
        .map(|a| {
            (
                a.kind,
                a.windows,
                a.longest_ms,
                a.longest_topic.as_str(),
                a.longest_at_ms,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("kill", 1, 5_050, T, 2_050),
            ("partition", 1, 1_500, T, 13_000),
            ("none", 2, 1_000, T, 40_000),
        ]
    );
    assert!(r.table().contains("t1 t=2050ms"));
}

#[test]
fn convergence_missing_too_slow_and_ok() {
    let bounds = Bounds {
        convergence_ms: 1_000,
        majority_faults: false,
    };
    let healed = Event::Healed { t_ms: 400 };
    let verdict = |evs: &[Event]| {
        let r = check(evs, &bounds);
        result(&r, "convergence").examples.clone()
    };
    assert_eq!(verdict(&[]), ["no healed event"]);
    assert_eq!(
        verdict(std::slice::from_ref(&healed)),
        ["no converged event"]
    );
    assert_eq!(
        verdict(&[healed.clone(), converged(900, false)]),
        ["not converged at t=900ms: n2 down"]
    );
    assert_eq!(
        verdict(&[healed.clone(), converged(1_500, true)]),
        ["converged 1100 ms after healing, bound 1000 ms"]
    );
    assert!(verdict(&[healed, converged(1_400, true)]).is_empty());
}

#[test]
fn parses_and_checks_a_jsonl_history() {
    let text = r#"
{"ev":"start","t_ms":0,"seed":7,"nodes":["n1","n2"],"topics":["t1"],"consumer":""}
{"ev":"subscribed","t_ms":1,"sub":"s1","node":"n2","via":"sse","topic":"t1","epoch":"E","recovered":true,"first":1}
{"ev":"pub_req","t_ms":2,"pid":1,"client":"p1","node":"n1","via":"ws","topic":"t1","id":"m1"}
{"ev":"pub_ok","t_ms":3,"pid":1,"topic":"t1","id":"m1","epoch":"E","offset":1,"duplicate":false}
{"ev":"deliver","t_ms":4,"sub":"s1","via":"sse","topic":"t1","epoch":"E","offset":1,"id":"m1"}
{"ev":"deliver","t_ms":5,"sub":"s1","via":"sse","topic":"t1","epoch":"E","offset":3,"id":"m3"}
{"ev":"end","t_ms":6}
{"ev":"healed","t_ms":7}
{"ev":"converged","t_ms":8,"ok":true,"detail":""}
{"ev":"final_meta","topic":"t1","epoch":"E","first":1,"head":3}
{"ev":"final_log","topic":"t1","epoch":"E","offset":1,"id":"m1"}
"#;
    let events = parse(text).expect("valid history");
    let r = run(&events);
    let ex = only_failure(&r, "silent loss", 1);
    assert_eq!(
        ex,
        ["sub s1 (sse) topic t1 epoch E: offsets 2..=2 missing, no reset"]
    );
    assert!(result(&r, "consumer loss").skipped);
    assert_eq!(r.summary.deliveries_by_transport.get("sse"), Some(&2));
    let json = serde_json::to_value(&r).expect("report serializes");
    assert_eq!(json["checks"][0]["name"], "silent loss");
}
