//! The store mark: which store a data directory holds, and how far its durable writes got.
//!
//! sled 0.34.7 cannot tell a damaged file from a torn tail after a crash. A `db` file that
//! was truncated or overwritten opens as an empty store, and a corrupt segment near the end
//! of its log ends recovery there, silently dropping writes that had been flushed (measured:
//! a flipped word 770 KB before the end of a 6.7 MB `db` file took the last 33 acknowledged
//! messages off every topic, and the node started). Offsets would then be handed out again
//! with other data.
//!
//! So the store keeps a mark, `{store id, generation}`, in two places: in sled (`meta` tree)
//! and in [`MARK_FILE`] beside sled's files. Every start and every clean stop advances the
//! generation in sled, flushes, and only then rewrites the file. On open, sled's generation
//! must be at least the file's: a store that lost its contents, or the writes of its last
//! start or clean stop (the last thing written before a clean stop), is refused.
//! Writes made after the last start and lost after an unclean stop remain undetectable.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The mark's file, in the node's data directory.
pub const MARK_FILE: &str = "starling-store.json";

/// Which store, and how many times it was marked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMark {
    pub store: String,
    pub generation: u64,
}

impl StoreMark {
    /// A new store's mark.
    pub fn fresh() -> StoreMark {
        StoreMark {
            store: uuid::Uuid::new_v4().simple().to_string(),
            generation: 0,
        }
    }

    pub fn next(&self) -> StoreMark {
        StoreMark {
            store: self.store.clone(),
            generation: self.generation + 1,
        }
    }
}

/// Whether sled's contents can be trusted, given the mark in [`MARK_FILE`] and the one in
/// sled: the mark to continue from, or why not (for an error message).
pub fn check(file: Option<&StoreMark>, stored: Option<&StoreMark>) -> Result<StoreMark, String> {
    match (file, stored) {
        (None, None) => Ok(StoreMark::fresh()),
        (None, Some(s)) => Ok(s.clone()),
        (Some(f), None) => Err(format!(
            "sled's files hold no store, but {MARK_FILE} says they held store {} at generation {}: they were truncated, replaced or lost",
            f.store, f.generation
        )),
        (Some(f), Some(s)) if f.store != s.store => Err(format!(
            "sled's files hold store {}, but {MARK_FILE} names store {}",
            s.store, f.store
        )),
        (Some(f), Some(s)) if s.generation < f.generation => Err(format!(
            "sled lost writes it had made durable: its files are at generation {}, {MARK_FILE} says {}",
            s.generation, f.generation
        )),
        (Some(_), Some(s)) => Ok(s.clone()),
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(MARK_FILE)
}

/// The mark in `dir`'s file, `None` if there is none; `Err` says why it cannot be read.
pub fn read(dir: &Path) -> Result<Option<StoreMark>, String> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a store mark: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces `dir`'s file with `mark`, durably: a crash leaves the old mark or the new one.
pub fn write(dir: &Path, mark: &StoreMark) -> std::io::Result<()> {
    let tmp = dir.join(format!("{MARK_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(mark).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(store: &str, generation: u64) -> StoreMark {
        StoreMark {
            store: store.into(),
            generation,
        }
    }

    #[test]
    fn decisions() {
        let fresh = check(None, None).unwrap();
        assert_eq!(fresh.generation, 0);
        assert_ne!(fresh.store, check(None, None).unwrap().store);
        // A store from before marks, or one whose file was lost: sled's mark stands.
        assert_eq!(check(None, Some(&mark("a", 3))), Ok(mark("a", 3)));
        assert_eq!(
            check(Some(&mark("a", 3)), Some(&mark("a", 3))),
            Ok(mark("a", 3))
        );
        // A crash after sled's flush and before the file was rewritten.
        assert_eq!(
            check(Some(&mark("a", 3)), Some(&mark("a", 4))),
            Ok(mark("a", 4))
        );
        let table = [
            (mark("a", 3), None, "hold no store"),
            (mark("a", 3), Some(mark("b", 3)), "names store a"),
            (mark("a", 3), Some(mark("a", 2)), "lost writes"),
        ];
        for (file, stored, why) in table {
            let e = check(Some(&file), stored.as_ref()).unwrap_err();
            assert!(e.contains(why), "{file:?} {stored:?}: {e}");
        }
    }

    #[test]
    fn the_file_round_trips_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        write(dir.path(), &mark("a", 1)).unwrap();
        write(dir.path(), &mark("a", 2)).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(mark("a", 2))));
        std::fs::write(dir.path().join(MARK_FILE), b"\0\0").unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains(MARK_FILE), "{e}");
    }
}
