//! A node configured alone: its shards keep their Raft log in memory, each message is
//! written once (into its topic), and an entry is answered only once that write is durable.

use super::*;
use crate::storage::testing::{Faults, HookedLog};
use std::sync::Condvar;

/// Flushes wait while the gate is held.
#[derive(Default)]
struct Gate {
    held: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set(&self, held: bool) {
        *self.held.lock().expect("gate") = held;
        self.opened.notify_all();
    }
}

impl Faults for Arc<Gate> {
    fn flush(&self, flush: &dyn Fn() -> Result<(), StorageError>) -> Result<(), StorageError> {
        let mut held = self.held.lock().expect("gate");
        while *held {
            held = self.opened.wait(held).expect("gate");
        }
        drop(held);
        flush()
    }
}

/// Opens the gate when dropped, so a failing test never leaves a flush blocked.
struct Reopen(Arc<Gate>);

impl Drop for Reopen {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

struct Solo {
    log: Arc<HookedLog<Arc<Gate>>>,
    store: RaftStore,
    repl: Replication,
    shutdown: Shutdown,
}

async fn start_solo(path: &Path, gate: &Arc<Gate>) -> Solo {
    let inner = poll("the store to be free", || try_open_log(path)).await;
    let store = raft_store(&inner).expect("raft store");
    let log = Arc::new(HookedLog {
        inner,
        faults: Arc::clone(gate),
    });
    let shutdown = Shutdown::new();
    let dyn_log: Arc<dyn TopicLog> = log.clone();
    let flusher = group_commit(&dyn_log, &shutdown);
    let net = Arc::new(MemNet {
        me: "solo".into(),
        mesh: Arc::default(),
    });
    let settings = ReplicationSettings {
        nodes: vec!["solo".into()],
        ..settings("solo")
    };
    let repl = Replication::start(settings, dyn_log, store.clone(), flusher, net)
        .await
        .expect("start replication");
    Solo {
        log,
        store,
        repl,
        shutdown,
    }
}

impl Solo {
    async fn led(&self, shard: u32) {
        poll("the lone node to lead", || {
            (self.repl.leader(shard).as_deref() == Some("solo")).then_some(())
        })
        .await;
    }

    fn head(&self, topic: &str) -> Option<u64> {
        dump(&*self.log, topic).0.map(|m| m.head)
    }

    fn log_on_disk(&self, shard: u32) -> Option<u64> {
        let shard = self.store.shard(shard).expect("shard");
        shard.last_entry().expect("read").map(|(index, _)| index)
    }

    async fn stop(self) {
        self.repl.stop().await;
        self.shutdown.trigger();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_writes_each_message_once_and_answers_and_leads_only_once_it_is_durable() {
    let dir = TempDir::new().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let _reopen = Reopen(Arc::clone(&gate));
    let node = start_solo(dir.path(), &gate).await;
    let topic = "alone";
    let shard = node.repl.shard_of(topic);
    node.led(shard).await;
    node.repl
        .propose(shard, vec![create(topic), append(topic, vec![msg(1, "a")])])
        .await
        .expect("first publish");
    assert_eq!(node.head(topic), Some(1));
    assert_eq!(node.log_on_disk(shard), None, "no Raft entry on disk");

    gate.set(true);
    let repl = node.repl.clone();
    let second = tokio::spawn(async move {
        repl.propose(shard, vec![append(topic, vec![msg(2, "b")])])
            .await
    });
    poll("the second message to be applied", || {
        (node.head(topic) == Some(2)).then_some(())
    })
    .await;
    assert!(
        !second.is_finished(),
        "answered while its write was not yet flushed"
    );
    // A topic actor that starts now reads its topic only once what was applied is flushed
    // (else it could serve, or answer as a duplicate, a write a crash then takes back).
    let repl = node.repl.clone();
    let mut ready = tokio::spawn(async move { repl.lead_ready(shard, WAIT).await });
    // Without the wait it resolves at once: the message is applied.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut ready)
            .await
            .is_err(),
        "ready to lead while what it applied was not flushed"
    );
    gate.set(false);
    ready.await.expect("task").expect("ready");
    second.await.expect("task").expect("second publish");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_keeps_a_bounded_log_and_restarts_from_its_topics() {
    let dir = TempDir::new().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let node = start_solo(dir.path(), &gate).await;
    let topic = "restarted";
    let shard = node.repl.shard_of(topic);
    node.led(shard).await;
    node.repl
        .propose(shard, vec![create(topic)])
        .await
        .expect("create");
    let entries = 200;
    for i in 1..=entries {
        node.repl
            .propose(shard, vec![append(topic, vec![msg(i, "m")])])
            .await
            .expect("publish");
    }
    let group = node.repl.group(shard).expect("group");
    let purged = poll("the in-memory log to be purged", || {
        let m = group.raft.metrics().borrow_watched().clone();
        m.purged.filter(|p| p.index() + 2 * 64 >= entries)
    })
    .await;
    assert!(purged.index() > 0);
    drop(group);
    node.stop().await;

    let node = start_solo(dir.path(), &gate).await;
    node.led(shard).await;
    assert_eq!(node.head(topic), Some(entries), "every message kept");
    node.repl
        .propose(shard, vec![append(topic, vec![msg(entries + 1, "after")])])
        .await
        .expect("publish after the restart");
    assert_eq!(node.head(topic), Some(entries + 1));
    assert_eq!(node.log_on_disk(shard), None);
    node.stop().await;
}

/// A crash after the group formed but before its first entry reached the disk leaves a vote
/// without a membership: the shard is formed again rather than never electing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_whose_membership_never_reached_the_disk_forms_its_shards_again() {
    let dir = TempDir::new().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let node = start_solo(dir.path(), &gate).await;
    let shard = node.repl.shard_of("formed");
    node.led(shard).await;
    let store = node.store.clone();
    node.stop().await;
    let records = store.shard(shard).expect("shard");
    assert!(records.meta("vote").expect("read").is_some());
    records
        .remove_meta(&["membership", "applied"])
        .expect("remove");
    drop((records, store));

    let node = start_solo(dir.path(), &gate).await;
    node.led(shard).await;
    node.repl
        .propose(
            shard,
            vec![create("formed"), append("formed", vec![msg(1, "a")])],
        )
        .await
        .expect("publish");
    assert_eq!(node.head("formed"), Some(1));
    node.stop().await;
}
