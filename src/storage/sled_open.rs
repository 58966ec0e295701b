//! Opening a [`SledLog`]: sled's database, the store mark, the message trees (migrating a
//! store of the previous layout, see [`super::migrate`]) and every topic into memory. A
//! damaged data directory is refused with [`StorageError::Damaged`] naming it, whether sled
//! returns an error, panics (sled 0.34.7 does on some corrupt files, in the calling thread),
//! a meta record does not decode, messages are stored for a topic without a meta record or
//! in the wrong message tree, a message tree is missing, or the store mark shows lost
//! writes. A topic whose last chunk fails its checksum is reported damaged instead (see
//! [`crate::storage::damage`]).

use super::super::quiet_panic::catch_panic;
use super::super::store_mark::{self, StoreMark};
use super::migrate;
use super::*;
use crate::storage::damage::{Damage, Damaged};
use std::path::Path;

/// Most message trees a store may record (a sanity bound on the stored count).
const MAX_STRIPES: u32 = 4096;

impl SledLog {
    /// Opens (or creates) the database at `path` and loads every topic into memory.
    pub fn open(path: &Path, opts: SledOptions) -> Result<SledLog, StorageError> {
        let file_mark = store_mark::read(path).map_err(|detail| damaged(path, detail))?;
        match catch_panic(|| SledLog::load(path, opts, file_mark)) {
            Ok(Ok(log)) => Ok(log),
            Ok(Err(e)) => Err(classify(path, e)),
            Err(panic) => Err(damaged(path, format!("sled could not read it: {panic}"))),
        }
    }

    fn load(
        path: &Path,
        opts: SledOptions,
        file_mark: Option<StoreMark>,
    ) -> Result<SledLog, StorageError> {
        let opts = SledOptions {
            dedupe_window_ms: opts.dedupe_window_ms.max(1),
            ..opts
        };
        // No background flusher: the Flusher task must be sled's only flusher (sled #1308).
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree(META_TREE)?;
        // Checked before Starling writes anything (sled may have repaired its log already).
        let stored_mark = match meta.get(MARK_KEY)? {
            Some(value) => Some(decode::<StoreMark>("store mark", &value)?),
            None => None,
        };
        let mark = store_mark::check(file_mark.as_ref(), stored_mark.as_ref())
            .map_err(|detail| damaged(path, detail))?;
        let names = db.tree_names();
        let stripes = match meta.get(STRIPES_KEY)? {
            Some(value) => Some(decode_stripes(&value)?),
            None => None,
        };
        check_message_trees(&db, &names, stripes)?;
        let consumers = db.open_tree(CONSUMERS_TREE)?;
        let mut states = HashMap::new();
        for item in meta.iter() {
            let (key, value) = item?;
            if key.first() == Some(&0) {
                continue;
            }
            let name = String::from_utf8(key.to_vec())
                .map_err(|_| corrupt("meta key", "topic name is not UTF-8"))?;
            let rec: MetaRecord = decode("meta", &value)?;
            let state = TopicState {
                epoch: rec.epoch,
                first: rec.first,
                lease: Lease {
                    term: rec.term,
                    sealed: rec.sealed,
                    importing: rec.importing,
                    sealed_for: rec.sealed_for,
                },
            };
            states.insert(name, state);
        }
        let old = migrate::old_segments(&db, &names, |topic| states.contains_key(topic))?;
        // Validation is over: from here on, opening writes.
        let stripes = match stripes {
            Some(n) => n,
            None => {
                // The trees first: a crash before the count is durable leaves them empty,
                // and this runs again.
                for stripe in 0..MESSAGE_TREES {
                    db.open_tree(msgs_name(stripe))?;
                }
                meta.insert(STRIPES_KEY, &MESSAGE_TREES.to_be_bytes())?;
                MESSAGE_TREES
            }
        };
        let msgs = (0..stripes)
            .map(|stripe| db.open_tree(msgs_name(stripe)))
            .collect::<Result<Vec<_>, _>>()?;
        migrate::migrate(&db, &msgs, old)?;
        let damage = Damage::default();
        let heads = scan_heads(&msgs, |topic| states.contains_key(topic), &damage)?;
        let mut dedupe = BTreeMap::new();
        for name in &names {
            if let Some(bucket) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| n.strip_prefix(DEDUPE_PREFIX))
                .and_then(|b| b.parse::<u64>().ok())
            {
                dedupe.insert(bucket, db.open_tree(name)?);
            }
        }
        let mut topics = HashMap::with_capacity(states.len());
        for (name, state) in states {
            let last = heads.get(&name).copied().unwrap_or(0);
            // Offsets below `first` were assigned even if their chunks are gone.
            let head = last.max(state.first.saturating_sub(1));
            let tree = msgs[stripe_of(&name, msgs.len())].clone();
            let topic = Topic::new(state.epoch, state.first, state.lease, head, tree);
            topics.insert(name, Arc::new(topic));
        }
        tracing::info!(path = %path.display(), topics = topics.len(), "storage opened");
        Ok(SledLog {
            path: path.to_path_buf(),
            mark: Mutex::new(mark),
            db,
            meta,
            consumers,
            msgs,
            opts,
            topics: RwLock::new(topics),
            dedupe: RwLock::new(dedupe),
            dedupe_floor: std::sync::atomic::AtomicU64::new(0),
            damage,
        })
    }

    /// Advances the store mark: in sled, flushed, then in its file (see
    /// [`super::super::store_mark`]).
    pub(super) fn advance_mark(&self) -> Result<(), StorageError> {
        let mut mark = lock(&self.mark);
        let next = mark.next();
        self.meta.insert(MARK_KEY, encode("store mark", &next)?)?;
        self.db.flush()?;
        store_mark::write(&self.path, &next).map_err(|source| StorageError::MarkFile {
            path: self.path.join(store_mark::MARK_FILE).display().to_string(),
            source,
        })?;
        *mark = next;
        Ok(())
    }
}

