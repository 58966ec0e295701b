//! Opening a [`SledLog`]: sled's database, the store mark, and every topic into memory. A
//! damaged data directory is refused with [`StorageError::Damaged`] naming it, whether sled
//! returns an error, panics (sled 0.34.7 does on some corrupt files, in the calling thread),
//! a record does not decode, or the store mark shows lost writes.

use super::super::quiet_panic::catch_panic;
use super::super::store_mark::{self, StoreMark};
use super::*;
use std::path::Path;

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
            segment_messages: opts.segment_messages.max(1),
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
                segments: BTreeMap::new(),
            };
            states.insert(name, state);
        }
        let mut dedupe = BTreeMap::new();
        // A crash between creating a segment tree and its first batch leaves it empty.
        let mut empty = Vec::new();
        for name in db.tree_names() {
            if let Some((topic, start)) = parse_segment_name(&name) {
                let tree = db.open_tree(&name)?;
                match states.get_mut(topic) {
                    _ if tree.is_empty() => empty.push((topic.to_string(), start, name.clone())),
                    Some(state) => {
                        state.segments.insert(start, tree);
                    }
                    // A topic's meta record is written before its first segment and never
                    // removed: sled lost it.
                    None => {
                        let detail = format!("messages of topic {topic} from offset {start} are stored, but the topic's meta record is missing");
                        return Err(corrupt("segment", detail));
                    }
                }
            } else if let Some(bucket) = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(DEDUPE_PREFIX))
                .and_then(|b| b.parse::<u64>().ok())
            {
                dedupe.insert(bucket, db.open_tree(&name)?);
            }
        }
        let mut topics = HashMap::with_capacity(states.len());
        for (name, state) in states {
            let last = match state.segments.values().next_back() {
                Some(tree) => segment_last(tree)?.map_or(0, |(offset, _)| offset),
                None => 0,
            };
            // Offsets below `first` were assigned even if their segments are gone.
            let head = last.max(state.first.saturating_sub(1));
            let topic = Topic::new(state.epoch, state.first, state.lease, head, state.segments);
            topics.insert(name, Arc::new(topic));
        }
        for (topic, start, name) in empty {
            tracing::warn!(topic, start, "dropping an empty segment");
            db.drop_tree(&name)?;
        }
        tracing::info!(path = %path.display(), topics = topics.len(), "storage opened");
        Ok(SledLog {
            path: path.to_path_buf(),
            mark: Mutex::new(mark),
            db,
            meta,
            consumers,
            opts,
            topics: RwLock::new(topics),
            dedupe: RwLock::new(dedupe),
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
