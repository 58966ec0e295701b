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
//! A shard whose log is kept in memory (this node is its only member, see
//! [`super::log_store`]) has no durable log behind its writes: each entry is answered only
//! once a flush covers its writes (group commit, as the log's appends would be), and its
//! snapshots are only a position (they let the in-memory log be purged; nobody could ask
//! for their bytes).
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
use super::types::{Applied, LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::flusher::Flusher;
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
    /// Set when the shard's log is kept in memory: answers wait for this flusher.
    solo: Option<Flusher>,
    /// Set when a flush of applied writes failed (log kept in memory): the next apply fails,
    /// which stops the instance, as a failed append stops one whose log is on disk.
    unflushed: Arc<std::sync::atomic::AtomicBool>,
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
            solo: None,
            unflushed: Arc::default(),
        })
    }

    /// The shard's log is kept in memory: entries are answered only once `flusher` has
    /// made their writes durable, and snapshots are only a position.
    pub fn answer_after_flushes(&mut self, flusher: Flusher) {
        self.solo = Some(flusher);
    }

    /// The index of the last entry applied, as the record read at open says.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied.map(|l| l.index())
    }

    /// Whether a membership was ever applied (the group formed, and that reached the disk).
    pub fn formed(&self) -> bool {
        self.membership.log_id().is_some()
    }

    /// The record of the position applied (and the membership), as written after each entry.
    fn applied_records(&self) -> io::Result<AppliedRecords> {
        Ok(AppliedRecords {
            applied: codec::encode(&self.applied).map_err(io_err)?,
            membership: codec::encode(&self.membership).map_err(io_err)?,
        })
    }

    fn record_applied(&self) -> io::Result<()> {
        self.applied_records()?.write(&self.store)
    }

    /// Runs `writes` in order on the blocking pool (an entry's writes block their thread,
    /// and the node's other tasks share two workers), each behind the fence.
    async fn write(&self, writes: Vec<Write>) -> io::Result<Vec<Applied>> {
        let (shard, log, store) = (self.shard, Arc::clone(&self.log), self.store.clone());
        let fence = self.fence.clone();
        let job = move || {
            writes
                .iter()
                .map(|w| {
                    fence.guard(shard, || {
                        let applied = apply_ops(shard, &*log, w.index, &w.ops)?;
                        w.records.write(&store)?;
                        Ok(applied)
                    })
                })
                .collect()
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io_err(e)),
        }
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
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        if self.solo.is_some() {
            tracing::debug!(shard = self.shard, applied = ?meta.last_log_id, "snapshot position taken");
            return Ok(Snapshot {
                meta,
                snapshot: Vec::new(),
            });
        }
        let data = Arc::new(self.image()?);
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

/// An entry to apply: its ops, and the records written after them.
struct Write {
    index: u64,
    ops: Vec<Op>,
    records: AppliedRecords,
}

/// The encoded `applied` and `membership` records.
struct AppliedRecords {
    applied: Vec<u8>,
    membership: Vec<u8>,
}

impl AppliedRecords {
    fn write(&self, store: &RaftShardStore) -> io::Result<()> {
        store
            .put_meta(&[(APPLIED, &self.applied), (MEMBERSHIP, &self.membership)])
            .map_err(io_err)
    }
}

/// Applies `ops` of the entry at `index`; an op that does not fit this state is logged and
/// skipped. A storage failure stops this replica of the shard (openraft's state machine
/// fails): a copy that missed a write must never serve or lead.
fn apply_ops(shard: u32, log: &dyn TopicLog, index: u64, ops: &[Op]) -> io::Result<Applied> {
    let outcome = ops::apply_entry(ops, log).map_err(|e| {
        tracing::error!(shard, index, error = %e, "storage failed applying an entry; this replica stops");
        io_err(e)
    })?;
    for (i, e) in outcome.skipped {
        let topic = ops.get(i).and_then(Op::topic).unwrap_or("");
        tracing::warn!(shard, index, topic, error = %e, "replicated op skipped");
    }
    Ok(Applied {
        overtaken: outcome.overtaken,
    })
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
        if self.unflushed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io_err(format!(
                "shard {}: applied writes could not be flushed",
                self.shard
            )));
        }
        let (mut writes, mut responders) = (Vec::new(), Vec::new());
        while let Some((entry, responder)) = entries.try_next().await? {
            let ops = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(data) => data.ops,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            self.applied = Some(entry.log_id);
            writes.push(Write {
                index: entry.log_id.index(),
                ops,
                records: self.applied_records()?,
            });
            responders.push(responder);
        }
        // A failure stops this instance: what `applied` says no longer matters then.
        let outcomes = self.write(writes).await?;
        let answers = responders
            .into_iter()
            .zip(outcomes)
            .filter_map(|(r, applied)| Some((r?, applied)));
        match &self.solo {
            None => answers.for_each(|(r, applied)| r.send(applied)),
            Some(flusher) => {
                // Also with nobody to answer (a membership or blank entry): the sooner they
                // are on disk, the smaller the window a crash leaves.
                let (shard, answers): (u32, Vec<_>) = (self.shard, answers.collect());
                let unflushed = Arc::clone(&self.unflushed);
                flusher.after_flush(Box::new(move |flushed| match flushed {
                    Ok(()) => answers.into_iter().for_each(|(r, applied)| r.send(applied)),
                    // Dropped unanswered: the writes may not be durable.
                    Err(e) => {
                        unflushed.store(true, std::sync::atomic::Ordering::Release);
                        tracing::error!(shard, error = %e, "applied entries not made durable; the shard stops at its next entry");
                    }
                }));
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
