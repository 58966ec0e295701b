//! Three [`Replication`]s in one process, each with its own sled store and flusher, joined
//! by an in-memory [`RaftNet`] whose links can be cut. No sockets; waits poll a deadline.

use super::*;
use crate::config::FsyncMode;
use crate::shutdown::Shutdown;
use crate::storage::{SledOptions, StoredMessage, TopicMeta};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;
use tempfile::TempDir;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const SHARDS: u32 = 4;
const WAIT: Duration = Duration::from_secs(30);

/// The in-memory network: who is running, and which links are cut.
#[derive(Default)]
struct Mesh {
    nodes: Mutex<HashMap<String, Replication>>,
    cut: Mutex<HashSet<(String, String)>>,
    /// What each node announced, by node and key (gossip's stand-in).
    facts: Mutex<HashMap<(String, String), String>>,
    /// Stopped nodes: gossip marks them down, so their facts do not count.
    down: Mutex<HashSet<String>>,
}

impl Mesh {
    fn linked(&self, a: &str, b: &str) -> bool {
        let cut = self.cut.lock().expect("cut");
        !cut.contains(&(a.to_string(), b.to_string()))
    }

    /// Cuts `node` off from every other node, both ways.
    fn isolate(&self, node: &str) {
        let mut cut = self.cut.lock().expect("cut");
        for other in NODES.iter().filter(|n| **n != node) {
            cut.insert((node.to_string(), other.to_string()));
            cut.insert((other.to_string(), node.to_string()));
        }
    }

    fn heal(&self) {
        self.cut.lock().expect("cut").clear();
    }
}

struct MemNet {
    me: String,
    mesh: Arc<Mesh>,
}

#[async_trait::async_trait]
impl RaftNet for MemNet {
    async fn call(
        &self,
        node: &str,
        shard: u32,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let unreachable = || NetError::Unreachable(node.to_string());
        if !self.mesh.linked(&self.me, node) {
            return Err(unreachable());
        }
        let target = self.mesh.nodes.lock().expect("nodes").get(node).cloned();
        let target = target.ok_or_else(unreachable)?;
        let answer = tokio::time::timeout(timeout, target.serve(shard, request))
            .await
            .map_err(|_| unreachable())?;
        // A link cut meanwhile loses the answer.
        if !self.mesh.linked(node, &self.me) {
            return Err(unreachable());
        }
        Ok(answer)
    }

    fn fact(&self, node: &str, key: &str) -> Option<String> {
        if self.mesh.down.lock().expect("down").contains(node) {
            return None;
        }
        let facts = self.mesh.facts.lock().expect("facts");
        facts.get(&(node.to_string(), key.to_string())).cloned()
    }

    async fn announce(&self, key: &str, value: &str) {
        let mut facts = self.mesh.facts.lock().expect("facts");
        facts.insert((self.me.clone(), key.to_string()), value.to_string());
    }
}

use super::network::NetError;

#[path = "solo_tests.rs"]
mod solo;

struct Node {
    name: String,
    log: Arc<SledLog>,
    repl: Replication,
    shutdown: Shutdown,
}

fn settings(me: &str) -> ReplicationSettings {
    ReplicationSettings {
        me: me.to_string(),
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        shards: SHARDS,
        factor: 3,
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
    }
}

fn try_open_log(path: &Path) -> Option<SledLog> {
    let opts = SledOptions {
        dedupe_window_ms: 60_000,
        cache_bytes: 8 * 1024 * 1024,
    };
    SledLog::open(path, opts).ok()
}

fn open_log(path: &Path) -> SledLog {
    try_open_log(path).expect("open store")
}

/// The node's group-commit flusher of `log`, until `shutdown`.
fn group_commit(log: &Arc<dyn TopicLog>, shutdown: &Shutdown) -> Flusher {
    let (flusher, _task) = Flusher::spawn(
        Arc::clone(log),
        FsyncMode::Batch,
        Duration::from_millis(10),
        shutdown.clone(),
    );
    flusher
}

