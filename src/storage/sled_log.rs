//! [`TopicLog`] on sled 0.34.7, laid out as the module doc of [`crate::storage`] describes.
//!
//! Every topic is cached in memory at open: its epoch, first retained offset, head and the
//! message tree (stripe) holding its chunks. Each topic has one writer at a time (appends,
//! retention and epoch changes take its writer lock); readers hold the topic's state read
//! lock while they iterate, and retention advances `first` under the write lock before it
//! deletes chunks below it, so no reader still looks at a chunk being deleted.

use super::damage::{Damage, Damaged};
use super::retention;
use super::sled_codec::*;
use super::store_mark::StoreMark;
use super::{Lease, RetentionPolicy, StorageError, StoredMessage, TopicLog, TopicMeta};
use crate::protocol::placement::stable_hash;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const META_TREE: &str = "meta";
const CONSUMERS_TREE: &str = "consumers";
const DEDUPE_PREFIX: &str = "dedupe:";
/// Present in `meta` while a node runs. The NUL byte keeps it apart from every topic name.
const RUNNING_KEY: &[u8] = b"\0running";
/// The store mark in `meta` (see [`super::store_mark`]).
const MARK_KEY: &[u8] = b"\0mark";
/// The number of message trees in `meta` (u32 big-endian), written when the store is
/// created: a topic's tree is `stable_hash(topic) % stripes`, so it never changes.
const STRIPES_KEY: &[u8] = b"\0stripes";
/// Message trees of a new store. Fixed: the number of sled trees must not grow with the
/// number of topics (sled rewrites its list of trees on every new tree).
pub const MESSAGE_TREES: u32 = 16;

/// Tuning for [`SledLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// How long a publish id is remembered (one dedupe bucket spans one window).
    pub dedupe_window_ms: u64,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

/// A topic as cached in memory.
struct Topic {
    /// Serializes this topic's writers: append, retention, epoch changes.
    writer: Mutex<()>,
    /// Last offset appended; readers never look past it.
    head: AtomicU64,
    /// The message tree holding this topic's chunks.
    tree: sled::Tree,
    state: RwLock<TopicState>,
}

struct TopicState {
    epoch: String,
    first: u64,
    lease: Lease,
}

/// The sled-backed topic log. See the module doc for how it is shared.
pub struct SledLog {
    /// The data directory, for error messages and the store mark's file.
    path: PathBuf,
    /// The store's mark as last written (see [`super::store_mark`]).
    mark: Mutex<StoreMark>,
    db: sled::Db,
    meta: sled::Tree,
    consumers: sled::Tree,
    /// The message trees, by stripe.
    msgs: Vec<sled::Tree>,
    opts: SledOptions,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Dedupe trees by bucket; users hold the read lock while they use a tree.
    dedupe: RwLock<BTreeMap<u64, sled::Tree>>,
    /// Buckets below this one were expired (changed under the `dedupe` write lock): an id
    /// remembered with an older time (an entry applied late, a snapshot) is not kept.
    dedupe_floor: std::sync::atomic::AtomicU64,
    /// Copies found damaged, for the layers above.
    damage: Damage,
}

/// The stripe of `topic` among `stripes` message trees.
fn stripe_of(topic: &str, stripes: usize) -> usize {
    // The remainder is below `stripes`, which is a usize.
    (stable_hash(topic.as_bytes()) % stripes.max(1) as u64) as usize
}

impl SledLog {
    /// The Raft log and meta trees in this node's database (see [`super::raft_store`]).
    pub fn raft_store(&self) -> Result<super::RaftStore, StorageError> {
        super::RaftStore::open(&self.db, self.damage.clone())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, StorageError> {
        read(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::NoSuchTopic(name.to_string()))
    }

    /// The message tree holding `topic`'s chunks.
    fn msgs_tree(&self, topic: &str) -> &sled::Tree {
        &self.msgs[stripe_of(topic, self.msgs.len())]
    }

    fn put_meta(
        &self,
        name: &str,
        epoch: &str,
        first: u64,
        lease: &Lease,
    ) -> Result<(), StorageError> {
        let rec = MetaRecord {
            epoch: epoch.to_string(),
            first,
            term: lease.term,
            sealed: lease.sealed,
            importing: lease.importing,
            sealed_for: lease.sealed_for.clone(),
        };
        self.meta.insert(name.as_bytes(), encode("meta", &rec)?)?;
        Ok(())
    }

    /// `result` of a call on `topic`'s copy `t`, after reporting the copy as damaged if a
    /// chunk of it was corrupt. A copy replaced or forgotten meanwhile (its chunks may be
    /// gone) is no finding: the call fails as if the topic did not exist.
    fn noticed<T>(
        &self,
        topic: &str,
        t: &Arc<Topic>,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if let Err(StorageError::Corrupt { what: "chunk", .. }) = &result {
            let current = read(&self.topics)
                .get(topic)
                .is_some_and(|now| Arc::ptr_eq(now, t));
            if !current {
                return Err(StorageError::NoSuchTopic(topic.to_string()));
            }
            self.damage.report(Damaged::Topic(topic.to_string()));
        }
        result
    }

    /// Where this store reports damaged copies it finds (see [`super::damage`]; the layers
    /// above get it from [`super::RaftStore::damage`]).
    #[cfg(test)]
    pub fn damage(&self) -> Damage {
        self.damage.clone()
    }

    fn bucket(&self, now_ms: u64) -> u64 {
        now_ms / self.opts.dedupe_window_ms
    }
}

impl Topic {
    fn new(epoch: String, first: u64, lease: Lease, head: u64, tree: sled::Tree) -> Topic {
        Topic {
            writer: Mutex::new(()),
            head: AtomicU64::new(head),
            tree,
            state: RwLock::new(TopicState {
                epoch,
                first,
                lease,
            }),
        }
    }

