//! The restart policy at work: a topic that fails on every start backs off and then stays
//! stopped, refusing as unavailable, while the node serves its other topics.

use super::support::*;
use crate::storage::TopicLog;
use crate::topic::error::TopicError;
use crate::topic::supervisor::TopicSupervisor;
use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_failing_on_every_start_backs_off_then_stays_stopped() {
    let h = Harness::start().await;
    let bad = topic("corrupt");
    // A consumer record that does not decode: every start of the topic fails loading it.
    h.log
        .save_consumer(bad.as_str(), "g", b"not a consumer record")
        .expect("save");
    let refused = h.topics.publish(&bad, Bytes::from_static(b"1"), None).await;
    assert!(
        refused.is_err(),
        "a publish to the corrupt topic: {refused:?}"
    );

    // Restarted with backoff until the policy gives up; then every use is refused.
    let deadline = Instant::now() + DEADLINE;
    let stopped = loop {
        match TopicSupervisor::handle(&h.topic_sup, &h.registry, &bad).await {
            Err(TopicError::Unavailable(m)) if m.contains("is stopped") => break m,
            _ => assert!(Instant::now() < deadline, "the supervisor never gave up"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(stopped.contains("failed 6 times within 60 s"), "{stopped}");
    assert_eq!(h.log.starts(&bad), 6, "one start and five restarts");

    // Further uses are refused without starting it again, and other topics are served.
    for n in 0..20 {
        let r = h.topics.publish(&bad, Bytes::from_static(b"1"), None).await;
        assert!(
            matches!(&r, Err(TopicError::Unavailable(m)) if m.contains("is stopped")),
            "use {n} after giving up: {r:?}"
        );
    }
    assert_eq!(h.log.starts(&bad), 6, "a refused use started the topic");
    assert!(
        h.registry.get(&bad).is_none(),
        "a stopped topic is registered"
    );
    assert_eq!(h.publish_ok(&topic("healthy"), "1").await, 1);
    h.stop().await;
}

/// After giving up, a use within the cool-down is refused and the first use after it
/// starts the topic again: once its record is repaired, it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_topic_starts_again_on_a_use_after_the_cool_down() {
    use crate::cluster::client::Cluster;
    use crate::topic::restart::RestartPolicy;
    let policy = RestartPolicy {
        max_restarts: 1,
        cool_down: Duration::from_millis(300),
        ..RestartPolicy::NODE
    };
    let h = Harness::start_with(Cluster::alone("n1"), Announcer::default(), policy).await;
    let bad = topic("mended");
    h.log
        .save_consumer(bad.as_str(), "g", b"not a consumer record")
        .expect("save");
    let _ = h.topics.publish(&bad, Bytes::from_static(b"1"), None).await;
    let deadline = Instant::now() + DEADLINE;
    while !matches!(
        TopicSupervisor::handle(&h.topic_sup, &h.registry, &bad).await,
        Err(TopicError::Unavailable(m)) if m.contains("is stopped")
    ) {
        assert!(Instant::now() < deadline, "the supervisor never gave up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.log.starts(&bad), 2, "one start and one restart");

    h.log.delete_consumer(bad.as_str(), "g").expect("repair");
    let deadline = Instant::now() + DEADLINE;
    let offset = loop {
        match h.topics.publish(&bad, Bytes::from_static(b"2"), None).await {
            Ok(ack) => break ack.offset,
            Err(TopicError::Unavailable(m)) if m.contains("is stopped") => {
                assert!(Instant::now() < deadline, "never started again: {m}")
            }
            Err(e) => panic!("a use after giving up: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(offset, 1);
    assert_eq!(h.log.starts(&bad), 3, "started once more, by a use");
    h.stop().await;
}

/// A stop that takes long (an owner stuck in a slow storage call while it handles a
/// publish) runs off the supervisor's mailbox: a lookup of another topic is answered
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stop_does_not_hold_up_lookups() {
    use crate::topic::supervisor::SupervisorMsg;
    use std::sync::atomic::Ordering;
    let h = Harness::start().await;
    let slow = topic("slow");
    h.publish_ok(&slow, "1").await;
    let stuck = h.topic_actor_id(&slow).expect("topic actor");
    // The actor looks up the next publish's id itself, and is held there.
    h.log.hold_next_lookup(&slow);
    let topics = h.topics.clone();
    let held = {
        let slow = slow.clone();
        tokio::spawn(async move { topics.publish(&slow, Bytes::from_static(b"2"), None).await })
    };
    eventually("the lookup is held", || {
        h.log.gate_entered.load(Ordering::SeqCst)
    })
    .await;
    // The stuck owner is retired: it stops once its publish is handled.
    h.topic_sup
        .cast(SupervisorMsg::Retire(slow.clone(), stuck))
        .expect("cast");
    eventually("the stuck owner is out of the registry", || {
        h.topic_actor_id(&slow).is_none()
    })
    .await;
    // The lookup is answered well before the held call ends (the gate holds for DEADLINE).
    let other = topic("other");
    let lookup = TopicSupervisor::handle(&h.topic_sup, &h.registry, &other);
    let other = tokio::time::timeout(DEADLINE / 4, lookup).await;
    assert!(
        matches!(other, Ok(Ok(_))),
        "lookup of another topic while a stop is slow: {:?}",
        other.map(|r| r.err())
    );
    assert!(
        !held.is_finished(),
        "the lookup was answered only after the slow stop"
    );
    h.log.open_gate();
    let _ = held.await;
    h.stop().await;
}

/// A dead letter whose publish fails (the dead-letter topic's actor fails twice, handling
/// it) is kept in its group's outbox and retried until it arrives, each retry counted; the
/// topic it came from carries on without failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_publish_fails_is_retried_until_it_arrives() {
    use crate::protocol::consumer::{AckRequest, ConsumerOptions};
    let metrics = crate::metrics_setup::install_metrics();
    let retries = || {
        let rendered = metrics.render();
        let value = rendered
            .lines()
            .find_map(|l| l.strip_prefix("starling_dead_letter_retries_total "));
        value.map_or(0.0, |v| v.trim().parse::<f64>().expect("a counter"))
    };
    let h = Harness::start().await;
    let (t, dlq) = (topic("jobs"), topic("$dlq.jobs"));
    h.publish_ok(&t, "\"job\"").await;
    let handle = h.topics.handle(&t).await.expect("topic handle");
    let once = ConsumerOptions {
        max_deliver: Some(1),
        ..Default::default()
    };
    let leased = handle.lease("g".into(), once, Some(0), 1).await;
    assert_eq!(leased.expect("lease").len(), 1);
    let source = h.topic_actor_id(&t);

    // The dead letter's publish carries its idempotent id: the dead-letter topic's actor
    // looks it up, and panics doing so, twice.
    h.log.fail_next_lookups(&dlq, 2);
    let retries_before = retries();
    let nack = AckRequest::Nack {
        offsets: vec![1],
        delay_ms: 0,
    };
    handle.ack("g".into(), nack).await.expect("nack");
    let letters = || {
        let read = h.log.inner.read(dlq.as_str(), 1, 10, 10, usize::MAX);
        read.unwrap_or_default()
    };
    eventually("the dead letter in $dlq.jobs", || !letters().is_empty()).await;
    assert_eq!(h.log.lookups_left_to_fail(), 0, "both failures were met");
    // Other tests count into the same process-wide metric: at least these two retries.
    let counted = retries() - retries_before;
    assert!(counted >= 2.0, "{counted} dead-letter retries counted");
    let letters = letters();
    assert_eq!(letters.len(), 1, "one dead letter, once");
    let v: serde_json::Value = serde_json::from_slice(&letters[0].data).expect("json");
    assert_eq!((&v["consumer"], &v["offset"]), (&"g".into(), &1.into()));
    assert_eq!(
        h.topic_actor_id(&t),
        source,
        "the source topic's actor failed"
    );
    // Published, it leaves the group's persisted outbox.
    outbox_emptied(&h, &t).await;
    h.stop().await;
}

/// A dead letter left in a group's persisted outbox (its actor stopped before publishing
/// it) is published by the topic's next actor, in the epoch of its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_left_in_the_outbox_is_published_by_the_next_actor() {
    left_in_the_outbox(None).await;
}

/// A letter whose offset belongs to an earlier epoch keeps that epoch (and so its id):
/// republished after an epoch change, it is the same letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_of_an_earlier_epoch_keeps_its_epoch() {
    left_in_the_outbox(Some("earlier")).await;
}

async fn left_in_the_outbox(epoch: Option<&str>) {
    use crate::consumer::stored::{OutboxLetter, StoredConsumer};
    use crate::consumer::window::{DeadLetter, Snapshot};
    use crate::topic::supervisor::SupervisorMsg;
    let h = Harness::start().await;
    let (t, dlq) = (topic("left"), topic("$dlq.left"));
    h.publish_ok(&t, "\"job\"").await;
    let first = h.topic_actor_id(&t).expect("topic actor");
    // Retired (as an idle actor is); the next use starts another.
    h.topic_sup
        .cast(SupervisorMsg::Retire(t.clone(), first))
        .expect("cast");
    eventually("the topic actor stopped", || h.topic_actor_id(&t).is_none()).await;
    // As the stopped actor would have left it: offset 1 done, its dead letter unpublished.
    let stored = StoredConsumer {
        window: Snapshot {
            floor: 1,
            next: 2,
            ..Default::default()
        },
        ack_wait_ms: 30_000,
        max_deliver: 1,
        max_inflight: 100,
        backoff_ms: vec![1_000],
        last_active_ms: crate::topic::now_ms(),
        // Recorded before letters kept their epoch: it belongs to the topic's epoch.
        outbox: vec![OutboxLetter {
            letter: DeadLetter {
                offset: 1,
                attempts: 1,
            },
            epoch: epoch.map(str::to_string),
        }],
    };
    let bytes = stored.encode().expect("encode");
    h.log.save_consumer(t.as_str(), "g", &bytes).expect("save");

    h.publish_ok(&t, "\"next\"").await;
    assert_ne!(h.topic_actor_id(&t), Some(first), "a new actor");
    let letters = || {
        let read = h.log.inner.read(dlq.as_str(), 1, 10, 10, usize::MAX);
        read.unwrap_or_default()
    };
    eventually("the dead letter in $dlq.left", || !letters().is_empty()).await;
    let v: serde_json::Value = serde_json::from_slice(&letters()[0].data).expect("json");
    assert_eq!((&v["consumer"], &v["offset"]), (&"g".into(), &1.into()));
    let meta = h.log.inner.meta(t.as_str()).expect("meta").expect("topic");
    let expected = epoch.unwrap_or(meta.epoch.as_str());
    assert_eq!(v["epoch"], expected, "the dead letter's epoch");
    outbox_emptied(&h, &t).await;
    h.stop().await;
}

/// Waits until every stored group of `t` has an empty outbox.
async fn outbox_emptied(h: &Harness, t: &crate::protocol::TopicName) {
    use crate::consumer::stored::StoredConsumer;
    eventually("an empty outbox", || {
        let stored = h.log.consumers(t.as_str()).expect("consumers");
        stored
            .iter()
            .all(|(_, bytes)| StoredConsumer::decode(bytes, 0).is_ok_and(|s| s.outbox.is_empty()))
    })
    .await;
}
