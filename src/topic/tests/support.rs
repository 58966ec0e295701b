//! Test support: a fault-injecting TopicLog and an in-process node without sockets.

use crate::cluster::client::Cluster;
pub(super) use crate::cluster::Announcer;
use crate::config::{FsyncMode, LimitsConfig};
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::{OutFrame, Outbound};
use crate::protocol::frames::Position;
use crate::protocol::TopicName;
use crate::replication::cluster_net::ClusterRaftNet;
use crate::replication::owners::ShardOwners;
use crate::replication::{Replication, ReplicationSettings};
use crate::session::supervisor::{SessionSupervisor, Sessions};
use crate::session::{SessionMsg, Transport};
use crate::shutdown::Shutdown;
use crate::storage::flusher::Flusher;
use crate::storage::testing::{Faults, HookedLog};
use crate::storage::{RetentionPolicy, SledLog, SledOptions, StoredMessage, TopicLog};
use crate::topic::actor::TopicContext;
use crate::topic::restart::RestartPolicy;
use crate::topic::service::Topics;
use crate::topic::supervisor::{follow_membership, SupervisorMsg, TopicRegistry, TopicSupervisor};
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, ActorStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
pub(super) const DEADLINE: Duration = Duration::from_secs(10);

/// A real [`SledLog`] whose reads of one topic can be made to panic, whose publish-id
/// lookups of one topic can be made to panic a number of times (a crash of that topic's
/// actor: the actor looks ids up itself, while appends run in the shard's state machine),
/// and which can hold the next read or append of one topic (as a slow disk would) until
/// the test opens the gate, or hold every flush.
pub(super) type FaultyLog = HookedLog<Boom>;

/// The faults of [`FaultyLog`].
pub(super) struct Boom {
    /// Every read of this topic panics (see [`Boom::poison_reads`]).
    poison_read_topic: Mutex<Option<String>>,
    /// The topic whose next read is held.
    pub(super) gate_topic: Mutex<Option<String>>,
    /// The topic whose next append is held.
    pub(super) append_gate_topic: Mutex<Option<String>>,
    /// The topic whose next publish-id lookup is held.
    lookup_gate_topic: Mutex<Option<String>>,
    /// Appends so far, of any topic.
    pub(super) appends: AtomicUsize,
    /// A read, append or lookup is held at its gate (or was).
    pub(super) gate_entered: AtomicBool,
    pub(super) gate_open: AtomicBool,
    /// Flushes wait while this is set (see [`Boom::hold_flushes`]).
    pub(super) flushes_held: AtomicBool,
    /// Flushes started so far.
    pub(super) flushes: AtomicUsize,
    /// A topic whose next publish-id lookups panic, and how many more will.
    failing_lookups: Mutex<Option<(String, usize)>>,
    /// Every topic whose consumers were loaded, once per load (one per actor start).
    pub(super) loads: Mutex<Vec<String>>,
}

/// Opens a [`FaultyLog`] at `path`.
pub(super) fn open_faulty(path: &std::path::Path) -> FaultyLog {
    let opts = SledOptions {
        dedupe_window_ms: 60_000,
        cache_bytes: 16 * 1024 * 1024,
    };
    HookedLog {
        inner: SledLog::open(path, opts).expect("open sled log"),
        faults: Boom {
            poison_read_topic: Mutex::new(None),
            gate_topic: Mutex::new(None),
            append_gate_topic: Mutex::new(None),
            lookup_gate_topic: Mutex::new(None),
            appends: AtomicUsize::new(0),
            gate_entered: AtomicBool::new(false),
            gate_open: AtomicBool::new(false),
            flushes_held: AtomicBool::new(false),
            flushes: AtomicUsize::new(0),
            failing_lookups: Mutex::new(None),
            loads: Mutex::new(Vec::new()),
        },
    }
}

impl Boom {
    /// Holds the next read of `topic` until [`Boom::open_gate`].
    pub(super) fn hold_next_read(&self, topic: &TopicName) {
        *self.gate_topic.lock().unwrap() = Some(topic.as_str().to_string());
    }

    /// Holds the next append to `topic` until [`Boom::open_gate`].
    pub(super) fn hold_next_append(&self, topic: &TopicName) {
        *self.append_gate_topic.lock().unwrap() = Some(topic.as_str().to_string());
    }

    /// Holds the next publish-id lookup of `topic` (its actor, handling a publish, is
    /// stuck there) until [`Boom::open_gate`].
    pub(super) fn hold_next_lookup(&self, topic: &TopicName) {
        *self.lookup_gate_topic.lock().unwrap() = Some(topic.as_str().to_string());
    }

