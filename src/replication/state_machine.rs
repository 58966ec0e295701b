//! openraft's `RaftStateMachine` for one shard: entries' ops applied through the node's
//! [`TopicLog`], and snapshots of the shard's topics.
//!
//! Apply never stops on a bad op: an op that fails (an `Append` with a gap, a missing topic)
//! is logged with the shard, index and topic and skipped, identically on every replica.
//! After an entry's ops, its log id (and the membership, if it changed) is recorded in the
//! shard's raft meta; a crash in between applies the entry again, which the ops tolerate
//! (see [`super::ops`]). Both ride on the next flush, in order (sled recovers a prefix of
//! its writes).
//!
//! A snapshot is every topic of the shard: meta, every retained message, consumers. It is
//! built on the state machine's own task (apply waits meanwhile), so it is exactly the state
//! at `last_applied`. The idempotency index is not in it: a replica that installs a snapshot
//! has not seen the publish ids of the entries it covers, so a publish retried against it
//! after a failover could be stored twice.

use super::codec;
use super::log_store::io_err;
use super::ops::{self, messages, Op};
use super::placement::topics_of;
use super::types::{LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::{RaftShardStore, StoredMessage, TopicLog};
use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use std::io;
use std::sync::Arc;

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
/// Messages read at a time while building a snapshot.
const READ_BATCH: usize = 1024;

/// One topic in a snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct TopicImage {
    name: String,
    epoch: String,
    first: u64,
    head: u64,
    #[serde(with = "messages")]
    messages: Vec<StoredMessage>,
    consumers: Vec<(String, Vec<u8>)>,
    /// The idempotency index: (publish id, offset, leader time), so a publish retried
    /// against a replica that caught up by snapshot is not stored twice.
    ids: Vec<(String, u64, u64)>,
}

/// One shard's state machine.
pub(crate) struct StateMachine {
    shard: u32,
    shards: u32,
    log: Arc<dyn TopicLog>,
    store: RaftShardStore,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// The last snapshot built or installed (in memory: rebuilt by openraft after a restart
    /// if the log was purged).
    current: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Closed when this instance is replaced: nothing is written after that.
    fence: Fence,
}

/// Lets a replaced instance's state machine write no more: openraft's `shutdown` does not
/// wait for the state machine's task, which finishes what it was given. Closing waits for
/// the entry being applied, then every later write fails.
#[derive(Clone, Default)]
pub(crate) struct Fence(Arc<std::sync::Mutex<bool>>);

impl Fence {
    /// Waits for a write in progress; after this, writes fail.
    pub fn close(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// Runs `write` unless the fence is closed (holding it closed meanwhile).
    fn guard<T>(&self, shard: u32, write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let closed = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *closed {
            return Err(io_err(format!("shard {shard}: this instance was replaced")));
        }
        write()
    }
}

/// The voters (of every config, during a change) of the membership this shard's state
/// machine last applied, if its record is there and intact.
pub(crate) fn stored_voters(store: &RaftShardStore) -> Option<Vec<NodeId>> {
    let bytes = store.meta(MEMBERSHIP).ok()??;
    let stored: StoredMembership = codec::decode(&bytes).ok()?;
    Some(stored.membership().voter_ids().collect())
}

impl StateMachine {
    /// Opens the state machine of `shard`, reading its applied position from `store`.
    pub fn open(
        shard: u32,
        shards: u32,
        log: Arc<dyn TopicLog>,
        store: RaftShardStore,
        fence: Fence,
    ) -> io::Result<StateMachine> {
        let read = |name: &str| -> io::Result<Option<Vec<u8>>> { store.meta(name).map_err(io_err) };
        let corrupt = |name: &str, e: bincode::error::DecodeError| {
            io_err(format!("shard {shard} meta {name} does not decode: {e}"))
        };
        let applied: Option<LogId> = match read(APPLIED)? {
            Some(b) => codec::decode(&b).map_err(|e| corrupt(APPLIED, e))?,
            None => None,
        };
        let membership = match read(MEMBERSHIP)? {
            Some(b) => codec::decode(&b).map_err(|e| corrupt(MEMBERSHIP, e))?,
            None => StoredMembership::default(),
        };
        Ok(StateMachine {
            shard,
            shards,
            log,
            store,
            applied,
            membership,
            current: None,
            fence,
        })
    }

    fn record_applied(&self) -> io::Result<()> {
        let applied = codec::encode(&self.applied).map_err(io_err)?;
        let membership = codec::encode(&self.membership).map_err(io_err)?;
        self.store
            .put_meta(&[(APPLIED, &applied), (MEMBERSHIP, &membership)])
            .map_err(io_err)
    }

