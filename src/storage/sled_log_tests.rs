//! Tests of [`SledLog`] against a real sled database in a temporary directory.

use super::*;
use bytes::Bytes;
use std::sync::atomic::AtomicBool;
use tempfile::TempDir;

impl SledLog {
    /// First offsets of the chunks of a topic, as stored.
    pub(super) fn chunk_starts(&self, topic: &str) -> Vec<u64> {
        let tree = self.msgs_tree(topic);
        let keys = tree.range(topic_prefix(topic)..topic_end(topic)).keys();
        keys.map(|k| split_chunk_key(&k.expect("key")).expect("chunk key").1)
            .collect()
    }

    /// Overwrites the stored value of the chunk at `offset`, to corrupt it.
    pub(super) fn put_raw(&self, topic: &str, offset: u64, value: &[u8]) {
        let key = chunk_key(topic, offset);
        self.msgs_tree(topic).insert(key, value).expect("insert");
    }
}

pub(super) fn opts() -> SledOptions {
    SledOptions {
        dedupe_window_ms: 100,
        cache_bytes: 8 * 1024 * 1024,
    }
}

/// Opens the log; a reopen right after a drop polls until sled's background threads have
/// let go of the previous instance's file lock.
pub(super) fn open(dir: &TempDir) -> SledLog {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledLog::open(dir.path(), opts()) {
            Ok(log) => return log,
            Err(StorageError::Open { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

/// Message `offset`, written at `offset * 10` ms.
pub(super) fn msg(offset: u64) -> StoredMessage {
    StoredMessage {
        offset,
        id: format!("id-{offset}"),
        time_ms: offset * 10,
        data: Bytes::from(format!("{{\"n\":{offset}}}")),
    }
}

pub(super) fn append_range(log: &SledLog, topic: &str, from: u64, to: u64, batch: usize) {
    let msgs: Vec<StoredMessage> = (from..=to).map(msg).collect();
    for chunk in msgs.chunks(batch) {
        log.append(topic, chunk).expect("append");
    }
}

pub(super) fn offsets(msgs: &[StoredMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.offset).collect()
}

#[test]
fn chunk_keys_and_tree_names_parse() {
    let key = chunk_key("$sys:a.b@c-d_e:", 42);
    assert_eq!(&key[..16], b"$sys:a.b@c-d_e:\0");
    assert_eq!(split_chunk_key(&key).unwrap(), ("$sys:a.b@c-d_e:", 42));
    assert!(split_chunk_key(b"t\x01\0\0\0\0\0\0\0\x01").is_err());
    assert!(split_chunk_key(b"short").is_err());
    assert!(key.starts_with(&topic_prefix("$sys:a.b@c-d_e:")));
    assert!(key.as_slice() < topic_end("$sys:a.b@c-d_e:").as_slice());
    assert_eq!(parse_msgs_name(msgs_name(7).as_bytes()), Some(7));
    assert_eq!(parse_msgs_name(b"msgs:"), None);
    assert_eq!(parse_msgs_name(b"dedupe:42"), None);
    assert_eq!(
        parse_segment_name(b"seg:t:00000000000000000042"),
        Some(("t", 42))
    );
    assert_eq!(parse_segment_name(b"seg:t:42"), None);
}

#[test]
fn append_and_read_across_chunks() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 10, 3);
    assert_eq!(log.chunk_starts("t"), vec![1, 4, 7, 10]);
    let all = log.read("t", 0, u64::MAX, 100, usize::MAX).unwrap();
    assert_eq!(all, (1..=10).map(msg).collect::<Vec<_>>());
    let mid = log.read("t", 3, 8, 100, usize::MAX).unwrap();
    assert_eq!(offsets(&mid), (3..=8).collect::<Vec<_>>());
    let few = log.read("t", 4, 10, 3, usize::MAX).unwrap();
    assert_eq!(offsets(&few), vec![4, 5, 6]);
    let size = msg(1).size();
    let by_bytes = log.read("t", 1, 10, 100, size * 2 + 1).unwrap();
    assert_eq!(offsets(&by_bytes), vec![1, 2]);
    let at_least_one = log.read("t", 7, 10, 100, 1).unwrap();
    assert_eq!(offsets(&at_least_one), vec![7]);
    assert!(log.read("t", 11, 20, 100, usize::MAX).unwrap().is_empty());
    assert_eq!(log.meta("t").unwrap().map(|m| m.head), Some(10));
}

#[test]
fn out_of_sequence_append_is_rejected() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    let err = log.append("t", &[msg(2)]).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfSequence {
                got: 2,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    log.append("t", &[msg(1)]).unwrap();
    let err = log.append("t", &[msg(2), msg(4)]).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfSequence {
                got: 4,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        log.meta("t").unwrap().map(|m| m.head),
        Some(1),
        "nothing of a bad batch lands"
    );
    let err = log.append("nope", &[msg(1)]).unwrap_err();
    assert!(matches!(err, StorageError::NoSuchTopic(_)), "{err}");
}

#[test]
fn topics_create_and_epochs() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    assert_eq!(log.meta("a").unwrap(), None);
    assert!(matches!(
        log.set_epoch("a", "x", 2),
        Err(StorageError::NoSuchTopic(_))
    ));
    let created = log.create("a", "e1", 1).unwrap();
    assert_eq!(
        created,
        TopicMeta {
            epoch: "e1".into(),
            first: 1,
            head: 0
        }
    );
    assert_eq!(
        log.create("a", "e2", 1).unwrap(),
        created,
        "create keeps an existing topic"
    );
    log.create("$sys:b", "e1", 1).unwrap();
    assert!(log.mark_running().unwrap());
    assert_eq!(
        log.topics().unwrap(),
        vec!["$sys:b".to_string(), "a".to_string()]
    );
    assert_eq!(log.set_epoch("a", "e3", 2).unwrap().epoch, "e3");
}

#[test]
fn reopen_keeps_data_head_epoch_and_first() {
    let dir = TempDir::new().unwrap();
    let policy = RetentionPolicy {
        max_messages: 6,
        max_age_ms: u64::MAX,
    };
    let before = {
        let log = open(&dir);
        assert!(log.mark_running().unwrap(), "first run counts as clean");
        log.create("t:x", "e1", 1).unwrap();
        append_range(&log, "t:x", 1, 10, 4);
        log.set_epoch("t:x", "e2", 2).unwrap();
        let meta = log.apply_retention("t:x", &policy, 0).unwrap();
        assert_eq!(
            meta,
            TopicMeta {
                epoch: "e2".into(),
                first: 5,
                head: 10
            }
        );
        log.flush().unwrap();
        meta
    };
    let log = open(&dir);
    assert!(
        !log.mark_running().unwrap(),
        "no mark_clean: unclean shutdown"
    );
    assert_eq!(log.meta("t:x").unwrap(), Some(before));
    assert_eq!(log.chunk_starts("t:x"), vec![5, 9]);
    let all = log.read("t:x", 1, u64::MAX, 100, usize::MAX).unwrap();
    assert_eq!(all, (5..=10).map(msg).collect::<Vec<_>>());
    append_range(&log, "t:x", 11, 12, 2);
    log.mark_clean().unwrap();
    drop(log);
    let log = open(&dir);
    assert!(log.mark_running().unwrap(), "mark_clean: clean shutdown");
    assert_eq!(log.meta("t:x").unwrap().map(|m| m.head), Some(12));
}

#[test]
fn head_survives_when_everything_expired() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(&dir);
        log.create("t", "e1", 1).unwrap();
        append_range(&log, "t", 1, 9, 4);
        let policy = RetentionPolicy {
            max_messages: 0,
            max_age_ms: 0,
        };
        let meta = log.apply_retention("t", &policy, 1_000_000).unwrap();
        assert_eq!((meta.first, meta.head), (10, 9));
        assert_eq!(log.chunk_starts("t"), vec![9], "the last chunk stays");
        log.flush().unwrap();
    }
    let log = open(&dir);
    assert_eq!(
        log.meta("t").unwrap().map(|m| (m.first, m.head)),
        Some((10, 9))
    );
    assert!(log
        .read("t", 0, u64::MAX, 10, usize::MAX)
        .unwrap()
        .is_empty());
    log.append("t", &[msg(10)]).unwrap();
}

