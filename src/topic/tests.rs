//! In-process supervision tests (no sockets): a topic actor that panics is restarted from
//! its log without losing or duplicating messages, and a session that panics takes no other
//! session (nor the node) with it.

mod cluster;
mod supervision;
mod support;

use crate::delivery::outbound::CloseReason;
use crate::protocol::frames::Position;
use crate::protocol::TopicName;
use crate::session::poll::PollRequest;
use crate::session::SessionMsg;
use crate::storage::TopicLog;
use crate::topic::error::TopicError;
use crate::topic::TopicMsg;
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Makes the topic actor of `t` panic while it handles a publish (its lookup of the
/// publish's id), once; returns that publish's outcome.
async fn crash_topic_actor(
    h: &Harness,
    t: &TopicName,
) -> Result<crate::topic::PublishAck, TopicError> {
    h.log.fail_next_lookups(t, 1);
    let id = Some("boom".to_string());
    let boom = h
        .topics
        .publish(t, Bytes::from_static(b"\"boom\""), id)
        .await;
    assert_eq!(h.log.lookups_left_to_fail(), 0, "the injected panic fired");
    boom
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_topic_actor_restarts_from_its_log_and_resubscribes() {
    let h = Harness::start().await;
    let t = topic("crashy");

    for n in 1..=4u64 {
        assert_eq!(h.publish_ok(&t, &n.to_string()).await, n);
    }
    let (session, mut reader) = h.session().await;
    subscribe_live(&session, &t).await;
    // Published after the live-only subscription: it is the first message the session sees.
    assert_eq!(h.publish_ok(&t, "5").await, 5);
    reader.wait_for_offset(&t, 5).await;
    assert_eq!(
        reader.offsets(&t),
        vec![5],
        "live-only subscription at head 4"
    );

    let old_actor = h.topic_actor_id(&t).expect("topic actor registered");
    let boom = crash_topic_actor(&h, &t).await;
    match boom {
        Err(e) => assert_eq!(e, TopicError::Restarting, "boom publish"),
        Ok(ack) => panic!("the publish that crashed the topic actor was acknowledged: {ack:?}"),
    }

    // The supervisor registers a new actor for the topic.
    eventually("topic actor restarted under a new id", || {
        h.topic_actor_id(&t).is_some_and(|id| id != old_actor)
    })
    .await;

    // After the restart, publishes work again and continue the log's offsets.
    let mut acked = Vec::new();
    for n in 6..=10u64 {
        acked.push(h.publish_ok(&t, &n.to_string()).await);
    }
    assert_eq!(
        acked,
        (6..=10).collect::<Vec<_>>(),
        "offsets continue from the durable head (the failed publish took no offset)"
    );
    // A sentinel after everything else: anything duplicated or out of order shows up before it.
    let last = h.publish_ok(&t, "11").await;
    assert_eq!(last, 11);
    reader.wait_for_offset(&t, last).await;

    let offsets = reader.offsets(&t);
    assert_eq!(
        offsets,
        (5..=last).collect::<Vec<_>>(),
        "the subscriber resumed from its cursor: every offset from its first live one to the \
         last published exactly once, in order; got {:?}",
        reader.got
    );
    for g in &reader.got {
        assert_eq!(
            g.data,
            serde_json::json!(g.offset),
            "data delivered at offset {}",
            g.offset
        );
    }
    assert_eq!(
        reader.subscribed_frames, 1,
        "a recovered resubscription announces nothing to the client"
    );

    // Acknowledged messages survived, unchanged, and nothing else is in the log.
    let stored = h.log_read(&t, 1, u64::MAX);
    let stored: Vec<(u64, Vec<u8>)> = stored
        .into_iter()
        .map(|m| (m.offset, m.data.to_vec()))
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = (1..=last)
        .map(|n| (n, n.to_string().into_bytes()))
        .collect();
    assert_eq!(stored, expected, "log contents after the restart");
    let meta = h.log.meta(t.as_str()).unwrap().expect("topic exists");
    assert_eq!(meta.head, last);

    // The node is still up: both supervisors and the session live on.
    assert_running(&h.topic_sup, "topic supervisor");
    assert_running(&h.session_sup, "session supervisor");
    assert_running(&session, "session");
    assert_eq!(
        reader.outbound.closed(),
        None,
        "the session's queue stayed open"
    );
    let info = h
        .topics
        .info(&t)
        .await
        .expect("info")
        .expect("topic exists");
    assert_eq!(info.head, last);
    assert_eq!(
        info.subscribers, 1,
        "the session is subscribed to the new actor"
    );

    h.stop().await;
}

/// The topic actor fails while a subscriber's replay is inside a (slow) log read. The
/// replay task cannot be interrupted there (`abort` only takes effect at its next await), so
/// the session must let it finish before it resumes from the subscription's cursor;
/// otherwise the old replay and the new one both deliver the same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_restart_during_a_replay_read_delivers_each_offset_once() {
    let h = Harness::start().await;
    let t = topic("replaying");
    for n in 1..=4u64 {
        assert_eq!(h.publish_ok(&t, &n.to_string()).await, n);
    }
    let (session, mut reader) = h.session().await;
    h.log.hold_next_read(&t);
    // From the oldest retained offset: the replay reads 1..=4 and is held in that read.
    let from_oldest = Position {
        after: Some(0),
        epoch: None,
    };
    subscribe_at(&session, &t, from_oldest).await;
    eventually("the replay is inside its log read", || {
        h.log.gate_entered.load(Ordering::SeqCst)
    })
    .await;

    let old_actor = h.topic_actor_id(&t).expect("topic actor registered");
    let boom = crash_topic_actor(&h, &t).await;
    assert!(
        boom.is_err(),
        "the publish that crashed the topic actor was acknowledged"
    );
    eventually("topic actor restarted under a new id", || {
        h.topic_actor_id(&t).is_some_and(|id| id != old_actor)
    })
    .await;
    // Give the session the chance to resubscribe while the old read is still held (it may
    // also, correctly, wait for the old replay first: then nobody subscribes yet).
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let subscribed = match h.registry.get(&t) {
            Some(handle) => matches!(
                handle.actor.call(TopicMsg::Info, Some(DEADLINE)).await,
                Ok(CallResult::Success(info)) if info.subscribers > 0
            ),
            None => false,
        };
        if subscribed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.log.open_gate();

    let last = h.publish_ok(&t, "5").await;
    assert_eq!(last, 5);
    reader.wait_for_offset(&t, last).await;
    assert_eq!(
        reader.offsets(&t),
        (1..=last).collect::<Vec<_>>(),
        "every offset exactly once, in order; got {:?}",
        reader.got
    );
    assert_running(&session, "session");
    assert_running(&h.topic_sup, "topic supervisor");
    h.stop().await;
}

/// Makes `session` panic inside its handler: a poll whose log read panics.
async fn crash_session_with_poisoned_poll(session: &ActorRef<SessionMsg>, poison: &TopicName) {
    let req = PollRequest {
        consumer: None,
        topic: poison.clone(),
        position: Position {
            after: Some(0),
            epoch: None,
        },
        limit: 10,
        timeout: Duration::ZERO,
    };
    let reply = session
        .call(|reply| SessionMsg::Poll(req, reply), Some(DEADLINE))
        .await;
    assert!(
        !matches!(reply, Ok(CallResult::Success(_))),
        "the poisoned poll was answered"
    );
    eventually("the failed session stopped", || {
        session.get_status() == ActorStatus::Stopped
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_session_does_not_affect_another() {
    let h = Harness::start().await;
    let shared = topic("shared");
    let poison = topic("poison");
    assert_eq!(h.publish_ok(&poison, "\"p\"").await, 1);
    h.log.poison_reads(&poison);

    let (s1, mut r1) = h.session().await;
    let (s2, mut r2) = h.session().await;
    subscribe_live(&s1, &shared).await;
    subscribe_live(&s2, &shared).await;
    assert_eq!(h.publish_ok(&shared, "1").await, 1);
    r1.wait_for_offset(&shared, 1).await;
    r2.wait_for_offset(&shared, 1).await;
    let topic_actor = h.topic_actor_id(&shared).expect("topic actor registered");

    crash_session_with_poisoned_poll(&s1, &poison).await;
    eventually("the failed session's queue is closed", || {
        r1.outbound.closed().is_some()
    })
    .await;

    for n in 2..=4u64 {
        assert_eq!(h.publish_ok(&shared, &n.to_string()).await, n);
    }
    r2.wait_for_offset(&shared, 4).await;
    assert_eq!(r2.offsets(&shared), vec![1, 2, 3, 4]);
    assert_eq!(r1.offsets(&shared), vec![1]);

    assert_running(&s2, "the other session");
    assert_running(&h.session_sup, "session supervisor");
    assert_running(&h.topic_sup, "topic supervisor");
    assert_eq!(
        r2.outbound.closed(),
        None,
        "the other session's queue is open"
    );
    assert_eq!(
        h.topic_actor_id(&shared),
        Some(topic_actor),
        "a session failure does not restart the topic"
    );
    // The failed session's subscription is gone from the topic.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let info = h.topics.info(&shared).await.expect("info").expect("exists");
        if info.subscribers == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed session is still subscribed ({} subscribers)",
            info.subscribers
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    h.stop().await;
}

/// A session that fails must close its connection as failed (`Internal`, WS 1011), not as
/// a normal end (`Gone`, which the WebSocket writer turns into a silent drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_session_closes_its_queue_as_internal_error() {
    let h = Harness::start().await;
    let poison = topic("poison");
    assert_eq!(h.publish_ok(&poison, "\"p\"").await, 1);
    h.log.poison_reads(&poison);
    let (s1, r1) = h.session().await;

    crash_session_with_poisoned_poll(&s1, &poison).await;
    eventually("the failed session's queue is closed", || {
        r1.outbound.closed().is_some()
    })
    .await;
    assert_eq!(
        r1.outbound.closed(),
        Some(CloseReason::Internal),
        "a failed session closes its queue as Internal"
    );
    assert_running(&h.session_sup, "session supervisor");

    h.stop().await;
}

/// Publishes that arrive together are appended in a few batches (not one by one): each
/// gets its own offset in arrival order, and a repeated id gets the first one's offset back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_that_arrive_together_are_committed_as_one_batch() {
    let h = Harness::start().await;
    let t = topic("batched");
    assert_eq!(h.publish_ok(&t, "0").await, 1);
    let actor = h.registry.get(&t).expect("topic actor").actor;
    let publish = |id: Option<String>| {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let data = Bytes::from_static(b"1");
        actor
            .cast(TopicMsg::Publish { data, id, reply })
            .expect("cast");
        rx
    };
    // Hold the next append, so that everything cast meanwhile waits in the mailbox.
    h.log.hold_next_append(&t);
    let held = publish(None);
    eventually("the append is held", || {
        h.log.gate_entered.load(Ordering::SeqCst)
    })
    .await;
    let appends_before = h.log.appends.load(Ordering::SeqCst);
    let ids: Vec<String> = (0..60).map(|n| format!("id-{}", n % 40)).collect();
    let replies: Vec<_> = ids.iter().map(|id| publish(Some(id.clone()))).collect();
    h.log.open_gate();
    assert_eq!(held.await.expect("reply").expect("ack").offset, 2);
    let mut first_offset = std::collections::HashMap::new();
    let mut duplicates = 0;
    for (id, rx) in ids.iter().zip(replies) {
        let ack = rx.await.expect("reply").expect("publish acked");
        duplicates += usize::from(ack.duplicate);
        let offset = *first_offset.entry(id.clone()).or_insert(ack.offset);
        assert_eq!(ack.offset, offset, "{id} got two offsets");
    }
    assert_eq!(duplicates, 20);
    // Up to 8 entries of a topic are in flight at once (the writer pipelines them); what
    // arrives meanwhile is merged into the next entry, so 60 publishes are a few appends,
    // never one each.
    let appends = h.log.appends.load(Ordering::SeqCst) - appends_before;
    assert!(
        (1..=10).contains(&appends),
        "the 60 publishes that waited took {appends} appends"
    );
    let log = h.log_read(&t, 3, 100);
    assert_eq!(log.len(), 40);
    for (n, msg) in log.iter().enumerate() {
        assert_eq!(msg.offset, n as u64 + 3);
        assert_eq!(first_offset[&msg.id], msg.offset);
    }
    h.stop().await;
}

/// A consumer group that went idle while its topic was out of memory is deleted, from
/// memory and storage, when the topic is next loaded; a recently active one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_idle_while_the_topic_was_unloaded_expire_when_it_loads() {
    use crate::consumer::stored::StoredConsumer;
    let h = Harness::start().await;
    let t = topic("reloaded");
    let stored = |last_active_ms| StoredConsumer {
        window: Default::default(),
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_inflight: 100,
        backoff_ms: vec![1_000],
        last_active_ms,
        outbox: Vec::new(),
    };
    let now = crate::topic::now_ms();
    for (name, last_active_ms) in [("stale", 1), ("recent", now)] {
        let bytes = stored(last_active_ms).encode().expect("encode");
        h.log.save_consumer(t.as_str(), name, &bytes).expect("save");
    }
    // The first publish loads the topic (before its first retention tick).
    h.publish_ok(&t, "1").await;
    let actor = h.registry.get(&t).expect("topic actor").actor;
    let info = |name: &'static str| {
        let actor = actor.clone();
        async move {
            let msg = |reply| TopicMsg::ConsumerInfo {
                name: name.to_string(),
                reply,
            };
            match actor.call(msg, Some(DEADLINE)).await {
                Ok(CallResult::Success(info)) => info,
                other => panic!("consumer info of {name}: {other:?}"),
            }
        }
    };
    assert!(info("stale").await.is_none(), "the stale group was loaded");
    assert!(info("recent").await.is_some(), "the recent group expired");
    let names: Vec<String> = h
        .log
        .consumers(t.as_str())
        .expect("stored consumers")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, vec!["recent".to_string()]);
    h.stop().await;
}

