//! In-process supervision tests (no sockets): a topic actor that panics is restarted from
//! its log without losing or duplicating messages, and a session that panics takes no other
//! session (nor the node) with it.

use super::service::Topics;
use super::supervisor::{SupervisorMsg, TopicRegistry, TopicSupervisor};
use crate::config::{FsyncMode, LimitsConfig};
use crate::protocol::envelope::Delivery;
use crate::protocol::frames::Position;
use crate::protocol::{ErrorCode, TopicName};
use crate::session::outbound::{CloseReason, OutFrame, Outbound};
use crate::session::poll::PollRequest;
use crate::session::supervisor::{SessionSupervisor, Sessions};
use crate::session::{SessionMsg, Transport};
use crate::shutdown::Shutdown;
use crate::storage::flusher::Flusher;
use crate::storage::{
    RetentionPolicy, SledLog, SledOptions, StorageError, StoredMessage, TopicLog, TopicMeta,
};
use crate::topic::actor::TopicContext;
use crate::topic::TopicMsg;
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, ActorStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// The exact `data` (JSON text) that makes [`FaultyLog::append`] panic, once.
const BOOM: &[u8] = b"\"boom\"";

/// A real [`SledLog`] that panics in `append` the first time a message's data is `"boom"`,
/// and in `read` whenever the topic is `poison_read_topic`. It can also hold the next read
/// of one topic (as a slow disk would) until the test opens the gate.
struct FaultyLog {
    inner: SledLog,
    boom_armed: AtomicBool,
    booms: AtomicUsize,
    poison_read_topic: Option<String>,
    /// The topic whose next read is held.
    gate_topic: Mutex<Option<String>>,
    /// A read is held at the gate (or was).
    gate_entered: AtomicBool,
    gate_open: AtomicBool,
}

impl FaultyLog {
    fn open(path: &std::path::Path, poison_read_topic: Option<&str>) -> FaultyLog {
        let opts = SledOptions {
            dedupe_window_ms: 60_000,
            segment_messages: 1_000,
            cache_bytes: 16 * 1024 * 1024,
        };
        FaultyLog {
            inner: SledLog::open(path, opts).expect("open sled log"),
            boom_armed: AtomicBool::new(true),
            booms: AtomicUsize::new(0),
            poison_read_topic: poison_read_topic.map(str::to_string),
            gate_topic: Mutex::new(None),
            gate_entered: AtomicBool::new(false),
            gate_open: AtomicBool::new(false),
        }
    }

    /// Holds the next read of `topic` until [`FaultyLog::open_gate`].
    fn hold_next_read(&self, topic: &TopicName) {
        *self.gate_topic.lock().unwrap() = Some(topic.as_str().to_string());
    }

    fn open_gate(&self) {
        self.gate_open.store(true, Ordering::SeqCst);
    }