async fn start_node(name: &str, path: &Path, mesh: &Arc<Mesh>) -> Node {
    mesh.down.lock().expect("down").remove(name);
    // A stopped node's last tasks (openraft's state machine task among them) let go of
    // its store soon after the stop.
    let log = Arc::new(poll("the store to be free", || try_open_log(path)).await);
    let store = raft_store(&log).expect("raft store");
    let shutdown = Shutdown::new();
    let dyn_log: Arc<dyn TopicLog> = log.clone();
    let flusher = group_commit(&dyn_log, &shutdown);
    let net = Arc::new(MemNet {
        me: name.to_string(),
        mesh: Arc::clone(mesh),
    });
    let repl = Replication::start(settings(name), dyn_log, store, flusher, net)
        .await
        .expect("start replication");
    mesh.nodes
        .lock()
        .expect("nodes")
        .insert(name.to_string(), repl.clone());
    Node {
        name: name.to_string(),
        log,
        repl,
        shutdown,
    }
}

impl Node {
    /// Stops replication and the flusher and leaves the mesh.
    async fn stop(self, mesh: &Mesh) {
        self.repl.stop().await;
        mesh.nodes.lock().expect("nodes").remove(&self.name);
        mesh.down.lock().expect("down").insert(self.name.clone());
        self.shutdown.trigger();
    }
}

