//! Storage: the per-topic message log behind the [`TopicLog`] trait.
//!
//! Layout (sled 0.34.7, one database per node at `data_dir/<node id>`):
//! - tree `meta`: topic name -> bincode `MetaRecord` (epoch, first retained offset); key
//!   `\0stripes`: the number of message trees (u32 big-endian), fixed when the store is
//!   created;
//! - trees `msgs:<stripe>`, a fixed number of them (16 for a new store): a topic's chunks
//!   are all in tree `stable_hash(topic) % stripes` (placement's hash), key = topic, 0x00,
//!   the chunk's first offset (u64 big-endian; no topic name contains 0x00, so one topic's
//!   keys are exactly those between `topic\0` and `topic\x01`), value = the CRC-32 of the
//!   rest (4 bytes, big-endian), then bincode `Vec<StoredRecord>`: up to 256 consecutive
//!   messages (or 256 KiB) of one append. A chunk whose checksum does not match or that
//!   does not decode is [`StorageError::Corrupt`] and never served. Retention deletes the
//!   chunks wholly below `first` in one sled batch, never the one holding the head. The
//!   number of trees does not grow with topics: sled rewrites its list of trees on every new
//!   tree, so a tree per topic made disk use grow with the square of the topic count;
//! - trees `seg:<topic>:<start>` of the previous layout (a tree per segment of offsets) are
//!   copied into the message trees and dropped at open, idempotently (see `sled_migrate.rs`);
//! - trees `dedupe:<bucket>`: idempotency index, key = topic, 0x00, id; value = offset and
//!   time; a bucket spans one dedupe window and is dropped two windows later;
//! - tree `consumers`: topic, 0x00, consumer name -> the consumer window's snapshot;
//! - key `\0running` in `meta` (no topic name starts with NUL): present while a node runs,
//!   removed on a clean shutdown;
//! - key `\0mark` in `meta` and the file [`store_mark::MARK_FILE`] beside sled's files: the
//!   store mark, which detects a store that lost durable writes (see [`store_mark`]).
//!
//! Opening refuses a damaged directory with [`StorageError::Damaged`], naming it: sled's
//! own errors, its panics on some corrupt files (caught, see [`quiet_panic`]), a meta record
//! that does not decode, messages of a topic without a meta record or in the wrong message
//! tree, message trees that do not match the stored count, and a store mark behind its file.
//! A topic whose last chunk (read, checksum and all, to find its head) is corrupt does not
//! stop the opening: its copy is reported damaged ([`damage`]), like every chunk found
//! corrupt later, and the replication layer replaces it from another replica (or refuses
//! to start where no other replica exists).
//!
//! Appends are visible to readers at once but durable only after [`TopicLog::flush`]; the
//! [`flusher::Flusher`] task is the only caller of `flush` (concurrent flushes deadlock sled
//! 0.34, sled #1308) and group-commits every append that arrived before it started.

pub mod blocking;
pub mod damage;
pub mod flusher;
// Measurements, not tests: built only by bench/storage-layout.sh (`--cfg starling_bench`).
#[cfg(all(test, starling_bench))]
mod layout_bench;
mod quiet_panic;
pub mod raft_store;
pub mod retention;
mod sled_codec;
mod sled_log;
mod store_mark;
#[cfg(test)]
pub(crate) mod testing;

pub use damage::{Damage, Damaged};
pub use raft_store::{RaftShardStore, RaftStore};
pub use sled_log::{SledLog, SledOptions};

use bytes::Bytes;

/// Errors from the storage layer. They never carry client input back to clients.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine: {0}")]
    Sled(#[from] sled::Error),
    /// The data directory could not be opened (permissions, in use by another process).
    #[error("cannot open the data directory {path}: {source}")]
    Open { path: String, source: sled::Error },
    /// The data directory's contents are corrupt or incomplete: nothing was served from it.
    #[error("the data directory {path} is damaged ({detail}): restore it from a backup, or move it away to start this node with empty storage")]
    Damaged { path: String, detail: String },
    #[error("cannot write {path}: {source}")]
    MarkFile {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt {what} record: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("append out of sequence for topic {topic}: got offset {got}, expected {expected}")]
    OutOfSequence {
        topic: String,
        got: u64,
        expected: u64,
    },
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    #[error("topic {0} was handed to another owner on this node; it is read-only here")]
    Sealed(String),
    /// A call sent to the blocking pool was dropped: the runtime is shutting down.
    #[error("storage call cancelled: the node is shutting down")]
    Cancelled,
}

/// One message as stored: its offset, id, owner time and the raw JSON text of `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub offset: u64,
    pub id: String,
    pub time_ms: u64,
    /// The publisher's `data`, as validated JSON text.
    pub data: Bytes,
}