    fn meta(&self) -> TopicMeta {
        let state = read(&self.state);
        TopicMeta {
            epoch: state.epoch.clone(),
            first: state.first,
            head: self.head.load(Ordering::Acquire),
        }
    }
}

/// Last offset of `topic`'s last chunk in `tree`, and the time of its message.
fn last_message(tree: &sled::Tree, topic: &str) -> Result<Option<(u64, u64)>, StorageError> {
    let Some(item) = tree
        .range(topic_prefix(topic)..topic_end(topic))
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = item?;
    let (_, start) = split_chunk_key(&key)?;
    let records = decode_chunk(topic, start, &value)?;
    let last = start.saturating_add(records.len() as u64 - 1);
    Ok(records.last().map(|rec| (last, rec.time_ms)))
}

/// `topic`'s chunk holding `offset` (the last one starting at or before it): its first
/// offset and value.
fn chunk_at(
    tree: &sled::Tree,
    topic: &str,
    offset: u64,
) -> Result<Option<(u64, sled::IVec)>, StorageError> {
    match tree
        .range(topic_prefix(topic)..=chunk_key(topic, offset))
        .next_back()
    {
        Some(item) => {
            let (key, value) = item?;
            Ok(Some((split_chunk_key(&key)?.1, value)))
        }
        None => Ok(None),
    }
}

fn message_time(tree: &sled::Tree, topic: &str, offset: u64) -> Result<u64, StorageError> {
    let missing = || corrupt("chunk", format!("{topic} offset {offset} is missing"));
    let (start, value) = chunk_at(tree, topic, offset)?.ok_or_else(missing)?;
    let records = decode_chunk(topic, start, &value)?;
    let index = usize::try_from(offset - start).map_err(|_| missing())?;
    Ok(records.get(index).ok_or_else(missing)?.time_ms)
}

/// First offset in `from..=to` of `topic` stamped at or after `cutoff_ms`, by binary search
/// (owner times do not go backwards within a topic); `from` is tried first, the usual answer.
fn first_at_or_after(
    tree: &sled::Tree,
    topic: &str,
    from: u64,
    to: u64,
    cutoff_ms: u64,
) -> Result<Option<u64>, StorageError> {
    if from > to || message_time(tree, topic, from)? >= cutoff_ms {
        return Ok((from <= to).then_some(from));
    }
    let (mut lo, mut hi) = (from + 1, to.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if message_time(tree, topic, mid)? >= cutoff_ms {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok((lo <= to).then_some(lo))
}

/// Deletes `topic`'s chunks starting below offset `below`, or all of them for `None`, in
/// one batch (a range delete over the topic's keys); returns how many.
fn delete_chunks(
    tree: &sled::Tree,
    topic: &str,
    below: Option<u64>,
) -> Result<usize, StorageError> {
    let end = match below {
        Some(offset) => chunk_key(topic, offset),
        None => topic_end(topic),
    };
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for key in tree.range(topic_prefix(topic)..end).keys() {
        batch.remove(key?);
        n += 1;
    }
    if n > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(n)
}

impl TopicLog for SledLog {
    fn meta(&self, topic: &str) -> Result<Option<TopicMeta>, StorageError> {
        Ok(read(&self.topics).get(topic).map(|t| t.meta()))
    }

    fn create(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError> {
        let mut topics = write(&self.topics);
        if let Some(t) = topics.get(topic) {
            return Ok(t.meta());
        }
        let lease = Lease {
            term,
            sealed: false,
            importing: false,
            sealed_for: None,
        };
        debug_assert!(!topic.contains('\0'), "topic names never contain NUL");
        self.put_meta(topic, epoch, 1, &lease)?;
        let tree = self.msgs_tree(topic).clone();
        let t = Topic::new(epoch.to_string(), 1, lease, 0, tree);
        let meta = t.meta();
        topics.insert(topic.to_string(), Arc::new(t));
        tracing::debug!(topic, epoch, "topic created");
        Ok(meta)
    }

    fn set_epoch(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError> {
        let t = self.topic(topic)?;
        let _writer = lock(&t.writer);
        let (first, lease) = {
            let state = read(&t.state);
            (state.first, state.lease.clone())
        };
        let lease = Lease { term, ..lease };
        self.put_meta(topic, epoch, first, &lease)?;
        {
            let mut state = write(&t.state);
            state.epoch = epoch.to_string();
            state.lease = lease;
        }
        tracing::info!(topic, epoch, "topic epoch replaced");
        Ok(t.meta())
    }

    fn topics(&self) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = read(&self.topics).keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    fn append(&self, topic: &str, msgs: &[StoredMessage]) -> Result<(), StorageError> {
        let t = self.topic(topic)?;
        let _writer = lock(&t.writer);
        let writable = {
            let state = read(&t.state);
            !state.lease.sealed || state.lease.importing
        };
        if !writable {
            return Err(StorageError::Sealed(topic.to_string()));
        }
        let head = t.head.load(Ordering::Acquire);
        for (expected, msg) in (head + 1..).zip(msgs) {
            if msg.offset != expected {
                return Err(StorageError::OutOfSequence {
                    topic: topic.to_string(),
                    got: msg.offset,
                    expected,
                });
            }
        }
        let mut batch = sled::Batch::default();
        for part in chunks(msgs) {
            batch.insert(chunk_key(topic, part[0].offset), encode_chunk(part)?);
        }
        t.tree.apply_batch(batch)?;
        if let Some(last) = msgs.last() {
            t.head.store(last.offset, Ordering::Release);
        }
        Ok(())
    }

    fn read(
        &self,
        topic: &str,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let t = self.topic(topic)?;
        let found = (|| {
            // Held while reading: retention deletes chunks only after advancing `first` under
            // the write lock.
            let state = read(&t.state);
            let end = to.min(t.head.load(Ordering::Acquire));
            let mut expected = from.max(state.first);
            let mut out = Vec::new();
            if expected > end || max_count == 0 {
                return Ok(out);
            }
            let from_chunk =
                chunk_at(&t.tree, topic, expected)?.map_or(expected, |(start, _)| start);
            let mut bytes = 0usize;
            for item in t
                .tree
                .range(chunk_key(topic, from_chunk)..=chunk_key(topic, end))
            {
                let (key, value) = item?;
                let (_, start) = split_chunk_key(&key)?;
                for (offset, rec) in (start..).zip(decode_chunk(topic, start, &value)?.iter()) {
                    if offset < expected {
                        continue;
                    }
                    if offset != expected {
                        break;
                    }
                    let msg = to_message(offset, rec);
                    let size = msg.size();
                    if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                        return Ok(out);
                    }
                    bytes = bytes.saturating_add(size);
                    out.push(msg);
                    expected += 1;
                    if out.len() >= max_count || expected > end {
                        return Ok(out);
                    }
                }
            }
            Err(corrupt(
                "chunk",
                format!("{topic} offset {expected} is missing"),
            ))
        })();
        self.noticed(topic, &t, found)
    }

    fn apply_retention(
        &self,
        topic: &str,
        policy: &RetentionPolicy,
        now_ms: u64,
    ) -> Result<TopicMeta, StorageError> {
        let t = self.topic(topic)?;
        let _writer = lock(&t.writer);
        let head = t.head.load(Ordering::Acquire);
        let (epoch, current_first, lease) = {
            let state = read(&t.state);
            (state.epoch.clone(), state.first, state.lease.clone())
        };
        let tree = &t.tree;
        let decision = retention::decide(
            head,
            current_first,
            policy,
            now_ms,
            |from, to, cutoff| first_at_or_after(tree, topic, from, to, cutoff),
            |offset| Ok(chunk_at(tree, topic, offset)?.map(|(start, _)| start)),
        );
        let decision = self.noticed(topic, &t, decision)?;
        if decision.first != current_first {
            // Persisted before any chunk goes, so a crash never leaves `first` below a hole.
            self.put_meta(topic, &epoch, decision.first, &lease)?;
            write(&t.state).first = decision.first;
        }
        let deleted = match decision.delete_below {
            0 => 0,
            below => delete_chunks(tree, topic, Some(below))?,
        };
        if decision.first != current_first || deleted > 0 {
            tracing::debug!(
                topic,
                first = decision.first,
                head,
                deleted,
                "retention applied"
            );
        }
        Ok(t.meta())
    }

    fn remember_id(
        &self,
        topic: &str,
        id: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let bucket = self.bucket(now_ms);
        let rec = DedupeRecord {
            offset,
            time_ms: now_ms,
        };
        let (key, value) = (dedupe_key(topic, id), encode("dedupe", &rec)?);
        if let Some(tree) = read(&self.dedupe).get(&bucket) {
            tree.insert(key, value)?;
            return Ok(());
        }
        let mut trees = write(&self.dedupe);
        if bucket < self.dedupe_floor.load(std::sync::atomic::Ordering::Acquire) {
            // Past the dedupe window already: no lookup would find it.
            return Ok(());
        }
        let tree = match trees.entry(bucket) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.db.open_tree(format!("{DEDUPE_PREFIX}{bucket}"))?),
        };
        tree.insert(key, value)?;
        Ok(())
    }

    fn lookup_id(&self, topic: &str, id: &str, now_ms: u64) -> Result<Option<u64>, StorageError> {
        let bucket = self.bucket(now_ms);
        let key = dedupe_key(topic, id);
        let trees = read(&self.dedupe);
        for b in [Some(bucket), bucket.checked_sub(1)].into_iter().flatten() {
            let Some(tree) = trees.get(&b) else { continue };
            if let Some(value) = tree.get(&key)? {
                let rec: DedupeRecord = decode("dedupe", &value)?;
                if now_ms.saturating_sub(rec.time_ms) <= self.opts.dedupe_window_ms {
                    return Ok(Some(rec.offset));
                }
            }
        }
        Ok(None)
    }

    fn remembered_ids(&self, topic: &str) -> Result<Vec<(String, u64, u64)>, StorageError> {
        let prefix = dedupe_key(topic, "");
        let mut out = Vec::new();
        for tree in read(&self.dedupe).values() {
            for item in tree.scan_prefix(&prefix) {
                let (key, value) = item?;
                let id = key
                    .get(prefix.len()..)
                    .and_then(|id| std::str::from_utf8(id).ok())
                    .ok_or_else(|| StorageError::Corrupt {
                        what: "dedupe",
                        detail: format!("a publish id of {topic} is not UTF-8"),
                    })?;
                let rec: DedupeRecord = decode("dedupe", &value)?;
                out.push((id.to_string(), rec.offset, rec.time_ms));
            }
        }
        Ok(out)
    }

    fn expire_ids(&self, now_ms: u64) -> Result<(), StorageError> {
        let keep_from = self.bucket(now_ms).saturating_sub(1);
        // Under the write lock throughout: nobody reopens a bucket while it is dropped.
        let mut trees = write(&self.dedupe);
        self.dedupe_floor
            .fetch_max(keep_from, std::sync::atomic::Ordering::AcqRel);
        let kept = trees.split_off(&keep_from);
        let expired = std::mem::replace(&mut *trees, kept);
        for bucket in expired.into_keys() {
            self.db.drop_tree(format!("{DEDUPE_PREFIX}{bucket}"))?;
            tracing::debug!(bucket, "dedupe bucket expired");
        }
        Ok(())
    }

    fn save_consumer(&self, topic: &str, name: &str, state: &[u8]) -> Result<(), StorageError> {
        self.consumers.insert(dedupe_key(topic, name), state)?;
        Ok(())
    }

    fn delete_consumer(&self, topic: &str, name: &str) -> Result<(), StorageError> {
        self.consumers.remove(dedupe_key(topic, name))?;
        Ok(())
    }

    fn consumers(&self, topic: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let prefix = dedupe_key(topic, "");
        let mut out = Vec::new();
        for item in self.consumers.scan_prefix(&prefix) {
            let (key, value) = item?;
            let name = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| corrupt("consumer key", "name is not UTF-8"))?;
            out.push((name.to_string(), value.to_vec()));
        }
        Ok(out)
    }

    fn replace(
        &self,
        topic: &str,
        epoch: &str,
        term: u64,
        first: u64,
    ) -> Result<TopicMeta, StorageError> {
        self.replace_copy(topic, epoch, term, first)
    }

    fn unseal(&self, topic: &str) -> Result<(), StorageError> {
        self.open_copy(topic, |l| l.importing)
    }

    fn forget(&self, topic: &str) -> Result<(), StorageError> {
        self.forget_copy(topic)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    fn mark_running(&self) -> Result<bool, StorageError> {
        let previous = self.meta.insert(RUNNING_KEY, &[])?;
        self.advance_mark()?;
        Ok(previous.is_none())
    }

    fn mark_clean(&self) -> Result<(), StorageError> {
        self.meta.remove(RUNNING_KEY)?;
        self.advance_mark()
    }
}

#[path = "sled_migrate.rs"]
mod migrate;
#[path = "sled_open.rs"]
mod open;
#[path = "sled_ownership.rs"]
mod ownership;

#[cfg(test)]
#[path = "sled_log_tests.rs"]
mod tests;