/// The stored number of message trees.
fn decode_stripes(value: &[u8]) -> Result<u32, StorageError> {
    let bad = || corrupt("meta", format!("the number of message trees is {value:?}"));
    let bytes: [u8; 4] = value.try_into().map_err(|_| bad())?;
    match u32::from_be_bytes(bytes) {
        n @ 1..=MAX_STRIPES => Ok(n),
        _ => Err(bad()),
    }
}

/// The message trees sled has match the stored count: `msgs:0` up to the count, none past
/// it; before the count is stored (a new store, or one being created when it crashed),
/// only empty ones.
fn check_message_trees(
    db: &sled::Db,
    names: &[sled::IVec],
    stripes: Option<u32>,
) -> Result<(), StorageError> {
    let found: Vec<u32> = names.iter().filter_map(|n| parse_msgs_name(n)).collect();
    let layout = |detail: String| corrupt("message tree", detail);
    match stripes {
        None => {
            for stripe in found {
                if !db.open_tree(msgs_name(stripe))?.is_empty() {
                    let detail = format!(
                        "{} holds messages, but the number of message trees is missing",
                        msgs_name(stripe)
                    );
                    return Err(layout(detail));
                }
            }
        }
        Some(n) => {
            if let Some(beyond) = found.iter().find(|s| **s >= n) {
                let detail = format!(
                    "{} exists, but the store has {n} message trees",
                    msgs_name(*beyond)
                );
                return Err(layout(detail));
            }
            if let Some(missing) = (0..n).find(|s| !found.contains(s)) {
                return Err(layout(format!("{} is missing", msgs_name(missing))));
            }
        }
    }
    Ok(())
}

/// The head of every topic with chunks (the last offset of its last chunk), walking each
/// message tree topic by topic: two seeks and one decoded chunk per topic. Messages of a
/// topic without a meta record, or in another topic's tree, are refused. A topic whose last
/// chunk is corrupt is reported to `damage` and has no head here (it is never served; the
/// replication layer replaces its copy).
fn scan_heads(
    msgs: &[sled::Tree],
    known: impl Fn(&str) -> bool,
    damage: &Damage,
) -> Result<HashMap<String, u64>, StorageError> {
    let mut heads = HashMap::new();
    for (stripe, tree) in msgs.iter().enumerate() {
        let mut from = Vec::new();
        while let Some(item) = tree.range(from.as_slice()..).next() {
            let (key, _) = item?;
            let (topic, start) = split_chunk_key(&key)?;
            if !known(topic) {
                // A topic's meta record is written before its first chunk and never
                // removed: sled lost it.
                let detail = format!("messages of topic {topic} from offset {start} are stored, but the topic's meta record is missing");
                return Err(corrupt("chunk", detail));
            }
            if stripe_of(topic, msgs.len()) != stripe {
                let detail = format!(
                    "topic {topic}'s messages are in {}",
                    msgs_name(stripe as u32)
                );
                return Err(corrupt("chunk", detail));
            }
            match last_message(tree, topic) {
                Ok(Some((last, _))) => {
                    heads.insert(topic.to_string(), last);
                }
                Ok(None) => {}
                Err(StorageError::Corrupt { detail, .. }) => {
                    tracing::error!(topic, detail, "the topic's last chunk is corrupt");
                    damage.report(Damaged::Topic(topic.to_string()));
                }
                Err(e) => return Err(e),
            }
            from = topic_end(topic);
        }
    }
    Ok(heads)
}

fn damaged(path: &Path, detail: String) -> StorageError {
    let path = path.display().to_string();
    StorageError::Damaged { path, detail }
}

/// An error while opening `path`, as the operator should read it: the directory is damaged,
/// or it could not be opened at all.
fn classify(path: &Path, e: StorageError) -> StorageError {
    use std::io::ErrorKind;
    let detail = match e {
        StorageError::Sled(sled::Error::Io(io))
            if !matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData) =>
        {
            let path = path.display().to_string();
            let source = sled::Error::Io(io);
            return StorageError::Open { path, source };
        }
        // sled's message for this one ends in "backtrace ()".
        StorageError::Sled(sled::Error::Corruption { at: Some(at), .. }) => {
            format!("sled found corrupted data at {at:?}")
        }
        StorageError::Sled(sled::Error::Corruption { at: None, .. }) => {
            "sled found corrupted data".to_string()
        }
        StorageError::Sled(e) => format!("sled: {e}"),
        StorageError::Corrupt { .. } => e.to_string(),
        other => return other,
    };
    damaged(path, detail)
}