/// Nothing is delivered or acknowledged before the flush that makes it durable has
/// completed. This node is configured alone, so its shards keep their Raft logs in memory:
/// the state machine appends the message to the topic at once and answers the entry only
/// once a flush covers that append. With the disk holding every flush, the message is in
/// the topic (and nowhere in a log on disk), but neither its reply nor its delivery comes;
/// once the flush completes, both do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_delivered_or_acknowledged_before_its_flush_completes() {
    let h = Harness::start().await;
    let t = topic("gated");
    assert_eq!(h.publish_ok(&t, "1").await, 1);
    let (session, mut reader) = h.session().await;
    subscribe_live(&session, &t).await;

    h.log.hold_flushes();
    let flushes = h.log.flushes.load(Ordering::SeqCst);
    let appends = h.log.appends.load(Ordering::SeqCst);
    let data: &[u8] = b"\"held by the disk\"";
    let publish = {
        let topics = h.topics.clone();
        let t = t.clone();
        tokio::spawn(async move { topics.publish(&t, Bytes::from_static(data), None).await })
    };
    // The message is in the topic, and a flush is waiting on the disk.
    eventually("the message appended and a flush started", || {
        h.log.appends.load(Ordering::SeqCst) > appends
            && h.log.flushes.load(Ordering::SeqCst) > flushes
    })
    .await;
    // A call to the topic actor goes through its mailbox after everything it did for the
    // publish: a delivery or a reply made before the flush would be visible now.
    let info = h.topics.handle(&t).await.expect("handle").info().await;
    assert_eq!(info.expect("info").head, 1, "the durable head moved on");
    assert!(
        !publish.is_finished(),
        "the publish was acknowledged before its flush completed"
    );
    reader.drain_now();
    assert_eq!(
        reader.offsets(&t),
        Vec::<u64>::new(),
        "delivered before its flush completed"
    );
    assert!(
        !h.raft_log_carries(&t, data),
        "the message was written twice: into a Raft log on disk too"
    );

    h.log.release_flushes();
    let ack = publish.await.expect("publish task").expect("publish");
    assert_eq!(ack.offset, 2);
    reader.wait_for_offset(&t, 2).await;
    assert_eq!(reader.offsets(&t), vec![2]);
    assert_eq!(h.log_read(&t, 2, 2).len(), 1, "offset 2 is in the topic");
    h.stop().await;
}