    /// Holds every flush (the disk does not answer) until [`Boom::release_flushes`].
    pub(super) fn hold_flushes(&self) {
        self.flushes_held.store(true, Ordering::SeqCst);
    }

    pub(super) fn release_flushes(&self) {
        self.flushes_held.store(false, Ordering::SeqCst);
    }

    /// Makes every read of `topic` from now on panic (whoever reads: a session's replay or
    /// poll, or the topic's actor).
    pub(super) fn poison_reads(&self, topic: &TopicName) {
        *self.poison_read_topic.lock().unwrap() = Some(topic.as_str().to_string());
    }

    /// Makes the next `n` publish-id lookups of `topic` panic. The topic's actor looks up
    /// the id of each publish that has one: it fails on each of them (and is restarted).
    pub(super) fn fail_next_lookups(&self, topic: &TopicName, n: usize) {
        *self.failing_lookups.lock().unwrap() = Some((topic.as_str().to_string(), n));
    }

    /// How many of the lookups [`Boom::fail_next_lookups`] asked to fail have not yet.
    pub(super) fn lookups_left_to_fail(&self) -> usize {
        self.failing_lookups
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |(_, n)| *n)
    }

    /// How many times an owner actor of `topic` started (loaded its consumers).
    pub(super) fn starts(&self, topic: &TopicName) -> usize {
        let loads = self.loads.lock().unwrap();
        loads.iter().filter(|t| *t == topic.as_str()).count()
    }

    pub(super) fn open_gate(&self) {
        self.gate_open.store(true, Ordering::SeqCst);
    }

    fn gate(&self, gate: &Mutex<Option<String>>, topic: &str) {
        let hold = {
            let mut gate = gate.lock().unwrap();
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

impl Faults for Boom {
    fn append(&self, topic: &str) {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.gate(&self.append_gate_topic, topic);
    }

    fn lookup_id(&self, topic: &str, id: &str) {
        self.gate(&self.lookup_gate_topic, topic);
        let fail = match &mut *self.failing_lookups.lock().unwrap() {
            Some((failing, left)) if failing == topic && *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
        if fail {
            panic!("FaultyLog: injected panic looking up id {id} of topic {topic}");
        }
    }

    fn consumers(&self, topic: &str) {
        self.loads.lock().unwrap().push(topic.to_string());
    }

    fn read(&self, topic: &str) {
        if self.poison_read_topic.lock().unwrap().as_deref() == Some(topic) {
            panic!("FaultyLog: injected read panic on topic {topic}");
        }
        self.gate(&self.gate_topic, topic);
    }

    fn flush(
        &self,
        flush: &dyn Fn() -> Result<(), crate::storage::StorageError>,
    ) -> Result<(), crate::storage::StorageError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        // A blocking wait, like a disk that takes its time; bounded so a broken test ends.
        let until = std::time::Instant::now() + DEADLINE;
        while self.flushes_held.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        flush()
    }
}

/// The node's supervision tree, wired as `node.rs` does, minus HTTP.
pub(super) struct Harness {
    pub(super) log: Arc<FaultyLog>,
    pub(super) registry: TopicRegistry,
    pub(super) topic_sup: ActorRef<SupervisorMsg>,
    pub(super) topic_sup_task: JoinHandle<()>,
    pub(super) session_sup: ActorRef<()>,
    pub(super) session_sup_task: JoinHandle<()>,
    pub(super) topics: Topics,
    pub(super) replication: Replication,
    pub(super) sessions: Sessions,
    pub(super) storage_stop: Shutdown,
    pub(super) flusher_task: JoinHandle<()>,
    pub(super) rebalancer: JoinHandle<()>,
    // Last: dropped after everything that uses the database.
    pub(super) _dir: tempfile::TempDir,
}

/// This node's replicas of 4 shards, with every member of `cluster`'s view (as it is now)
/// a voter, over the cluster's transport; quick elections.
async fn start_replication(
    log: &FaultyLog,
    dyn_log: Arc<dyn TopicLog>,
    flusher: Flusher,
    cluster: &Cluster,
    announcer: Announcer,
) -> Replication {
    let nodes: Vec<String> = cluster.watch().borrow().members.keys().cloned().collect();
    let settings = ReplicationSettings {
        me: cluster.me().to_string(),
        factor: nodes.len().min(3),
        nodes,
        shards: 4,
        heartbeat_ms: 50,
        election_min_ms: 200,
        election_max_ms: 400,
    };
    let store = crate::replication::raft_store(&log.inner).expect("raft store");
    let net = Arc::new(ClusterRaftNet {
        cluster: cluster.clone(),
        announcer,
    });
    Replication::start(settings, dyn_log, store, flusher, net)
        .await
        .expect("start replication")
}

impl Harness {
    pub(super) async fn start() -> Harness {
        Harness::start_with(
            Cluster::alone("n1"),
            Announcer::default(),
            RestartPolicy::NODE,
        )
        .await
    }

    /// A node of `cluster` (one of a [`crate::cluster::sim::SimNet`]), announcing its
    /// facts with `announcer`. Start a simulated cluster's nodes together: a node with an
    /// empty store waits to hear from a majority.
    pub(super) async fn start_in(cluster: Cluster, announcer: Announcer) -> Harness {
        Harness::start_with(cluster, announcer, RestartPolicy::NODE).await
    }

    /// A node of `cluster` whose topic supervisor restarts as `policy` says.
    pub(super) async fn start_with(
        cluster: Cluster,
        announcer: Announcer,
        policy: RestartPolicy,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(open_faulty(dir.path()));
        log.mark_running().expect("mark running");
        let dyn_log: Arc<dyn TopicLog> = log.clone();
        let storage_stop = Shutdown::new();
        let (flusher, flusher_task) = Flusher::spawn(
            dyn_log.clone(),
            FsyncMode::Batch,
            Duration::from_millis(10),
            storage_stop.clone(),
        );
        let replication =
            start_replication(&log, dyn_log.clone(), flusher, &cluster, announcer).await;
        let ctx = TopicContext {
            idle: Duration::from_secs(3600),
            log: dyn_log.clone(),
            replication: replication.clone(),
            retention: RetentionPolicy {
                max_messages: 1_000_000,
                max_age_ms: 24 * 3600 * 1000,
            },
            consumers: crate::config::ConsumersConfig::default(),
            topics: Arc::new(std::sync::OnceLock::new()),
            cluster: cluster.clone(),
        };
        let dlq_topics = ctx.topics.clone();
        let registry = TopicRegistry::default();
        let (topic_sup, topic_sup_task) =
            Actor::spawn(None, TopicSupervisor, (ctx, registry.clone(), policy))
                .await
                .expect("spawn topic supervisor");
        let (session_sup, session_sup_task) = Actor::spawn(None, SessionSupervisor, ())
            .await
            .expect("spawn session supervisor");
        let topics = Topics::new(
            topic_sup.clone(),
            registry.clone(),
            dyn_log,
            cluster.clone(),
            replication.clone(),
        );
        cluster.set_owners(ShardOwners::new(replication.clone()));
        let _ = dlq_topics.set(topics.clone());
        let rebalancer = follow_membership(topic_sup.clone(), &cluster, storage_stop.clone());
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
            replication,
            sessions,
            storage_stop,
            flusher_task,
            rebalancer,
            _dir: dir,
        }
    }

    /// Publishes JSON text `data`, expecting an ack.
    pub(super) async fn publish_ok(&self, topic: &TopicName, data: &str) -> u64 {
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
    pub(super) async fn session(&self) -> (ActorRef<SessionMsg>, Reader) {
        let outbound = Outbound::new(LimitsConfig::default().max_outbound_queue_bytes);
        let session = self
            .sessions
            .start(Transport::Ws, outbound.clone())
            .await
            .expect("start session");
        (session, Reader::new(outbound))
    }

    pub(super) fn topic_actor_id(&self, topic: &TopicName) -> Option<ractor::ActorId> {
        self.registry.get(topic).map(|h| h.actor.get_id())
    }

    /// Everything the log holds for `topic` in `from..=to`.
    pub(super) fn log_read(&self, topic: &TopicName, from: u64, to: u64) -> Vec<StoredMessage> {
        self.log
            .inner
            .read(topic.as_str(), from, to, usize::MAX, usize::MAX)
            .expect("log read")
    }

    /// Whether the Raft log of `topic`'s shard holds an entry (durable or not) that carries
    /// the bytes `data`.
    pub(super) fn raft_log_carries(&self, topic: &TopicName, data: &[u8]) -> bool {
        let shard = self.replication.shard_of(topic.as_str());
        let store = crate::replication::raft_store(&self.log.inner)
            .and_then(|store| store.shard(shard))
            .expect("raft store");
        let entries = store.entries(0, None).expect("raft log");
        entries
            .iter()
            .any(|(_, entry)| entry.windows(data.len()).any(|w| w == data))
    }

    /// Stops the tree in node order, then the flusher.
    pub(super) async fn stop(self) {
        self.session_sup
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.session_sup.stop(None);
        let _ = self.session_sup_task.await;
        self.replication.stop().await;
        self.topic_sup
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.topic_sup.stop(None);
        let _ = self.topic_sup_task.await;
        self.storage_stop.trigger();
        let _ = self.rebalancer.await;
        let _ = self.flusher_task.await;
    }
}

/// Subscribes `session` to `topic`, live only, and waits for the outcome.
pub(super) async fn subscribe_live(session: &ActorRef<SessionMsg>, topic: &TopicName) {
    subscribe_at(session, topic, Position::default()).await
}

/// Subscribes `session` to `topic` from `position`; panics unless it is accepted.
pub(super) async fn subscribe_at(
    session: &ActorRef<SessionMsg>,
    topic: &TopicName,
    position: Position,
) {
    let reply = session
        .call(
            |reply| SessionMsg::Subscribe {
                topic: topic.clone(),
                position,
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
pub(super) struct Got {
    pub(super) topic: String,
    pub(super) offset: u64,
    pub(super) data: serde_json::Value,
    pub(super) epoch: String,
    /// A consumer delivery's attempt.
    pub(super) attempt: Option<u64>,
    /// Pushed by the topic actor (live) rather than by a replay; shown in failure messages.
    #[allow(dead_code)]
    pub(super) live: bool,
}

/// Drains an outbound queue like a transport's writer, keeping the messages.
pub(super) struct Reader {
    pub(super) outbound: Arc<Outbound>,
    pub(super) got: Vec<Got>,
    pub(super) subscribed_frames: usize,
    /// Each announced subscription: its epoch and whether its position was honoured.
    pub(super) announced: Vec<(String, bool)>,
}

impl Reader {
    pub(super) fn new(outbound: Arc<Outbound>) -> Reader {
        Reader {
            outbound,
            got: Vec::new(),
            subscribed_frames: 0,
            announced: Vec::new(),
        }
    }

    pub(super) fn take(&mut self, frames: Vec<OutFrame>) {
        for frame in frames {
            match frame {
                OutFrame::Message(d) => self.got.push(parse(&d)),
                OutFrame::Subscribed(s) => {
                    self.subscribed_frames += 1;
                    self.announced
                        .push((s.epoch.to_string(), s.plan.recovered()));
                }
                OutFrame::Text(_) => {}
            }
        }
    }

    /// Takes what is queued now, without waiting.
    pub(super) fn drain_now(&mut self) {
        let mut frames = Vec::new();
        if let Some(Ok(())) =
            futures_util::FutureExt::now_or_never(self.outbound.drain(&mut frames))
        {
            self.take(frames);
        }
    }

    /// Offsets received on `topic`, in order.
    pub(super) fn offsets(&self, topic: &TopicName) -> Vec<u64> {
        self.got
            .iter()
            .filter(|g| g.topic == topic.as_str())
            .map(|g| g.offset)
            .collect()
    }

    /// Drains until `cond` holds; panics on a closed queue or timeout.
    pub(super) async fn wait_until(&mut self, what: &str, cond: impl Fn(&Reader) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !cond(self) {
            let mut frames = Vec::new();
            match tokio::time::timeout_at(deadline, self.outbound.drain(&mut frames)).await {
                Ok(Ok(())) => self.take(frames),
                Ok(Err(reason)) => panic!("outbound closed ({reason:?}) waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; got {:?}", self.got),
            }
        }
    }

    /// Drains until `topic`'s offset `offset` arrived; panics on a closed queue or timeout.
    pub(super) async fn wait_for_offset(&mut self, topic: &TopicName, offset: u64) {
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

pub(super) fn parse(d: &Delivery) -> Got {
    let v: serde_json::Value = serde_json::from_slice(&d.envelope).expect("envelope is JSON");
    assert_eq!(v["offset"].as_u64(), Some(d.offset), "envelope offset");
    Got {
        topic: d.topic.as_str().to_string(),
        offset: d.offset,
        data: v["data"].clone(),
        epoch: d.epoch.to_string(),
        attempt: v["attempt"].as_u64(),
        live: d.received.is_some(),
    }
}

/// Polls `cond` until it holds, or fails with `what`.
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn assert_running<M>(actor: &ActorRef<M>, what: &str) {
    assert_eq!(
        actor.get_status(),
        ActorStatus::Running,
        "{what} is not running"
    );
}

pub(super) fn topic(name: &str) -> TopicName {
    TopicName::parse(name).expect("valid topic name")
}
