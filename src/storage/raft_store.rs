//! The Raft side of the node's sled database: one log tree per shard and one meta tree,
//! as checksummed bytes. What the bytes mean is the replication layer's business.
//!
//! Layout, in the same database as the topics (so the one [`super::flusher::Flusher`]
//! makes both durable in one flush):
//! - tree `raft-log:<shard>`: key = log index (u64 big-endian), value = crc32 of the
//!   payload (4 bytes, big-endian) followed by the payload;
//! - tree `raft-meta`: key = shard (u32 big-endian), `/`, a name (`vote`, `committed`,
//!   `purged`, `applied`, `membership`); value framed like a log entry; key `shards` (no
//!   shard number before it): the number of shards the store was created with; key
//!   `incarnation`: which identity this node's replicas have, and key `seen`: the nodes
//!   this node has seen announce an identity, comma-separated (see `replication::identity`);
//!   shard records `incarnation` (a shard whose copy was dropped has its own), `dropping`
//!   (a drop of the shard's copy is under way), `generation` (raised by each recovery from
//!   a minority) and `recovering` (a recovery's group has no snapshot yet).
//!
//! A checksum mismatch is [`StorageError::Corrupt`] naming the shard and the index or key,
//! and the shard is reported damaged ([`super::damage`]): a damaged record is never handed
//! out.

use super::damage::{Damage, Damaged};
use super::StorageError;

const LOG_PREFIX: &str = "raft-log:";
const META_TREE: &str = "raft-meta";
const SHARDS_KEY: &[u8] = b"shards";
const INCARNATION_KEY: &[u8] = b"incarnation";
const SEEN_KEY: &[u8] = b"seen";
/// Shard meta record: the shard's own incarnation (see [`RaftShardStore::incarnation`]).
const SHARD_INCARNATION: &str = "incarnation";
/// Shard meta record: present while the shard's copy is being dropped.
const DROPPING: &str = "dropping";
/// Shard meta record: the shard's generation (u64): raised by each recovery from a
/// minority, which starts the shard's Raft group anew.
const GENERATION: &str = "generation";
/// Shard meta record: present from the start of a recovery from a minority until the
/// recovered group has its first snapshot.
const RECOVERING: &str = "recovering";

/// Handle to the Raft trees; cheap to clone.
#[derive(Clone)]
pub struct RaftStore {
    db: sled::Db,
    meta: sled::Tree,
    damage: Damage,
}

/// One shard's log and meta records.
#[derive(Clone)]
pub struct RaftShardStore {
    shard: u32,
    log: sled::Tree,
    meta: sled::Tree,
    damage: Damage,
}

impl RaftStore {
    pub(super) fn open(db: &sled::Db, damage: Damage) -> Result<RaftStore, StorageError> {
        Ok(RaftStore {
            db: db.clone(),
            meta: db.open_tree(META_TREE)?,
            damage,
        })
    }

    /// Where damaged records are reported (the store's, see [`super::damage`]).
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// Records `shards` as the store's shard count if it has none yet; returns the count
    /// the store was created with (which may differ: the caller refuses to start then).
    pub fn shard_count(&self, shards: u32) -> Result<u32, StorageError> {
        match self.read_u32(SHARDS_KEY, "shard count")? {
            Some(count) => Ok(count),
            None => {
                self.meta.insert(SHARDS_KEY, &shards.to_be_bytes())?;
                Ok(shards)
            }
        }
    }

    /// The incarnation recorded in the store, if any.
    pub fn incarnation(&self) -> Result<Option<u32>, StorageError> {
        self.read_u32(INCARNATION_KEY, "incarnation")
    }