    fn gate(&self, topic: &str) {
        let hold = {
            let mut gate = self.gate_topic.lock().unwrap();
            let hold = gate.as_deref() == Some(topic);
            if hold {
                *gate = None;
            }
            hold
        };
        if !hold {
            return;
        }
        self.gate_entered.store(true, Ordering::SeqCst);
        // A blocking wait, like a slow disk read; bounded so a broken test cannot hang.
        let until = std::time::Instant::now() + DEADLINE;
        while !self.gate_open.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl TopicLog for FaultyLog {
    fn meta(&self, topic: &str) -> Result<Option<TopicMeta>, StorageError> {
        self.inner.meta(topic)
    }

    fn create(&self, topic: &str, epoch: &str) -> Result<TopicMeta, StorageError> {
        self.inner.create(topic, epoch)
    }

    fn set_epoch(&self, topic: &str, epoch: &str) -> Result<TopicMeta, StorageError> {
        self.inner.set_epoch(topic, epoch)
    }

    fn topics(&self) -> Result<Vec<String>, StorageError> {
        self.inner.topics()
    }

    fn append(&self, topic: &str, msgs: &[StoredMessage]) -> Result<(), StorageError> {
        if msgs.iter().any(|m| &m.data[..] == BOOM) && self.boom_armed.swap(false, Ordering::SeqCst)
        {
            self.booms.fetch_add(1, Ordering::SeqCst);
            panic!("FaultyLog: injected append panic on topic {topic}");
        }
        self.inner.append(topic, msgs)
    }

    fn read(
        &self,
        topic: &str,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        if self.poison_read_topic.as_deref() == Some(topic) {
            panic!("FaultyLog: injected read panic on topic {topic}");
        }
        self.gate(topic);
        self.inner.read(topic, from, to, max_count, max_bytes)
    }

    fn apply_retention(
        &self,
        topic: &str,
        policy: &RetentionPolicy,
        now_ms: u64,
    ) -> Result<TopicMeta, StorageError> {
        self.inner.apply_retention(topic, policy, now_ms)
    }

    fn remember_id(
        &self,
        topic: &str,
        id: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.inner.remember_id(topic, id, offset, now_ms)
    }

    fn lookup_id(&self, topic: &str, id: &str, now_ms: u64) -> Result<Option<u64>, StorageError> {
        self.inner.lookup_id(topic, id, now_ms)
    }

    fn expire_ids(&self, now_ms: u64) -> Result<(), StorageError> {
        self.inner.expire_ids(now_ms)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }

    fn mark_running(&self) -> Result<bool, StorageError> {
        self.inner.mark_running()
    }

    fn mark_clean(&self) -> Result<(), StorageError> {
        self.inner.mark_clean()
    }

    fn save_consumer(&self, topic: &str, name: &str, state: &[u8]) -> Result<(), StorageError> {
        self.inner.save_consumer(topic, name, state)
    }

    fn consumers(&self, topic: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.inner.consumers(topic)
    }
}

/// The node's supervision tree, wired as `node.rs` does, minus HTTP.
struct Harness {
    log: Arc<FaultyLog>,
    registry: TopicRegistry,
    topic_sup: ActorRef<SupervisorMsg>,
    topic_sup_task: JoinHandle<()>,
    session_sup: ActorRef<()>,
    session_sup_task: JoinHandle<()>,
    topics: Topics,
    sessions: Sessions,
    storage_stop: Shutdown,
    flusher_task: JoinHandle<()>,
    // Last: dropped after everything that uses the database.
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(poison_read_topic: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(FaultyLog::open(dir.path(), poison_read_topic));
        log.mark_running().expect("mark running");
        let dyn_log: Arc<dyn TopicLog> = log.clone();
        let storage_stop = Shutdown::new();
        let (flusher, flusher_task) = Flusher::spawn(
            dyn_log.clone(),
            FsyncMode::Batch,
            Duration::from_millis(10),
            storage_stop.clone(),
        );
        let ctx = TopicContext {
            idle: Duration::from_secs(3600),
            log: dyn_log.clone(),
            flusher,
            retention: RetentionPolicy {
                max_messages: 1_000_000,
                max_age_ms: 24 * 3600 * 1000,
            },
            consumers: crate::config::ConsumersConfig::default(),
            topics: Arc::new(std::sync::OnceLock::new()),
        };
        let registry = TopicRegistry::default();
        let (topic_sup, topic_sup_task) =
            Actor::spawn(None, TopicSupervisor, (ctx, registry.clone()))
                .await
                .expect("spawn topic supervisor");
        let (session_sup, session_sup_task) = Actor::spawn(None, SessionSupervisor, ())
            .await
            .expect("spawn session supervisor");
        let topics = Topics::new(topic_sup.clone(), registry.clone(), dyn_log);
        let sessions = Sessions::new(
            session_sup.clone(),
            topics.clone(),
            LimitsConfig::default(),
            Shutdown::new(),
        );
        Harness {
            log,
            registry,
            topic_sup,
            topic_sup_task,
            session_sup,
            session_sup_task,
            topics,
            sessions,
            storage_stop,
            flusher_task,
            _dir: dir,
        }
    }

    /// Publishes JSON text `data`, expecting an ack.
    async fn publish_ok(&self, topic: &TopicName, data: &str) -> u64 {
        match self
            .topics
            .publish(topic, Bytes::copy_from_slice(data.as_bytes()), None)
            .await
        {
            Ok(ack) => {
                assert!(
                    !ack.duplicate,
                    "publish of {data} was taken for a duplicate"
                );
                ack.offset
            }
            Err(e) => panic!("publish of {data} to {topic} failed: {e:?}"),
        }
    }

    /// Starts a WebSocket-like session with its own outbound queue.
    async fn session(&self) -> (ActorRef<SessionMsg>, Reader) {
        let outbound = Outbound::new(LimitsConfig::default().max_outbound_queue_bytes);
        let session = self
            .sessions
            .start(Transport::Ws, outbound.clone())
            .await
            .expect("start session");
        (session, Reader::new(outbound))
    }

    fn topic_actor_id(&self, topic: &TopicName) -> Option<ractor::ActorId> {
        self.registry.get(topic).map(|h| h.actor.get_id())
    }

    /// Everything the log holds for `topic` in `from..=to`.
    fn log_read(&self, topic: &TopicName, from: u64, to: u64) -> Vec<StoredMessage> {
        self.log
            .inner
            .read(topic.as_str(), from, to, usize::MAX, usize::MAX)
            .expect("log read")
    }

    /// Stops the tree in node order, then the flusher.
    async fn stop(self) {
        self.session_sup
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.session_sup.stop(None);
        let _ = self.session_sup_task.await;
        self.topic_sup
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.topic_sup.stop(None);
        let _ = self.topic_sup_task.await;
        self.storage_stop.trigger();
        let _ = self.flusher_task.await;
    }
}

/// Subscribes `session` to `topic`, live only, and waits for the outcome.
async fn subscribe_live(session: &ActorRef<SessionMsg>, topic: &TopicName) {
    let reply = session
        .call(
            |reply| SessionMsg::Subscribe {
                topic: topic.clone(),
                position: Position::default(),
                consumer: None,
                options: Default::default(),
                req: None,
                reply: Some(reply),
            },
            Some(DEADLINE),
        )
        .await;
    match reply {
        Ok(CallResult::Success(Ok(()))) => {}
        Ok(CallResult::Success(Err(e))) => panic!("subscribe to {topic} refused: {e:?}"),
        Ok(_) => panic!("subscribe to {topic}: the session did not answer"),
        Err(e) => panic!("subscribe to {topic}: cannot reach the session: {e}"),
    }
}

/// One delivered message, as a client would see it.
#[derive(Clone, Debug)]
struct Got {
    topic: String,
    offset: u64,
    data: serde_json::Value,
    /// Pushed by the topic actor (live) rather than by a replay; shown in failure messages.
    #[allow(dead_code)]
    live: bool,
}

/// Drains an outbound queue like a transport's writer, keeping the messages.
struct Reader {
    outbound: Arc<Outbound>,
    got: Vec<Got>,
    subscribed_frames: usize,
}

impl Reader {
    fn new(outbound: Arc<Outbound>) -> Reader {
        Reader {
            outbound,
            got: Vec::new(),
            subscribed_frames: 0,
        }
    }

    fn take(&mut self, frames: Vec<OutFrame>) {
        for frame in frames {
            match frame {
                OutFrame::Message(d) => self.got.push(parse(&d)),
                OutFrame::Subscribed(_) => self.subscribed_frames += 1,
                OutFrame::Text(_) => {}
            }
        }
    }

    /// Offsets received on `topic`, in order.
    fn offsets(&self, topic: &TopicName) -> Vec<u64> {
        self.got
            .iter()
            .filter(|g| g.topic == topic.as_str())
            .map(|g| g.offset)
            .collect()
    }

    /// Drains until `topic`'s offset `offset` arrived; panics on a closed queue or timeout.
    async fn wait_for_offset(&mut self, topic: &TopicName, offset: u64) {
        let deadline = Instant::now() + DEADLINE;
        while !self.offsets(topic).contains(&offset) {
            let mut frames = Vec::new();
            match tokio::time::timeout_at(deadline, self.outbound.drain(&mut frames)).await {
                Ok(Ok(())) => self.take(frames),
                Ok(Err(reason)) => panic!(
                    "outbound closed ({reason:?}) before offset {offset} of {topic} arrived; got {:?}",
                    self.offsets(topic)
                ),
                Err(_) => panic!(
                    "offset {offset} of {topic} did not arrive in {DEADLINE:?}; got {:?}",
                    self.offsets(topic)
                ),
            }
        }
    }
}

fn parse(d: &Delivery) -> Got {
    let v: serde_json::Value = serde_json::from_slice(&d.envelope).expect("envelope is JSON");
    assert_eq!(v["offset"].as_u64(), Some(d.offset), "envelope offset");
    Got {
        topic: d.topic.as_str().to_string(),
        offset: d.offset,
        data: v["data"].clone(),
        live: d.received.is_some(),
    }
}

/// Polls `cond` until it holds, or fails with `what`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_running<M>(actor: &ActorRef<M>, what: &str) {
    assert_eq!(
        actor.get_status(),
        ActorStatus::Running,
        "{what} is not running"
    );
}

fn topic(name: &str) -> TopicName {
    TopicName::parse(name).expect("valid topic name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_topic_actor_restarts_from_its_log_and_resubscribes() {
    let h = Harness::start(None).await;
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
    let boom = h.topics.publish(&t, Bytes::from_static(BOOM), None).await;
    assert_eq!(
        h.log.booms.load(Ordering::SeqCst),
        1,
        "the injected panic fired"
    );
    match boom {
        Err(e) => assert_eq!(e.code, ErrorCode::Unavailable, "boom publish: {e:?}"),
        Ok(ack) => panic!("the publish whose append panicked was acknowledged: {ack:?}"),
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
        "offsets continue from the durable head (the failed append took no offset)"
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
    let h = Harness::start(None).await;
    let t = topic("replaying");
    for n in 1..=4u64 {
        assert_eq!(h.publish_ok(&t, &n.to_string()).await, n);
    }
    let (session, mut reader) = h.session().await;
    h.log.hold_next_read(&t);
    // From the oldest retained offset: the replay reads 1..=4 and is held in that read.
    let reply = session
        .call(
            |reply| SessionMsg::Subscribe {
                topic: t.clone(),
                position: Position {
                    after: Some(0),
                    epoch: None,
                },
                consumer: None,
                options: Default::default(),
                req: None,
                reply: Some(reply),
            },
            Some(DEADLINE),
        )
        .await;
    assert!(
        matches!(reply, Ok(CallResult::Success(Ok(())))),
        "subscribe failed"
    );
    eventually("the replay is inside its log read", || {
        h.log.gate_entered.load(Ordering::SeqCst)
    })
    .await;

    let old_actor = h.topic_actor_id(&t).expect("topic actor registered");
    let boom = h.topics.publish(&t, Bytes::from_static(BOOM), None).await;
    assert!(
        boom.is_err(),
        "the publish whose append panicked was acknowledged"
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
    let h = Harness::start(Some("poison")).await;
    let shared = topic("shared");
    let poison = topic("poison");
    assert_eq!(h.publish_ok(&poison, "\"p\"").await, 1);

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
    let h = Harness::start(Some("poison")).await;
    let poison = topic("poison");
    assert_eq!(h.publish_ok(&poison, "\"p\"").await, 1);
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
