//! openraft's `RaftLogStorage` for one shard, on the sled trees of
//! [`crate::storage::RaftShardStore`].
//!
//! Durability: `append` writes its entries, then hands openraft's callback to the node's one
//! [`Flusher`], which calls it once a flush covering them is done (group commit across every
//! shard and every topic). A vote is saved the same way, and `save_vote` returns only once it
//! is durable. Truncations and purges ride on the next flush: sled makes writes durable in
//! order, so a later append's flush covers an earlier truncation.

use super::codec;
use super::types::{LogId, RaftEntry, TypeConfig, Vote};
use crate::storage::flusher::Flusher;
use crate::storage::{RaftShardStore, StorageError};
use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// One shard's Raft log; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    shard: u32,
    store: RaftShardStore,
    flusher: Flusher,
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
        }
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

    /// Resolves once every write so far is durable.
    async fn flushed(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher.after_flush(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(e)),
            Err(_) => Err(io_err("the flusher stopped")),
        }
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
        self.flushed().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
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
        self.store.remove_from(from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge mark first: a crash between the two leaves entries below it, unused.
        self.write_meta(PURGED, &Some(log_id))?;
        self.store.remove_through(log_id.index()).map_err(io_err)
    }
}