impl StoredMessage {
    /// Bytes this message costs in memory and on the wire, roughly.
    pub fn size(&self) -> usize {
        self.data.len() + self.id.len() + 64
    }
}

pub use crate::protocol::resume::TopicMeta;

/// Whether a topic's copy on this node may be appended to. A copy being replaced (a Raft
/// snapshot being installed) is `sealed` and `importing` until [`TopicLog::unseal`], so an
/// install cut short is never appended to. `term` and `sealed_for` are kept for the stored
/// format (data written before replication, when owners handed copies over by sealing them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub term: u64,
    pub sealed: bool,
    /// An import into this copy started and has not completed (it is sealed meanwhile).
    pub importing: bool,
    /// The node whose takeover sealed this copy (data written before replication).
    pub sealed_for: Option<String>,
}

/// How much history a topic keeps: whichever limit is reached first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub max_messages: u64,
    pub max_age_ms: u64,
}

/// The per-topic message log. Implementations are shared between the topic actor (the only
/// writer of a topic) and any number of readers (sessions catching up, long polls).
pub trait TopicLog: Send + Sync + 'static {
    /// The topic's meta, or `None` if it was never created.
    fn meta(&self, topic: &str) -> Result<Option<TopicMeta>, StorageError>;
    /// Creates the topic with `epoch` and `term` unless it exists; returns its meta either
    /// way.
    fn create(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError>;
    /// Replaces the epoch and term of an existing topic (its history can no longer be
    /// trusted).
    fn set_epoch(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError>;
    /// Replaces everything stored for the topic (messages, consumers, publish ids) with an
    /// empty copy of `epoch` at `term` whose next offset is `first`. The copy is sealed until
    /// [`TopicLog::unseal`]: an import cut short is never appended to.
    fn replace(
        &self,
        topic: &str,
        epoch: &str,
        term: u64,
        first: u64,
    ) -> Result<TopicMeta, StorageError>;
    /// Opens a replaced copy for appends once its import is complete; refused if the import
    /// was cut short meanwhile.
    fn unseal(&self, topic: &str) -> Result<(), StorageError>;
    /// Removes everything stored for the topic (meta, messages, consumers, publish ids).
    fn forget(&self, topic: &str) -> Result<(), StorageError>;
    /// Every topic that exists.
    fn topics(&self) -> Result<Vec<String>, StorageError>;
    /// Appends messages whose offsets continue the topic's head with no gap. Visible to
    /// readers at once, durable after the next [`TopicLog::flush`].
    fn append(&self, topic: &str, msgs: &[StoredMessage]) -> Result<(), StorageError>;
    /// Messages with `from <= offset <= to` that are retained, in order: at most `max_count`,
    /// and no more once `max_bytes` (by [`StoredMessage::size`]) is reached, but always at
    /// least one if any exists.
    fn read(
        &self,
        topic: &str,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StorageError>;
    /// Applies retention at `now_ms`: advances `first` and deletes every chunk that lies
    /// wholly below it. Returns the new meta.
    fn apply_retention(
        &self,
        topic: &str,
        policy: &RetentionPolicy,
        now_ms: u64,
    ) -> Result<TopicMeta, StorageError>;
    /// Records that publish id `id` got `offset` at `now_ms` (idempotency index).
    fn remember_id(
        &self,
        topic: &str,
        id: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<(), StorageError>;
    /// The offset a publish id got, if it was seen within the dedupe window before `now_ms`.
    fn lookup_id(&self, topic: &str, id: &str, now_ms: u64) -> Result<Option<u64>, StorageError>;
    /// Every publish id of `topic` still in the idempotency index: (id, offset, time).
    fn remembered_ids(&self, topic: &str) -> Result<Vec<(String, u64, u64)>, StorageError>;
    /// Frees idempotency entries older than the dedupe window.
    fn expire_ids(&self, now_ms: u64) -> Result<(), StorageError>;
    /// Stores the state of consumer `name` of `topic` (durable with the next flush).
    fn save_consumer(&self, topic: &str, name: &str, state: &[u8]) -> Result<(), StorageError>;
    /// Deletes consumer `name` of `topic` (durable with the next flush).
    fn delete_consumer(&self, topic: &str, name: &str) -> Result<(), StorageError>;
    /// Every stored consumer of `topic`, with its state.
    fn consumers(&self, topic: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// Makes every write so far durable. Called by one task only.
    fn flush(&self) -> Result<(), StorageError>;
    /// Marks the store as in use; returns whether the previous run shut down cleanly.
    fn mark_running(&self) -> Result<bool, StorageError>;
    /// Marks a clean shutdown (after the final flush).
    fn mark_clean(&self) -> Result<(), StorageError>;
}