    /// A store-wide u32 record (`what` names it in errors).
    fn read_u32(&self, key: &[u8], what: &str) -> Result<Option<u32>, StorageError> {
        let Some(v) = self.meta.get(key)? else {
            return Ok(None);
        };
        let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| StorageError::Corrupt {
            what: "raft",
            detail: format!("{what} of {} bytes", v.len()),
        })?;
        Ok(Some(u32::from_be_bytes(bytes)))
    }

    /// Records the incarnation and flushes it to disk before returning.
    pub fn set_incarnation(&self, incarnation: u32) -> Result<(), StorageError> {
        self.meta
            .insert(INCARNATION_KEY, &incarnation.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The names recorded by [`RaftStore::set_seen`].
    pub fn seen(&self) -> Result<Vec<String>, StorageError> {
        let Some(v) = self.meta.get(SEEN_KEY)? else {
            return Ok(Vec::new());
        };
        let text = std::str::from_utf8(&v).map_err(|_| StorageError::Corrupt {
            what: "raft",
            detail: "the names of the nodes seen are not UTF-8".into(),
        })?;
        Ok(text
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Records node names (no `,` in them), flushed before returning.
    pub fn set_seen(&self, names: &[String]) -> Result<(), StorageError> {
        self.meta.insert(SEEN_KEY, names.join(",").as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether any shard has Raft state here (a log entry or a meta record).
    pub fn has_state(&self) -> Result<bool, StorageError> {
        for item in self.meta.iter().keys() {
            let key = item?;
            if ![SHARDS_KEY, INCARNATION_KEY, SEEN_KEY].contains(&key.as_ref()) {
                return Ok(true);
            }
        }
        for name in self.db.tree_names() {
            if name.starts_with(LOG_PREFIX.as_bytes()) && !self.db.open_tree(&name)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The trees of `shard` (created if absent).
    pub fn shard(&self, shard: u32) -> Result<RaftShardStore, StorageError> {
        Ok(RaftShardStore {
            shard,
            log: self.db.open_tree(format!("{LOG_PREFIX}{shard}"))?,
            meta: self.meta.clone(),
            damage: self.damage.clone(),
        })
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl RaftShardStore {
    /// The payload of a stored record; a damaged one is reported and refused.
    fn unframe(&self, what: &str, stored: &[u8]) -> Result<Vec<u8>, StorageError> {
        let corrupt = |detail: &str| {
            self.damage.report(Damaged::Shard(self.shard));
            StorageError::Corrupt {
                what: "raft",
                detail: format!("shard {} {what}: {detail}", self.shard),
            }
        };
        let (sum, payload) = stored
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("shorter than its checksum"))?;
        if u32::from_be_bytes(*sum) != crc32fast::hash(payload) {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(payload.to_vec())
    }

    fn meta_key(&self, name: &str) -> Vec<u8> {
        let mut key = self.shard.to_be_bytes().to_vec();
        key.push(b'/');
        key.extend_from_slice(name.as_bytes());
        key
    }

    /// Writes log entries (index, payload). Durable after the next flush.
    pub fn put_entries<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (index, payload) in entries {
            batch.insert(&index.to_be_bytes(), frame(payload));
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Payloads of the entries with `from <= index < to`, in order (`to` = `None`: no bound).
    pub fn entries(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let start = from.to_be_bytes();
        let iter = match to {
            Some(to) if to <= from => return Ok(Vec::new()),
            Some(to) => self.log.range(start..to.to_be_bytes()),
            None => self.log.range(start..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            let index = decode_index(self.shard, &key)?;
            out.push((index, self.unframe(&format!("log index {index}"), &value)?));
        }
        Ok(out)
    }

    /// The last entry's payload, if any.
    pub fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        match self.log.last()? {
            Some((key, value)) => {
                let index = decode_index(self.shard, &key)?;
                let payload = self.unframe(&format!("log index {index}"), &value)?;
                Ok(Some((index, payload)))
            }
            None => Ok(None),
        }
    }

    /// Removes every entry with index >= `from`.
    pub fn remove_from(&self, from: u64) -> Result<(), StorageError> {
        self.remove_range(self.log.range(from.to_be_bytes()..))
    }

    /// Removes every entry with index <= `through`.
    pub fn remove_through(&self, through: u64) -> Result<(), StorageError> {
        self.remove_range(self.log.range(..=through.to_be_bytes()))
    }

    fn remove_range(&self, iter: sled::Iter) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in iter.keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// A meta record of this shard.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.meta.get(self.meta_key(name))? {
            Some(value) => Ok(Some(self.unframe(&format!("meta {name}"), &value)?)),
            None => Ok(None),
        }
    }

    /// The incarnation of this node's replica of the shard, if the shard has one of its own
    /// (its copy was dropped and caught up again); else the node's incarnation applies.
    pub fn incarnation(&self) -> Result<Option<u32>, StorageError> {
        Ok(self.read_fixed(SHARD_INCARNATION)?.map(u32::from_be_bytes))
    }

    /// The shard's generation (0 until a recovery from a minority).
    pub fn generation(&self) -> Result<u64, StorageError> {
        Ok(self.read_fixed(GENERATION)?.map_or(0, u64::from_be_bytes))
    }

    /// A meta record of this shard of exactly `N` bytes (a number, big-endian).
    fn read_fixed<const N: usize>(&self, name: &str) -> Result<Option<[u8; N]>, StorageError> {
        let Some(bytes) = self.meta(name)? else {
            return Ok(None);
        };
        let fixed: [u8; N] = bytes.as_slice().try_into().map_err(|_| {
            self.damage.report(Damaged::Shard(self.shard));
            StorageError::Corrupt {
                what: "raft",
                detail: format!("shard {} {name} of {} bytes", self.shard, bytes.len()),
            }
        })?;
        Ok(Some(fixed))
    }

    /// Whether a [`RaftShardStore::drop_state`] started and did not finish.
    pub fn dropping(&self) -> Result<bool, StorageError> {
        Ok(self.meta.get(self.meta_key(DROPPING))?.is_some())
    }

    /// Whether a recovery from a minority started and its group has no snapshot yet.
    pub fn recovering(&self) -> Result<bool, StorageError> {
        Ok(self.meta.get(self.meta_key(RECOVERING))?.is_some())
    }

    /// Starts dropping this shard's Raft state: records (before any removal, and sled makes
    /// writes durable in order) that it is being dropped, the incarnation the replica will
    /// have afterwards and the shard's generation, and with `recovering` that this copy's
    /// data starts the shard's group anew. Then the caller removes (or re-epochs) the
    /// shard's topics and calls [`RaftShardStore::drop_state`].
    pub fn begin_drop(
        &self,
        incarnation: u32,
        generation: u64,
        recovering: bool,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(self.meta_key(DROPPING), frame(&[]));
        batch.insert(
            self.meta_key(SHARD_INCARNATION),
            frame(&incarnation.to_be_bytes()),
        );
        batch.insert(self.meta_key(GENERATION), frame(&generation.to_be_bytes()));
        if recovering {
            batch.insert(self.meta_key(RECOVERING), frame(&[]));
        } else {
            batch.remove(self.meta_key(RECOVERING));
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Removes the shard's log and every meta record but its incarnation, generation and
    /// recovery mark, the dropping mark last. Durable after the next flush.
    pub fn drop_state(&self) -> Result<(), StorageError> {
        self.remove_range(self.log.iter())?;
        let mut prefix = self.shard.to_be_bytes().to_vec();
        prefix.push(b'/');
        let keep = [SHARD_INCARNATION, GENERATION, RECOVERING, DROPPING].map(|n| self.meta_key(n));
        let mut batch = sled::Batch::default();
        for key in self.meta.scan_prefix(&prefix).keys() {
            let key = key?;
            if !keep.iter().any(|k| k.as_slice() == key.as_ref()) {
                batch.remove(key);
            }
        }
        self.meta.apply_batch(batch)?;
        self.meta.remove(self.meta_key(DROPPING))?;
        Ok(())
    }

    /// Ends a recovery (its group has a snapshot of the recovered data).
    pub fn end_recovery(&self) -> Result<(), StorageError> {
        self.meta.remove(self.meta_key(RECOVERING))?;
        Ok(())
    }

    /// Removes meta records of this shard. Durable after the next flush.
    pub fn remove_meta(&self, names: &[&str]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for name in names {
            batch.remove(self.meta_key(name));
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Writes meta records of this shard in one batch. Durable after the next flush.
    pub fn put_meta(&self, records: &[(&str, &[u8])]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (name, payload) in records {
            batch.insert(self.meta_key(name), frame(payload));
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }
}

fn decode_index(shard: u32, key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StorageError::Corrupt {
        what: "raft",
        detail: format!("shard {shard}: log key of {} bytes", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, sled::Db, RaftShardStore) {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("open sled");
        let shard = RaftStore::open(&db, Damage::default())
            .expect("store")
            .shard(3)
            .expect("shard");
        (dir, db, shard)
    }

    #[test]
    fn the_shard_count_is_the_one_the_store_was_created_with() {
        let (_dir, db, s) = store();
        let raft = RaftStore::open(&db, Damage::default()).expect("store");
        assert_eq!(raft.shard_count(16).expect("count"), 16);
        assert_eq!(
            raft.shard_count(32).expect("count"),
            16,
            "fixed at creation"
        );
        // A shard's own meta records never collide with the store-wide key.
        s.put_meta(&[("shards", b"x")]).expect("put");
        assert_eq!(raft.shard_count(8).expect("count"), 16);
    }

    #[test]
    fn the_incarnation_is_kept_and_state_is_seen() {
        let (_dir, db, s) = store();
        let raft = RaftStore::open(&db, Damage::default()).expect("store");
        raft.shard_count(4).expect("count");
        assert_eq!(raft.incarnation().expect("read"), None);
        assert!(
            !raft.has_state().expect("state"),
            "the shard count is not state"
        );
        raft.set_incarnation(7).expect("set");
        assert_eq!(raft.incarnation().expect("read"), Some(7));
        assert!(!raft.has_state().expect("state"), "nor is the incarnation");
        assert!(raft.seen().expect("seen").is_empty());
        let names = vec!["n1".to_string(), "n3".to_string()];
        raft.set_seen(&names).expect("set");
        assert_eq!(raft.seen().expect("seen"), names);
        assert!(!raft.has_state().expect("state"), "nor the nodes seen");
        s.put_entries([(1, b"e".as_slice())]).expect("put");
        assert!(raft.has_state().expect("state"), "a log entry is");
        let (_dir2, db2, s2) = store();
        s2.put_meta(&[("vote", b"v")]).expect("put");
        assert!(
            RaftStore::open(&db2, Damage::default())
                .expect("store")
                .has_state()
                .expect("state"),
            "a vote is"
        );
    }

    #[test]
    fn entries_round_trip_and_ranges() {
        let (_dir, _db, s) = store();
        let payloads: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; i as usize]).collect();
        s.put_entries((1..=5).zip(payloads.iter().map(|p| p.as_slice())))
            .expect("put");
        let got = s.entries(2, Some(4)).expect("read");
        assert_eq!(got, vec![(2, vec![2; 2]), (3, vec![3; 3])]);
        assert_eq!(s.last_entry().expect("last"), Some((5, vec![5; 5])));
        s.remove_from(4).expect("truncate");
        s.remove_through(1).expect("purge");
        let left: Vec<u64> = s
            .entries(0, None)
            .expect("read")
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(left, vec![2, 3]);
    }

    #[test]
    fn a_damaged_entry_is_refused_naming_shard_and_index() {
        let (_dir, _db, s) = store();
        s.put_entries([(7, b"payload".as_slice())]).expect("put");
        let mut stored = s
            .log
            .get(7u64.to_be_bytes())
            .expect("get")
            .expect("present")
            .to_vec();
        stored[5] ^= 0xff;
        s.log.insert(7u64.to_be_bytes(), stored).expect("damage");
        let err = s.entries(0, None).expect_err("corrupt");
        let text = err.to_string();
        assert!(
            text.contains("shard 3") && text.contains("index 7"),
            "{text}"
        );
        assert_eq!(s.damage.take(), vec![Damaged::Shard(3)], "reported");
    }

    #[test]
    fn dropping_a_shard_keeps_only_its_new_incarnation_and_no_other_shard_is_touched() {
        let (_dir, db, s) = store();
        let other = RaftStore::open(&db, Damage::default())
            .expect("store")
            .shard(4)
            .expect("shard");
        for shard in [&s, &other] {
            shard.put_entries([(1, b"e".as_slice())]).expect("put");
            shard
                .put_meta(&[("vote", b"v"), ("applied", b"a")])
                .expect("put");
        }
        assert_eq!(s.incarnation().expect("read"), None);
        s.begin_drop(9, 2, false).expect("begin");
        assert!(s.dropping().expect("read"), "marked before anything goes");
        s.drop_state().expect("drop");
        assert!(!s.dropping().expect("read"));
        assert_eq!(s.incarnation().expect("read"), Some(9));
        assert_eq!(s.generation().expect("read"), 2);
        assert_eq!(other.generation().expect("read"), 0);
        assert!(!s.recovering().expect("read"));
        // A recovery's mark goes with a later drop that is no recovery (an adoption).
        s.begin_drop(10, 3, true).expect("begin");
        assert!(s.recovering().expect("read"));
        s.begin_drop(11, 4, false).expect("begin");
        assert!(!s.recovering().expect("read"));
        assert_eq!(s.last_entry().expect("read"), None);
        assert_eq!(s.meta("vote").expect("read"), None);
        assert_eq!(s.meta("applied").expect("read"), None);
        assert_eq!(other.last_entry().expect("read").map(|e| e.0), Some(1));
        assert_eq!(other.meta("vote").expect("read"), Some(b"v".to_vec()));
    }

    #[test]
    fn meta_records_are_per_shard() {
        let (_dir, db, s) = store();
        s.put_meta(&[("vote", b"v3")]).expect("put");
        let other = RaftStore::open(&db, Damage::default())
            .expect("store")
            .shard(4)
            .expect("shard");
        assert_eq!(s.meta("vote").expect("read"), Some(b"v3".to_vec()));
        assert_eq!(other.meta("vote").expect("read"), None);
    }
}