#[test]
fn retention_by_count_deletes_chunks() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 100, 7);
    assert_eq!(log.chunk_starts("t").len(), 15);
    let trees = log.db.tree_names().len();
    let policy = RetentionPolicy {
        max_messages: 25,
        max_age_ms: u64::MAX,
    };
    let meta = log.apply_retention("t", &policy, 0).unwrap();
    assert_eq!((meta.first, meta.head), (76, 100));
    assert_eq!(log.chunk_starts("t"), vec![71, 78, 85, 92, 99]);
    assert_eq!(log.db.tree_names().len(), trees, "no tree comes or goes");
    let kept = log.read("t", 1, u64::MAX, 1000, usize::MAX).unwrap();
    assert_eq!(offsets(&kept), (76..=100).collect::<Vec<_>>());
    assert_eq!(log.read("t", 71, 75, 10, usize::MAX).unwrap(), vec![]);
    // Retention again changes nothing; first never moves back.
    let policy = RetentionPolicy {
        max_messages: 1000,
        max_age_ms: u64::MAX,
    };
    assert_eq!(log.apply_retention("t", &policy, 0).unwrap().first, 76);
}

#[test]
fn retention_by_age() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 100, 10);
    // Times are offset * 10: at 1000 with max age 450, offsets from 55 are young enough.
    let policy = RetentionPolicy {
        max_messages: 1000,
        max_age_ms: 450,
    };
    let meta = log.apply_retention("t", &policy, 1000).unwrap();
    assert_eq!(meta.first, 55);
    assert_eq!(log.chunk_starts("t"), vec![51, 61, 71, 81, 91]);
    let kept = log.read("t", 50, 56, 100, usize::MAX).unwrap();
    assert_eq!(offsets(&kept), vec![55, 56]);
}