struct Cluster {
    mesh: Arc<Mesh>,
    dirs: Vec<TempDir>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_only(&NODES).await
    }

    /// Starts only `names` (together: a node with an empty store waits to hear from a
    /// majority); the others can be started later with `restart`.
    async fn start_only(names: &[&str]) -> Cluster {
        let mesh = Arc::new(Mesh::default());
        let dirs: Vec<TempDir> = NODES
            .iter()
            .map(|_| TempDir::new().expect("tempdir"))
            .collect();
        let started = NODES.iter().zip(&dirs).map(|(name, dir)| {
            let mesh = &mesh;
            async move {
                if names.contains(name) {
                    Some(start_node(name, dir.path(), mesh).await)
                } else {
                    None
                }
            }
        });
        let nodes = futures_util::future::join_all(started).await;
        Cluster { mesh, dirs, nodes }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .flatten()
            .find(|n| n.name == name)
            .expect("running node")
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    fn index(name: &str) -> usize {
        NODES.iter().position(|n| *n == name).expect("known node")
    }

    async fn stop(&mut self, name: &str) {
        if let Some(node) = self.nodes[Self::index(name)].take() {
            node.stop(&self.mesh).await;
        }
    }

    async fn restart(&mut self, name: &str) {
        let i = Self::index(name);
        let path = self.dirs[i].path().to_path_buf();
        self.nodes[i] = Some(start_node(name, &path, &self.mesh).await);
    }

    /// Restarts `name` (stopped) on an empty data directory.
    async fn restart_wiped(&mut self, name: &str) {
        let i = Self::index(name);
        self.dirs[i] = TempDir::new().expect("tempdir");
        self.restart(name).await;
    }

    /// Waits until every running node agrees on one leader of `shard`, and returns it.
    async fn agreed_leader(&self, shard: u32) -> String {
        poll(&format!("one leader of shard {shard}"), || {
            let seen: HashSet<Option<String>> =
                self.running().map(|n| n.repl.leader(shard)).collect();
            match seen.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(leader)] if self.running().any(|n| &n.name == leader) => Some(leader.clone()),
                _ => None,
            }
        })
        .await
    }

    /// Proposes on whichever node leads `shard`, retrying through elections.
    async fn propose(&self, shard: u32, ops: Vec<Op>) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.agreed_leader(shard).await;
            match self.node(&leader).repl.propose(shard, ops.clone()).await {
                Ok(()) => return leader,
                Err(e) => assert!(Instant::now() < deadline, "propose on {leader}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
async fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Dump = (
    Option<TopicMeta>,
    Vec<StoredMessage>,
    Vec<(String, Vec<u8>)>,
);

fn dump(log: &dyn TopicLog, topic: &str) -> Dump {
    let meta = log.meta(topic).expect("meta");
    let msgs = match &meta {
        Some(m) if m.head >= m.first => log
            .read(topic, m.first, m.head, usize::MAX, usize::MAX)
            .expect("read"),
        _ => Vec::new(),
    };
    (meta, msgs, log.consumers(topic).expect("consumers"))
}

fn msg(offset: u64, data: &str) -> StoredMessage {
    StoredMessage {
        offset,
        id: format!("id-{offset}"),
        time_ms: 1_000 + offset,
        data: bytes::Bytes::from(format!("\"{data}\"")),
    }
}

fn create(topic: &str) -> Op {
    Op::Create {
        topic: topic.into(),
        epoch: "e1".into(),
    }
}

fn append(topic: &str, msgs: Vec<StoredMessage>) -> Op {
    Op::Append {
        topic: topic.into(),
        msgs,
    }
}

fn save(topic: &str, name: &str, state: &[u8]) -> Op {
    Op::SaveConsumer {
        topic: topic.into(),
        name: name.into(),
        state: state.to_vec(),
    }
}

/// Waits until every running node stores the same `topic` as `like`, and returns it.
async fn converged(cluster: &Cluster, topic: &str, like: &Dump) {
    poll(&format!("{topic} on every node"), || {
        cluster
            .running()
            .all(|n| &dump(&*n.log, topic) == like)
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_elects_its_preferred_voter() {
    let cluster = Cluster::start().await;
    for shard in 0..SHARDS {
        let preferred = cluster.node("n1").repl.voters(shard)[0].clone();
        poll(
            &format!("shard {shard} led by {preferred} on every node"),
            || {
                cluster
                    .running()
                    .all(|n| n.repl.leader(shard).as_deref() == Some(preferred.as_str()))
                    .then_some(())
            },
        )
        .await;
        assert!(cluster.running().all(|n| n.repl.is_voter(shard)));
    }
    let leaders = cluster.node("n2").repl.leaders().borrow().clone();
    assert!(leaders.by_shard.iter().all(Option::is_some), "{leaders:?}");
    // Moved away (as after a failover), leadership comes back to the preferred voter.
    let voters = cluster.node("n1").repl.voters(0).to_vec();
    let (preferred, other) = (&voters[0], &voters[1]);
    let group = cluster.node(preferred).repl.group(0).expect("shard 0");
    group
        .raft
        .trigger()
        .transfer_leader(placement::replica_id(other, 0))
        .await
        .expect("transfer");
    poll(&format!("shard 0 led by {other}"), || {
        (cluster.node(other).repl.leader(0).as_ref() == Some(other)).then_some(())
    })
    .await;
    poll(&format!("shard 0 back on {preferred}"), || {
        cluster
            .running()
            .all(|n| n.repl.leader(0).as_ref() == Some(preferred))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposed_ops_are_applied_on_every_replica() {
    let cluster = Cluster::start().await;
    let topic = "orders";
    let shard = cluster.node("n1").repl.shard_of(topic);
    // Every voter initializes a new group, so the first leader may be any of them; wait for
    // the preferred one, where leadership then stays.
    let preferred = cluster.node("n1").repl.voters(shard)[0].clone();
    poll(&format!("shard {shard} led by {preferred}"), || {
        cluster
            .running()
            .all(|n| n.repl.leader(shard).as_ref() == Some(&preferred))
            .then_some(())
    })
    .await;
    let leader = cluster.agreed_leader(shard).await;
    let ops = vec![
        create(topic),
        append(topic, vec![msg(1, "a"), msg(2, "b"), msg(3, "c")]),
        save(topic, "workers", b"window-1"),
        save(topic, "audit", b"window-2"),
        Op::DeleteConsumer {
            topic: topic.into(),
            name: "audit".into(),
        },
    ];
    cluster.propose(shard, ops).await;
    let on_leader = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(
        on_leader.0.as_ref().map(|m| (m.first, m.head)),
        Some((1, 3))
    );
    assert_eq!(on_leader.1, vec![msg(1, "a"), msg(2, "b"), msg(3, "c")]);
    assert_eq!(
        on_leader.2,
        vec![("workers".to_string(), b"window-1".to_vec())]
    );
    converged(&cluster, topic, &on_leader).await;
    // A follower refuses at once and names the leader.
    let follower = cluster
        .running()
        .find(|n| n.name != leader)
        .expect("a follower");
    match follower.repl.propose(shard, vec![create("other")]).await {
        Err(ProposeError::NotLeader { leader: named }) => assert_eq!(named, Some(leader.clone())),
        other => panic!("a follower accepted a proposal: {other:?}"),
    }
    assert!(cluster
        .node(&leader)
        .repl
        .lead_ready(shard, WAIT)
        .await
        .is_ok());
    assert!(matches!(
        follower
            .repl
            .lead_ready(shard, Duration::from_millis(100))
            .await,
        Err(ProposeError::NotLeader { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_leader_moves_leadership_and_keeps_the_data() {
    let mut cluster = Cluster::start().await;
    let topic = "moving";
    let shard = cluster.node("n1").repl.shard_of(topic);
    let old = cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    cluster.stop(&old).await;
    let new = cluster.agreed_leader(shard).await;
    assert_ne!(new, old);
    cluster
        .node(&new)
        .repl
        .lead_ready(shard, WAIT)
        .await
        .expect("new leader ready");
    cluster
        .propose(shard, vec![append(topic, vec![msg(2, "b")])])
        .await;
    let want = dump(&*cluster.node(&new).log, topic);
    assert_eq!(want.1, vec![msg(1, "a"), msg(2, "b")]);
    converged(&cluster, topic, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_never_acknowledges_and_catches_up_after_heal() {
    let cluster = Cluster::start().await;
    let topic = "split";
    let shard = cluster.node("n1").repl.shard_of(topic);
    let cut = cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    cluster.mesh.isolate(&cut);
    let minority = cluster
        .node(&cut)
        .repl
        .propose(shard, vec![append(topic, vec![msg(2, "minority")])]);
    let majority = async {
        // The other two elect a leader among themselves and keep committing.
        let deadline = Instant::now() + WAIT;
        loop {
            for n in cluster.running().filter(|n| n.name != cut) {
                if n.repl
                    .propose(shard, vec![append(topic, vec![msg(2, "majority")])])
                    .await
                    .is_ok()
                {
                    return n.name.clone();
                }
            }
            assert!(Instant::now() < deadline, "the majority never committed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (minority, new_leader) = tokio::join!(minority, majority);
    assert!(
        matches!(
            minority,
            Err(ProposeError::NotLeader { .. } | ProposeError::Unavailable(_))
        ),
        "the cut-off node acknowledged: {minority:?}"
    );
    assert!(cluster
        .node(&cut)
        .repl
        .propose(shard, vec![save(topic, "late", b"x")])
        .await
        .is_err());
    cluster.mesh.heal();
    let want = dump(&*cluster.node(&new_leader).log, topic);
    assert_eq!(want.1, vec![msg(1, "a"), msg(2, "majority")]);
    converged(&cluster, topic, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_from_its_own_data() {
    let mut cluster = Cluster::start().await;
    let topic = "restart";
    let shard = cluster.node("n1").repl.shard_of(topic);
    cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    converged(&cluster, topic, &want).await;
    let down = NODES
        .iter()
        .find(|n| **n != leader)
        .expect("a follower")
        .to_string();
    cluster.stop(&down).await;
    for i in 2..=5 {
        cluster
            .propose(shard, vec![append(topic, vec![msg(i, "x")])])
            .await;
    }
    cluster
        .propose(shard, vec![save(topic, "workers", b"after")])
        .await;
    // The stopped node's store is released once its tasks are gone.
    let i = Cluster::index(&down);
    let path = cluster.dirs[i].path().to_path_buf();
    poll("the store to be released", || {
        sled::Config::new().path(&path).open().ok().map(drop)
    })
    .await;
    cluster.restart(&down).await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(want.0.as_ref().map(|m| m.head), Some(5));
    converged(&cluster, topic, &want).await;
}

#[test]
fn applying_an_entry_twice_leaves_the_same_state() {
    let once = TempDir::new().expect("tempdir");
    let twice = TempDir::new().expect("tempdir");
    let (a, b) = (open_log(once.path()), open_log(twice.path()));
    let t = "idem";
    let entry = vec![
        create(t),
        append(t, (1..=20).map(|i| msg(i, "m")).collect()),
        // A gap: skipped without stopping the entry.
        append(t, vec![msg(40, "gap")]),
        // Remembered only where the offset holds that id's message.
        Op::RememberIds {
            topic: t.into(),
            ids: vec![("id-3".into(), 3), ("not-there".into(), 4)],
            time_ms: 1_010,
        },
        save(t, "c", b"s1"),
        Op::Retention {
            topic: t.into(),
            max_messages: 10,
            max_age_ms: 1_000_000,
            now_ms: 2_000,
        },
        append(t, vec![msg(21, "n")]),
    ];
    let apply = |log: &SledLog| {
        let outcome = ops::apply_entry(&entry, log).expect("no storage failure");
        let failed = &outcome.skipped;
        assert!(
            failed.iter().all(|(i, _)| *i == 2),
            "only the gap fails: {failed:?}"
        );
        assert!(outcome.overtaken, "the gap's message was not written");
    };
    apply(&a);
    apply(&b);
    apply(&b);
    assert_eq!(dump(&a, t), dump(&b, t));
    let (meta, msgs, consumers) = dump(&b, t);
    assert_eq!(meta.map(|m| m.head), Some(21));
    assert_eq!(msgs.len(), 11, "retention kept 10, then one more");
    assert_eq!(consumers.len(), 1);
    assert_eq!(b.lookup_id(t, "id-3", 1_020).expect("lookup"), Some(3));
    assert_eq!(b.lookup_id(t, "not-there", 1_020).expect("lookup"), None);
}

#[test]
fn a_snapshot_installs_the_same_topics() {
    let src_dir = TempDir::new().expect("tempdir");
    let dst_dir = TempDir::new().expect("tempdir");
    let src = Arc::new(open_log(src_dir.path()));
    let dst = Arc::new(open_log(dst_dir.path()));
    let topics: Vec<String> = (0..12).map(|i| format!("snap-{i}")).collect();
    for t in &topics {
        for op in [
            create(t),
            append(t, (1..=40).map(|i| msg(i, t)).collect()),
            save(t, "c", t.as_bytes()),
            Op::Retention {
                topic: t.clone(),
                max_messages: 25,
                max_age_ms: 1_000_000,
                now_ms: 2_000,
            },
            Op::RememberIds {
                topic: t.clone(),
                ids: vec![("id-39".to_string(), 39), ("id-40".to_string(), 40)],
                time_ms: 2_000,
            },
        ] {
            op.apply(&*src).expect("apply");
        }
    }
    // The destination has a stale copy of one topic: the snapshot replaces it.
    create(&topics[0]).apply(&*dst).expect("apply");
    append(&topics[0], vec![msg(1, "stale")])
        .apply(&*dst)
        .expect("apply");
    let shard = placement::shard_of(&topics[0], 2);
    let sm = |log: &Arc<SledLog>| {
        let store = raft_store(log)
            .expect("raft store")
            .shard(shard)
            .expect("shard");
        state_machine::StateMachine::open(shard, 2, log.clone(), store, Default::default())
            .expect("sm")
    };
    let image = sm(&src).image().expect("image");
    sm(&dst).install(&image).expect("install");
    for t in &topics {
        if placement::shard_of(t, 2) == shard {
            assert_eq!(dump(&*dst, t), dump(&*src, t), "{t}");
            assert_eq!(dump(&*dst, t).1.len(), 25);
            // The idempotency index came along: a retried publish is recognised.
            for (id, offset) in [("id-39", 39), ("id-40", 40)] {
                assert_eq!(dst.lookup_id(t, id, 2_500).expect("lookup"), Some(offset));
            }
            assert_eq!(dst.lookup_id(t, "never", 2_500).expect("lookup"), None);
        } else {
            assert_eq!(dst.meta(t).expect("meta"), None, "{t} is in another shard");
        }
    }
}

/// The Raft id of `node`'s replica of `shard`.
fn replica(node: &Node, shard: u32) -> u64 {
    *node.repl.group(shard).expect("shard").raft.node_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_as_a_new_replica_and_the_group_survives_another_loss() {
    let mut cluster = Cluster::start().await;
    let topic = "wiped";
    let shard = cluster.node("n1").repl.shard_of(topic);
    cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let wiped = NODES
        .iter()
        .find(|n| **n != leader)
        .expect("a follower")
        .to_string();
    let old = replica(cluster.node(&wiped), shard);
    assert_eq!(
        old,
        placement::replica_id(&wiped, 0),
        "formed as incarnation 0"
    );
    cluster.stop(&wiped).await;
    cluster
        .propose(shard, vec![append(topic, vec![msg(2, "b")])])
        .await;

    cluster.restart_wiped(&wiped).await;
    let new = replica(cluster.node(&wiped), shard);
    assert_ne!(
        new, old,
        "an empty store never answers as the replica it was"
    );
    for i in 3..=4 {
        cluster
            .propose(shard, vec![append(topic, vec![msg(i, "c")])])
            .await;
    }
    // Every shard's leader puts the new replica in the old one's place.
    for s in 0..SHARDS {
        let new = replica(cluster.node(&wiped), s);
        poll(&format!("shard {s}: {wiped}'s new replica a voter"), || {
            let leader = cluster.running().find(|n| {
                n.repl
                    .group(s)
                    .expect("shard")
                    .raft
                    .metrics()
                    .borrow_watched()
                    .state
                    == ServerState::Leader
            })?;
            let m = leader
                .repl
                .group(s)
                .expect("shard")
                .raft
                .metrics()
                .borrow_watched()
                .clone();
            let members = m.membership_config.membership();
            let voters: HashSet<u64> = members.voter_ids().collect();
            let ids: HashSet<u64> = members.nodes().map(|(id, _)| *id).collect();
            (voters.contains(&new) && voters.len() == 3 && !ids.contains(&old)).then_some(())
        })
        .await;
    }
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(want.0.as_ref().map(|m| m.head), Some(4));
    converged(&cluster, topic, &want).await;

    // Another node goes: the wiped node and the last original one are a majority.
    let other = NODES
        .iter()
        .find(|n| **n != wiped && **n != leader)
        .expect("a third node")
        .to_string();
    let victim = if leader != wiped {
        leader.clone()
    } else {
        other
    };
    cluster.stop(&victim).await;
    cluster
        .propose(shard, vec![append(topic, vec![msg(5, "d")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(want.0.as_ref().map(|m| m.head), Some(5));
    assert_eq!(want.1.len(), 5, "every message kept: {:?}", want.1);
    converged(&cluster, topic, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_stands_in_for_the_replica_it_was() {
    let mut cluster = Cluster::start().await;
    let topic = "stand-in";
    let shard = cluster.node("n1").repl.shard_of(topic);
    cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let mut followers = NODES
        .iter()
        .filter(|n| **n != leader)
        .map(|n| n.to_string());
    let (lagging, wiped) = (
        followers.next().expect("a follower"),
        followers.next().expect("another follower"),
    );
    // Offset 2 commits on the leader and `wiped`, not on `lagging`.
    cluster.mesh.isolate(&lagging);
    cluster
        .propose(shard, vec![append(topic, vec![msg(2, "b")])])
        .await;
    // Both replicas that hold it go: the leader stops, `wiped` comes back empty.
    cluster.stop(&leader).await;
    cluster.stop(&wiped).await;
    cluster.restart_wiped(&wiped).await;
    cluster.mesh.heal();
    // `lagging` and the wiped node are two nodes of three, but the wiped node is a new
    // replica and refuses to vote as its old one: no leader may be elected, or offset 2
    // (acknowledged) would be lost. Watched for 6 election timeouts.
    let until = Instant::now() + Duration::from_millis(6 * settings("n1").election_max_ms);
    while Instant::now() < until {
        for n in cluster.running() {
            let m = n
                .repl
                .group(shard)
                .expect("shard")
                .raft
                .metrics()
                .borrow_watched()
                .clone();
            assert_ne!(
                m.state,
                ServerState::Leader,
                "{} leads shard {shard} without the replicas that hold offset 2",
                n.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old leader returns: offset 2 is there, on every node.
    cluster.restart(&leader).await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(want.0.as_ref().map(|m| m.head), Some(2), "{want:?}");
    converged(&cluster, topic, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_ran_joins_a_formed_cluster_as_incarnation_0() {
    let mut cluster = Cluster::start_only(&["n1", "n2"]).await;
    let topic = "late";
    let shard = cluster.node("n1").repl.shard_of(topic);
    cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    // n3 was never seen by anyone: it is no wiped node, and takes the id it was formed with.
    cluster.restart("n3").await;
    for s in 0..SHARDS {
        assert_eq!(
            replica(cluster.node("n3"), s),
            placement::replica_id("n3", 0),
            "shard {s}"
        );
    }
    cluster
        .propose(shard, vec![append(topic, vec![msg(2, "b")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    converged(&cluster, topic, &want).await;
    // Now the others have seen it: wiped, it comes back as a new replica.
    cluster.stop("n3").await;
    cluster.restart_wiped("n3").await;
    assert_ne!(
        replica(cluster.node("n3"), shard),
        placement::replica_id("n3", 0)
    );
}

#[tokio::test]
async fn a_store_from_before_incarnations_has_seen_every_other_node() {
    let dir = TempDir::new().expect("tempdir");
    let log = open_log(dir.path());
    let store = raft_store(&log).expect("raft store");
    let me = settings("n2");
    // Raft state, no incarnation: written by a version without them.
    store
        .shard(0)
        .expect("shard")
        .put_meta(&[("vote", b"v")])
        .expect("put");
    identity::upgrade(&me, &store).await.expect("upgrade");
    assert_eq!(store.seen().expect("seen"), vec!["n1", "n3"]);
    // Anything else is left alone: an empty store, or one with an incarnation.
    let fresh_dir = TempDir::new().expect("tempdir");
    let fresh = raft_store(&open_log(fresh_dir.path())).expect("raft store");
    identity::upgrade(&me, &fresh).await.expect("upgrade");
    assert!(fresh.seen().expect("seen").is_empty());
    store.set_seen(&[]).expect("reset");
    store.set_incarnation(0).expect("incarnation");
    identity::upgrade(&me, &store).await.expect("upgrade");
    assert!(store.seen().expect("seen").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_cut_short_by_a_crash_is_finished_before_the_shard_starts() {
    let mut cluster = Cluster::start().await;
    let topic = "dropped";
    let shard = cluster.node("n1").repl.shard_of(topic);
    let other = (shard + 1) % SHARDS;
    cluster
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let f = NODES
        .iter()
        .find(|n| **n != leader)
        .expect("a follower")
        .to_string();
    let want = dump(&*cluster.node(&leader).log, topic);
    converged(&cluster, topic, &want).await;
    let kept = replica(cluster.node(&f), other);
    // A drop of f's copy of the shard got as far as recording itself, then the node died.
    {
        let log = &cluster.node(&f).log;
        let store = raft_store(log).expect("raft store");
        let s = store.shard(shard).expect("shard");
        s.begin_drop(77, 0, false).expect("begin");
        log.flush().expect("flush");
    }
    cluster.stop(&f).await;
    cluster.restart(&f).await;
    let node = cluster.node(&f);
    let store = raft_store(&node.log).expect("raft store");
    assert!(
        !store.shard(shard).expect("shard").dropping().expect("read"),
        "the drop was finished"
    );
    assert_eq!(replica(node, shard), placement::replica_id(&f, 77));
    assert_eq!(replica(node, other), kept, "no other shard is touched");
    // The leader catches the new replica up.
    cluster
        .propose(shard, vec![append(topic, vec![msg(2, "b")])])
        .await;
    let leader = cluster.agreed_leader(shard).await;
    let want = dump(&*cluster.node(&leader).log, topic);
    assert_eq!(want.1.len(), 2);
    converged(&cluster, topic, &want).await;
}

#[tokio::test]
async fn a_replaced_instances_state_machine_writes_nothing_once_its_fence_is_closed() {
    use openraft::storage::RaftStateMachine;
    let src_dir = TempDir::new().expect("tempdir");
    let dst_dir = TempDir::new().expect("tempdir");
    let src = Arc::new(open_log(src_dir.path()));
    let dst = Arc::new(open_log(dst_dir.path()));
    let topic = "fenced";
    create(topic).apply(&*src).expect("apply");
    append(topic, vec![msg(1, "a")])
        .apply(&*src)
        .expect("apply");
    let shard = placement::shard_of(topic, 2);
    let fence = state_machine::Fence::default();
    let sm = |log: &Arc<SledLog>, fence: state_machine::Fence| {
        let store = raft_store(log)
            .expect("raft store")
            .shard(shard)
            .expect("shard");
        state_machine::StateMachine::open(shard, 2, log.clone(), store, fence).expect("sm")
    };
    let image = sm(&src, Default::default()).image().expect("image");
    let mut dst_sm = sm(&dst, fence.clone());
    fence.close();
    let meta = types::SnapshotMeta {
        last_log_id: None,
        last_membership: Default::default(),
    };
    let refused = dst_sm.install_snapshot(&meta, image.clone()).await;
    assert!(refused.is_err(), "a closed fence lets nothing in");
    assert_eq!(dst.meta(topic).expect("meta"), None, "nothing was written");
    // An open one does (the same call).
    let mut open_sm = sm(&dst, Default::default());
    open_sm
        .install_snapshot(&meta, image)
        .await
        .expect("install");
    assert_eq!(dump(&*dst, topic), dump(&*src, topic));
}