    /// Applies `ops` of the entry at `index`; an op that does not fit this state is logged
    /// and skipped. A storage failure stops this replica of the shard (openraft's state
    /// machine fails): a copy that missed a write must never serve or lead.
    pub fn apply_ops(&self, index: u64, ops: &[Op]) -> io::Result<()> {
        let skipped = ops::apply_entry(ops, &*self.log).map_err(|e| {
            tracing::error!(shard = self.shard, index, error = %e, "storage failed applying an entry; this replica stops");
            io_err(e)
        })?;
        for (i, e) in skipped {
            let topic = ops.get(i).and_then(Op::topic).unwrap_or("");
            tracing::warn!(shard = self.shard, index, topic, error = %e, "replicated op skipped");
        }
        Ok(())
    }

    fn topics(&self) -> io::Result<Vec<String>> {
        topics_of(&*self.log, self.shard, self.shards).map_err(io_err)
    }

    /// The shard's state now (at `self.applied`), encoded.
    pub(super) fn image(&self) -> io::Result<Vec<u8>> {
        let mut images = Vec::new();
        for name in self.topics()? {
            let Some(meta) = self.log.meta(&name).map_err(io_err)? else {
                continue;
            };
            let mut messages = Vec::new();
            let mut from = meta.first;
            while from <= meta.head {
                let batch = self
                    .log
                    .read(&name, from, meta.head, READ_BATCH, usize::MAX)
                    .map_err(io_err)?;
                let Some(last) = batch.last().map(|m| m.offset) else {
                    break;
                };
                messages.extend(batch);
                from = last + 1;
            }
            let consumers = self.log.consumers(&name).map_err(io_err)?;
            let ids = self.log.remembered_ids(&name).map_err(io_err)?;
            images.push(TopicImage {
                ids,
                name,
                epoch: meta.epoch,
                first: meta.first,
                head: meta.head,
                messages,
                consumers,
            });
        }
        codec::encode(&images).map_err(io_err)
    }

    fn snapshot_now(&mut self) -> io::Result<Snapshot> {
        let data = Arc::new(self.image()?);
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        tracing::info!(shard = self.shard, bytes = data.len(), applied = ?meta.last_log_id, "snapshot built");
        self.current = Some((meta.clone(), Arc::clone(&data)));
        Ok(Snapshot {
            meta,
            snapshot: data.to_vec(),
        })
    }

    pub(super) fn install(&self, data: &[u8]) -> io::Result<()> {
        let images: Vec<TopicImage> = codec::decode(data).map_err(|e| {
            io_err(format!(
                "shard {} snapshot does not decode: {e}",
                self.shard
            ))
        })?;
        let mut installed = std::collections::BTreeSet::new();
        for image in images {
            let first = image.messages.first().map_or(image.head + 1, |m| m.offset);
            let name = &image.name;
            self.log
                .replace(name, &image.epoch, 0, first)
                .map_err(io_err)?;
            if !image.messages.is_empty() {
                self.log.append(name, &image.messages).map_err(io_err)?;
            }
            self.log.unseal(name).map_err(io_err)?;
            for (consumer, state) in &image.consumers {
                self.log
                    .save_consumer(name, consumer, state)
                    .map_err(io_err)?;
            }
            for (id, offset, time_ms) in &image.ids {
                self.log
                    .remember_id(name, id, *offset, *time_ms)
                    .map_err(io_err)?;
            }
            installed.insert(image.name);
        }
        for stale in self
            .topics()?
            .into_iter()
            .filter(|t| !installed.contains(t))
        {
            // Topics are never deleted through Raft, so this copy was never committed.
            tracing::warn!(
                shard = self.shard,
                topic = stale,
                "topic absent from the installed snapshot kept"
            );
        }
        Ok(())
    }
}

/// Hands out a snapshot built on the state machine's task.
pub(crate) struct Builder(Option<io::Result<Snapshot>>);

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.0
            .take()
            .unwrap_or_else(|| Err(io_err("snapshot builder used twice")))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index();
            let fence = self.fence.clone();
            fence.guard(self.shard, || {
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(data) => self.apply_ops(index, &data.ops)?,
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                self.applied = Some(entry.log_id);
                self.record_applied()
            })?;
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder(Some(self.snapshot_now()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        tracing::info!(shard = self.shard, bytes = snapshot.len(), last = ?meta.last_log_id, "installing snapshot");
        let fence = self.fence.clone();
        fence.guard(self.shard, || {
            self.install(&snapshot)?;
            self.applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            self.record_applied()
        })?;
        self.current = Some((meta.clone(), Arc::new(snapshot)));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.to_vec(),
        }))
    }
}