#[test]
fn dedupe_window_expires() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.remember_id("t", "a", 7, 1_050).unwrap();
    log.remember_id("u", "a", 9, 1_050).unwrap();
    assert_eq!(log.lookup_id("t", "a", 1_060).unwrap(), Some(7));
    assert_eq!(log.lookup_id("u", "a", 1_060).unwrap(), Some(9));
    assert_eq!(log.lookup_id("t", "b", 1_060).unwrap(), None);
    assert_eq!(
        log.lookup_id("t", "a", 1_150).unwrap(),
        Some(7),
        "previous bucket"
    );
    assert_eq!(
        log.lookup_id("t", "a", 1_151).unwrap(),
        None,
        "older than the window"
    );
    log.remember_id("t", "b", 8, 1_250).unwrap();
    let dedupe_trees = |log: &SledLog| {
        let names = log.db.tree_names();
        names
            .iter()
            .filter(|n| n.starts_with(DEDUPE_PREFIX.as_bytes()))
            .count()
    };
    assert_eq!(dedupe_trees(&log), 2);
    log.expire_ids(1_199).unwrap();
    assert_eq!(
        dedupe_trees(&log),
        2,
        "bucket 10 is the previous bucket at 1199"
    );
    log.expire_ids(1_250).unwrap();
    assert_eq!(
        dedupe_trees(&log),
        1,
        "bucket 10 is two windows old at 1250"
    );
    assert_eq!(log.lookup_id("t", "b", 1_300).unwrap(), Some(8));
    drop(log);
    let log = open(&dir);
    assert_eq!(
        log.lookup_id("t", "b", 1_300).unwrap(),
        Some(8),
        "buckets reload"
    );
    log.expire_ids(10_000).unwrap();
    assert_eq!(dedupe_trees(&log), 0);
    // An id remembered late with an old time (an entry applied late, a snapshot) goes
    // below the expired floor: kept nowhere, no dropped bucket reopened, and no error.
    log.remember_id("t", "late", 3, 1_050).unwrap();
    assert_eq!(dedupe_trees(&log), 0);
    assert_eq!(log.remembered_ids("t").unwrap(), vec![]);
    log.remember_id("t", "now", 4, 10_000).unwrap();
    assert_eq!(
        log.remembered_ids("t").unwrap(),
        vec![("now".to_string(), 4, 10_000)]
    );
}

#[test]
fn corrupt_records_give_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 8, 4);
    // Offsets 1..=4 are one chunk: garble it.
    log.put_raw("t", 1, &[0xff, 0xff, 0xff]);
    let err = log.read("t", 1, 8, 100, usize::MAX).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { what: "chunk", .. }),
        "{err}"
    );
    assert_eq!(log.read("t", 5, 8, 100, usize::MAX).unwrap().len(), 4);
    log.put_raw("t", 5, b"");
    let policy = RetentionPolicy {
        max_messages: 100,
        max_age_ms: 10,
    };
    let err = log.apply_retention("t", &policy, 1000).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    log.meta.insert("t", &b"\x01garbage"[..]).unwrap();
    log.flush().unwrap();
    drop(log);
    let err = reopen_err(&dir);
    assert!(err.contains("corrupt meta record"), "{err}");
}

/// Opens a store that should be refused as damaged; the error's message.
pub(super) fn reopen_err(dir: &TempDir) -> String {
    // sled releases its file lock from a background thread: poll until it did.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let err = loop {
        match SledLog::open(dir.path(), opts()) {
            Err(StorageError::Open { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.err().expect("a damaged store is refused"),
        }
    };
    assert!(matches!(err, StorageError::Damaged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("restore it from a backup"), "{text}");
    text
}

#[test]
fn a_last_chunk_that_does_not_decode_is_reported_damaged_at_open_and_never_served() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    log.create("u", "e1", 1).unwrap();
    append_range(&log, "t", 1, 6, 4);
    append_range(&log, "u", 1, 3, 4);
    // Offsets 5..=6 are the last chunk; open decodes it to find the head.
    log.put_raw("t", 5, &[0xff, 0x01]);
    log.flush().unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.damage().take(), vec![Damaged::Topic("t".into())]);
    // Its head is unknown: nothing of it is served (replication replaces the copy).
    let served = log.read("t", 1, 6, 10, usize::MAX);
    assert!(served.map_or(true, |m| m.is_empty()), "never served");
    assert_eq!(log.meta("u").unwrap().unwrap().head, 3, "the others load");
}

