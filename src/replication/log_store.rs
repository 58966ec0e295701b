//! openraft's `RaftLogStorage` for one shard, on the sled trees of
//! [`crate::storage::RaftShardStore`].
//!
//! Durability: `append` writes its entries, then hands openraft's callback to the node's one
//! [`Flusher`], which calls it once a flush covering them is done (group commit across every
//! shard and every topic). A vote is saved the same way, and `save_vote` returns only once it
//! is durable. Truncations and purges ride on the next flush: sled makes writes durable in
//! order, so a later append's flush covers an earlier truncation.
//!
//! A shard whose only member is this node (one configured node) keeps its entries in memory
//! instead ([`LogStore::in_memory`]): nobody else reads them, and its state machine is the
//! durable record: it answers an entry only once a flush covers the entry's writes (see
//! [`super::state_machine`]). Entries are held until applied and purged below the next
//! snapshot (taken every few entries, and only a position); after a crash the log starts
//! where the state machine's last durable write left it, and an entry that was not yet
//! durable there was never answered. Every message is then written once, not twice.

use super::codec;
use super::types::{LogId, RaftEntry, TypeConfig, Vote};
use crate::storage::flusher::Flusher;
use crate::storage::{RaftShardStore, StorageError};
use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// One shard's Raft log; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    shard: u32,
    store: RaftShardStore,
    flusher: Flusher,
    /// Set for a log kept in memory ([`LogStore::in_memory`]).
    memory: Option<Arc<Mutex<MemoryLog>>>,
}

/// The entries of a log kept in memory: appended and not yet purged.
#[derive(Default)]
struct MemoryLog {
    entries: BTreeMap<u64, RaftEntry>,
    purged: Option<LogId>,
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    pub fn new(shard: u32, store: RaftShardStore, flusher: Flusher) -> LogStore {
        LogStore {
            shard,
            store,
            flusher,
            memory: None,
        }
    }

    /// A log kept in memory, for a shard whose only member is this node: its state machine
    /// must answer entries only once they are durable there. The caller checks that a log
    /// on disk holds no entry the state machine has not applied (see [`LogStore::on_disk_past`]);
    /// its entries and records are removed. A stored vote is removed too when the state
    /// machine has no membership (`forget_vote`): the group was initialized but its first
    /// entry never reached the disk, so it must be initialized again.
    pub fn in_memory(
        shard: u32,
        store: RaftShardStore,
        flusher: Flusher,
        forget_vote: bool,
    ) -> Result<LogStore, StorageError> {
        store.remove_from(0)?;
        store.remove_meta(&[COMMITTED, PURGED])?;
        if forget_vote {
            store.remove_meta(&[VOTE])?;
        }
        Ok(LogStore {
            memory: Some(Arc::default()),
            ..LogStore::new(shard, store, flusher)
        })
    }

    /// Whether the log on disk of `store` holds an entry past `applied` (committed or not):
    /// then it must be replayed from there before the log can be kept in memory.
    pub fn on_disk_past(
        store: &RaftShardStore,
        applied: Option<u64>,
    ) -> Result<bool, StorageError> {
        Ok(match store.last_entry()? {
            Some((last, _)) => applied.is_none_or(|a| last > a),
            None => false,
        })
    }

    fn memory(&self) -> Option<std::sync::MutexGuard<'_, MemoryLog>> {
        self.memory
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        match self.store.meta(name).map_err(io_err)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(|e| {
                io_err(StorageError::Corrupt {
                    what: "raft",
                    detail: format!("shard {} meta {name}: {e}", self.shard),
                })
            })?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = codec::encode(value).map_err(io_err)?;
        self.store.put_meta(&[(name, &bytes)]).map_err(io_err)
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> io::Result<RaftEntry> {
        codec::decode(bytes).map_err(|e| {
            io_err(StorageError::Corrupt {
                what: "raft",
                detail: format!("shard {} log index {index}: {e}", self.shard),
            })
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, io::Error> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(memory) = self.memory() {
            let upto = to.map_or(Bound::Unbounded, Bound::Excluded);
            return Ok(memory
                .entries
                .range((Bound::Included(from), upto))
                .map(|(_, e)| e.clone())
                .collect());
        }
        let stored = self.store.entries(from, to).map_err(|e| {
            tracing::error!(shard = self.shard, error = %e, "raft log unreadable");
            io_err(e)
        })?;
        stored
            .iter()
            .map(|(index, bytes)| self.decode_entry(*index, bytes))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        if let Some(memory) = self.memory() {
            let last = memory.entries.values().next_back().map(|e| e.log_id());
            return Ok(LogState {
                last_purged_log_id: memory.purged,
                last_log_id: last.or(memory.purged),
            });
        }
        let purged: Option<LogId> = self.read_meta::<Option<LogId>>(PURGED)?.flatten();
        let last = match self.store.last_entry().map_err(io_err)? {
            Some((index, bytes)) => Some(self.decode_entry(index, &bytes)?.log_id()),
            None => purged,
        };
        // A crash between writing the purge mark and deleting the entries below it (after a
        // snapshot past the log's end) can leave entries below the mark: they are purged.
        let last = match (last, purged) {
            (Some(l), Some(p)) if l.index() < p.index() => Some(p),
            (l, _) => l,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(VOTE, vote)?;
        self.flusher.flushed().await.map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if self.memory.is_some() {
            return Ok(());
        }
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        // In memory, what was committed is what the state machine applied.
        if self.memory.is_some() {
            return Ok(None);
        }
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = RaftEntry> + Send,
        I::IntoIter: Send,
    {
        if let Some(mut memory) = self.memory() {
            memory
                .entries
                .extend(entries.into_iter().map(|e| (e.index(), e)));
            drop(memory);
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.index(), codec::encode(&entry).map_err(io_err)?));
        }
        self.store
            .put_entries(encoded.iter().map(|(i, b)| (*i, b.as_slice())))
            .map_err(io_err)?;
        self.flusher.after_flush(Box::new(move |r| {
            callback.io_completed(r.map_err(io_err));
        }));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        tracing::debug!(shard = self.shard, from, "raft log truncated");
        if let Some(mut memory) = self.memory() {
            memory.entries.split_off(&from);
            return Ok(());
        }
        self.store.remove_from(from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        if let Some(mut memory) = self.memory() {
            memory.entries = memory.entries.split_off(&(log_id.index() + 1));
            memory.purged = Some(log_id);
            return Ok(());
        }
        // The purge mark first: a crash between the two leaves entries below it, unused.
        self.write_meta(PURGED, &Some(log_id))?;
        self.store.remove_through(log_id.index()).map_err(io_err)
    }
}
