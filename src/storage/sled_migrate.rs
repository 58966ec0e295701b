//! Migrating a store written by the previous layout, which had one sled tree per segment of
//! a topic's offsets (`seg:<topic>:<start, 20 digits>`, key = a chunk's first offset (u64
//! big-endian), value = the chunk's bincode without a checksum). sled rewrites its list of
//! trees on every new tree, so that layout's disk use grew with the square of the number of
//! topics.
//!
//! At open, each segment's chunks are copied into the topic's message tree under
//! `topic, 0x00, offset` with their checksum, a group of topics at a time; the group is
//! flushed, and only then are its old trees dropped; a last flush ends the migration.
//! Copying is idempotent (a key gets the same value again), so a crash anywhere leaves a
//! store that migrates again, cleanly, on the next open.

use super::stripe_of;
use crate::storage::sled_codec::{
    checksummed, chunk_key, corrupt, decode_offset, parse_segment_name, SEGMENT_PREFIX,
};
use crate::storage::StorageError;
use std::collections::BTreeMap;

/// Flush and drop the copied trees once this many bytes were copied...
const GROUP_BYTES: usize = 64 * 1024 * 1024;
/// ... or this many trees.
const GROUP_TREES: usize = 4096;

/// The trees of the previous layout that a store still has.
#[derive(Default)]
pub(super) struct OldSegments {
    /// Non-empty segment trees' names, by topic.
    by_topic: BTreeMap<String, Vec<sled::IVec>>,
    /// Segment trees with nothing in them (a crash between creating one and its first
    /// write): dropped.
    empty: Vec<sled::IVec>,
}

/// Finds the segment trees among `names`, and refuses any whose topic has no meta record
/// (`known` says which have one): a topic's meta record was written before its first
/// segment and never removed, so sled lost it.
pub(super) fn old_segments(
    db: &sled::Db,
    names: &[sled::IVec],
    known: impl Fn(&str) -> bool,
) -> Result<OldSegments, StorageError> {
    let mut old = OldSegments::default();
    for name in names {
        if !name.starts_with(SEGMENT_PREFIX.as_bytes()) {
            continue;
        }
        let Some((topic, start)) = parse_segment_name(name) else {
            continue;
        };
        if db.open_tree(name)?.is_empty() {
            old.empty.push(name.clone());
        } else if known(topic) {
            let trees = old.by_topic.entry(topic.to_string()).or_default();
            trees.push(name.clone());
        } else {
            let detail = format!("messages of topic {topic} from offset {start} are stored, but the topic's meta record is missing");
            return Err(corrupt("segment", detail));
        }
    }
    Ok(old)
}

/// Copies `old` into the message trees `msgs`, then drops it (see the module doc).
pub(super) fn migrate(
    db: &sled::Db,
    msgs: &[sled::Tree],
    old: OldSegments,
) -> Result<(), StorageError> {
    if old.by_topic.is_empty() && old.empty.is_empty() {
        return Ok(());
    }
    let topics = old.by_topic.len();
    tracing::info!(topics, "migrating the store to bounded message trees");
    let started = std::time::Instant::now();
    let (mut copied, mut bytes, mut chunks) = (Vec::new(), 0usize, 0usize);
    for (topic, trees) in old.by_topic {
        let tree = &msgs[stripe_of(&topic, msgs.len())];
        for name in trees {
            let mut batch = sled::Batch::default();
            for item in db.open_tree(&name)?.iter() {
                let (key, value) = item?;
                batch.insert(chunk_key(&topic, decode_offset(&key)?), checksummed(&value));
                bytes += value.len();
                chunks += 1;
            }
            tree.apply_batch(batch)?;
            copied.push(name);
        }
        if bytes >= GROUP_BYTES || copied.len() >= GROUP_TREES {
            drop_copied(db, &mut copied)?;
            bytes = 0;
        }
    }
    drop_copied(db, &mut copied)?;
    for name in old.empty {
        db.drop_tree(&name)?;
    }
    db.flush()?;
    let elapsed_ms = started.elapsed().as_millis();
    tracing::info!(topics, chunks, elapsed_ms, "store migrated");
    Ok(())
}

/// Makes the copies durable, then drops the trees they came from.
fn drop_copied(db: &sled::Db, copied: &mut Vec<sled::IVec>) -> Result<(), StorageError> {
    db.flush()?;
    for name in copied.drain(..) {
        db.drop_tree(&name)?;
    }
    Ok(())
}