#[test]
fn a_store_behind_its_mark_is_refused_and_one_in_step_opens() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    assert!(log.mark_running().unwrap());
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 3, 3);
    log.mark_clean().unwrap();
    let behind = lock(&log.mark).clone();
    drop(log);
    // In step: opens, and another start and clean stop move the mark on.
    let log = open(&dir);
    assert!(log.mark_running().unwrap());
    log.mark_clean().unwrap();
    assert_eq!(lock(&log.mark).generation, behind.generation + 2);
    // sled's files go back to an older generation, as if its last writes were lost.
    log.meta
        .insert(MARK_KEY, encode("store mark", &behind).unwrap())
        .unwrap();
    log.flush().unwrap();
    drop(log);
    let err = reopen_err(&dir);
    assert!(err.contains("lost writes"), "{err}");
}

#[test]
fn a_store_that_lost_its_contents_is_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    assert!(log.mark_running().unwrap());
    log.create("t", "e1", 1).unwrap();
    log.mark_clean().unwrap();
    drop(log);
    // sled opens a truncated `db` file as an empty store.
    std::fs::File::create(dir.path().join("db")).unwrap();
    let err = reopen_err(&dir);
    assert!(err.contains("hold no store"), "{err}");
}

#[test]
fn concurrent_reads_see_contiguous_retained_messages() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(&dir));
    log.create("t", "e1", 1).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, done) = (Arc::clone(&log), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let first = log.meta("t").unwrap().map_or(1, |m| m.first);
                    let got = log.read("t", 0, u64::MAX, 50, usize::MAX).unwrap();
                    if let Some(m) = got.first() {
                        assert!(m.offset >= first, "read {} below first {first}", m.offset);
                    }
                    for pair in got.windows(2) {
                        assert_eq!(pair[1].offset, pair[0].offset + 1);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let policy = RetentionPolicy {
        max_messages: 40,
        max_age_ms: u64::MAX,
    };
    for start in (1..=2000).step_by(10) {
        append_range(&log, "t", start, start + 9, 10);
        log.apply_retention("t", &policy, 0).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader panicked") > 0);
    }
    assert_eq!(
        log.meta("t").unwrap().map(|m| (m.first, m.head)),
        Some((1961, 2000))
    );
    assert!(log.chunk_starts("t").len() <= 4);
}

#[test]
fn consumers_are_stored_per_topic_deleted_and_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(&dir);
        log.save_consumer("a", "c1", b"one").unwrap();
        log.save_consumer("a", "c2", b"two").unwrap();
        log.save_consumer("a", "c1", b"uno").unwrap();
        log.save_consumer("ab", "c3", b"three").unwrap();
        log.save_consumer("a", "gone", b"four").unwrap();
        log.delete_consumer("a", "gone").unwrap();
        log.delete_consumer("a", "never-saved").unwrap();
        log.flush().unwrap();
    }
    let log = open(&dir);
    let mut a = log.consumers("a").unwrap();
    a.sort();
    assert_eq!(
        a,
        vec![
            ("c1".to_string(), b"uno".to_vec()),
            ("c2".to_string(), b"two".to_vec())
        ]
    );
    assert_eq!(log.consumers("ab").unwrap().len(), 1);
    assert!(log.consumers("zz").unwrap().is_empty());
}

#[test]
fn one_append_is_stored_as_chunks_and_read_from_any_offset() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    // 600 messages in one append: chunks of 256, 256 and 88.
    append_range(&log, "t", 1, 600, 600);
    append_range(&log, "t", 601, 603, 1);
    let chunks = log.chunk_starts("t");
    assert_eq!(chunks, vec![1, 257, 513, 601, 602, 603]);
    for from in [1, 2, 256, 257, 300, 512, 513, 600, 601, 603] {
        let got = log.read("t", from, 603, 10, usize::MAX).unwrap();
        let want: Vec<u64> = (from..=603).take(10).collect();
        assert_eq!(offsets(&got), want, "from {from}");
        assert_eq!(got[0], msg(from));
    }
    drop(log);
    let log = open(&dir);
    assert_eq!(log.meta("t").unwrap().unwrap().head, 603);
}

#[test]
fn chunks_without_their_topic_are_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 6, 4);
    log.flush().unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.chunk_starts("t"), vec![1, 5]);
    // sled lost the topic's meta record: its messages are not silently dropped.
    log.meta.remove("t").unwrap();
    log.flush().unwrap();
    drop(log);
    let err = reopen_err(&dir);
    assert!(err.contains("meta record is missing"), "{err}");
}

#[path = "sled_layout_tests.rs"]
mod layout;
