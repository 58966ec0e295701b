//! Tests of the bounded layout: message trees shared by topics, checksummed chunks, and the
//! migration from the previous layout (a tree per segment).

use super::super::*;
use super::{append_range, msg, offsets, open, reopen_err};
use tempfile::TempDir;

/// A topic sharing `topic`'s message tree whose name starts with `topic`.
fn longer_neighbour(topic: &str, stripes: usize) -> String {
    (0..)
        .map(|i| format!("{topic}{i}"))
        .find(|n| stripe_of(n, stripes) == stripe_of(topic, stripes))
        .expect("some name shares the stripe")
}

#[test]
fn many_topics_do_not_create_trees() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    let before = log.db.tree_names().len();
    for i in 0..5_000u64 {
        let topic = format!("user.{i}");
        log.create(&topic, "e1", 1).unwrap();
        log.append(&topic, &[msg(1)]).unwrap();
    }
    let after = log.db.tree_names().len();
    assert_eq!(after, before, "topics must not add trees");
    assert!(after <= MESSAGE_TREES as usize + 3, "{after} trees");
    log.flush().unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.topics().unwrap().len(), 5_000);
    let got = log.read("user.4999", 1, 1, 10, usize::MAX).unwrap();
    assert_eq!(got, vec![msg(1)]);
}

#[test]
fn retention_and_replace_never_touch_another_topics_keys() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    let stripes = log.msgs.len();
    // "t" is a prefix of the others; all share one message tree.
    let longer = longer_neighbour("t", stripes);
    let colon = longer_neighbour("t:", stripes);
    let named = ["t".to_string(), longer.clone(), colon.clone()];
    let mut before = "s".to_string();
    while stripe_of(&before, stripes) != stripe_of("t", stripes) {
        before.push('s');
    }
    for topic in named.iter().chain([&before]) {
        log.create(topic, "e1", 1).unwrap();
        append_range(&log, topic, 1, 40, 4);
    }
    let everything = RetentionPolicy {
        max_messages: 0,
        max_age_ms: 0,
    };
    let meta = log.apply_retention("t", &everything, 1_000_000).unwrap();
    assert_eq!((meta.first, meta.head), (41, 40));
    assert_eq!(log.chunk_starts("t"), vec![37]);
    for other in [&longer, &colon, &before] {
        assert_eq!(log.chunk_starts(other).len(), 10, "{other}");
        let all = log.read(other, 1, 40, 100, usize::MAX).unwrap();
        assert_eq!(offsets(&all), (1..=40).collect::<Vec<_>>(), "{other}");
    }
    log.replace("t", "e2", 2, 100).unwrap();
    assert!(log.chunk_starts("t").is_empty());
    for other in [&longer, &colon, &before] {
        assert_eq!(log.chunk_starts(other).len(), 10, "{other}");
    }
    let half = RetentionPolicy {
        max_messages: 20,
        max_age_ms: u64::MAX,
    };
    log.apply_retention(&longer, &half, 0).unwrap();
    assert_eq!(log.chunk_starts(&longer), vec![21, 25, 29, 33, 37]);
    assert_eq!(log.chunk_starts(&colon).len(), 10);
}

#[test]
fn a_flipped_byte_in_a_chunk_is_corrupt_not_served() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 8, 4);
    let tree = log.msgs_tree("t").clone();
    let key = chunk_key("t", 1);
    let mut value = tree.get(&key).unwrap().expect("chunk 1").to_vec();
    // The last byte is payload: bincode still decodes it, only the checksum notices.
    *value.last_mut().unwrap() ^= 0x01;
    tree.insert(&key, value).unwrap();
    drop(tree);
    let err = log.read("t", 1, 8, 100, usize::MAX).unwrap_err();
    match err {
        StorageError::Corrupt { what, detail } => {
            assert_eq!((what, detail.as_str()), ("chunk", "t offset 1"));
        }
        other => panic!("{other}"),
    }
    assert!(
        log.read("t", 3, 3, 1, usize::MAX).is_err(),
        "no offset of it"
    );
    assert_eq!(log.read("t", 5, 8, 100, usize::MAX).unwrap().len(), 4);
    // Too short for a checksum, and a checksum over bytes that do not decode.
    log.put_raw("t", 5, &[1, 2]);
    assert!(log.read("t", 5, 5, 1, usize::MAX).is_err());
    log.put_raw("t", 5, &checksummed(&[0xff, 0xff]));
    let err = log.read("t", 6, 8, 100, usize::MAX).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { what: "chunk", .. }),
        "{err}"
    );
    // Every finding reported the topic's copy as damaged.
    assert_eq!(log.damage().take(), vec![Damaged::Topic("t".into())]);
    log.flush().unwrap();
    drop(log);
    // The last chunk is read at open: the store opens, the copy is reported damaged.
    let log = open(&dir);
    assert_eq!(log.damage().take(), vec![Damaged::Topic("t".into())]);
}

#[test]
fn reopen_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let policy = RetentionPolicy {
        max_messages: 10,
        max_age_ms: u64::MAX,
    };
    let mut metas = Vec::new();
    {
        let log = open(&dir);
        for i in 0..50u64 {
            let topic = format!("room:{i}");
            log.create(&topic, "e1", 1).unwrap();
            append_range(&log, &topic, 1, i + 1, 3);
            if i % 2 == 0 {
                log.apply_retention(&topic, &policy, 0).unwrap();
            }
            log.save_consumer(&topic, "c", b"state").unwrap();
            log.remember_id(&topic, "p", i + 1, 1_000).unwrap();
            metas.push((topic.clone(), log.meta(&topic).unwrap().unwrap()));
        }
        log.flush().unwrap();
    }
    let log = open(&dir);
    let stripes = log.meta.get(STRIPES_KEY).unwrap().expect("stripe count");
    assert_eq!(stripes.as_ref(), MESSAGE_TREES.to_be_bytes());
    for (topic, meta) in metas {
        assert_eq!(log.meta(&topic).unwrap().as_ref(), Some(&meta), "{topic}");
        let all = log.read(&topic, 0, u64::MAX, 100, usize::MAX).unwrap();
        let want: Vec<_> = (meta.first..=meta.head).map(msg).collect();
        assert_eq!(all, want, "{topic}");
        assert_eq!(log.consumers(&topic).unwrap().len(), 1);
        assert_eq!(log.lookup_id(&topic, "p", 1_010).unwrap(), Some(meta.head));
        log.append(&topic, &[msg(meta.head + 1)]).unwrap();
    }
}

#[test]
fn message_trees_that_do_not_match_the_stored_count_are_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    log.db.open_tree(msgs_name(MESSAGE_TREES)).unwrap();
    log.flush().unwrap();
    drop(log);
    let err = reopen_err(&dir);
    assert!(
        err.contains("msgs:16 exists, but the store has 16"),
        "{err}"
    );
}

#[test]
fn chunks_in_the_wrong_tree_are_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir);
    log.create("t", "e1", 1).unwrap();
    append_range(&log, "t", 1, 2, 2);
    let other = (stripe_of("t", log.msgs.len()) + 1) % log.msgs.len();
    let value = log.msgs_tree("t").get(chunk_key("t", 1)).unwrap().unwrap();
    log.msgs[other].insert(chunk_key("t", 3), value).unwrap();
    log.flush().unwrap();
    drop(log);
    let err = reopen_err(&dir);
    assert!(err.contains("topic t's messages are in msgs:"), "{err}");
}

/// Writes a store of the previous layout with sled directly: `topics` of `count` messages
/// each, one `seg:` tree per `per_segment` offsets, a chunk per `batch` messages; the first
/// `first - 1` offsets were retained away (their whole segments dropped).
fn write_old_layout(dir: &TempDir, topics: &[&str], count: u64, per_segment: u64, first: u64) {
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let meta = db.open_tree("meta").unwrap();
    for topic in topics {
        let rec = MetaRecord {
            epoch: "old".into(),
            first,
            term: 3,
            sealed: false,
            importing: false,
            sealed_for: None,
        };
        meta.insert(topic.as_bytes(), encode("meta", &rec).unwrap())
            .unwrap();
        let msgs: Vec<StoredMessage> = (1..=count).map(msg).collect();
        for segment in msgs.chunks(per_segment as usize) {
            let start = segment[0].offset;
            if start + per_segment <= first {
                continue;
            }
            let tree = db.open_tree(format!("seg:{topic}:{start:020}")).unwrap();
            for chunk in segment.chunks(3) {
                let records: Vec<StoredRecord<'_>> = chunk
                    .iter()
                    .map(|m| StoredRecord {
                        id: &m.id,
                        time_ms: m.time_ms,
                        data: &m.data,
                    })
                    .collect();
                let value = encode("chunk", &records).unwrap();
                tree.insert(offset_key(chunk[0].offset), value).unwrap();
            }
        }
    }
    // An empty segment: a crash between creating it and its first write.
    db.open_tree(format!("seg:{}:{:020}", topics[0], count + 1))
        .unwrap();
    db.open_tree("consumers")
        .unwrap()
        .insert(dedupe_key(topics[0], "c"), &b"state"[..])
        .unwrap();
    db.flush().unwrap();
}

fn old_trees(log: &SledLog) -> usize {
    let names = log.db.tree_names();
    names.iter().filter(|n| n.starts_with(b"seg:")).count()
}

/// Every topic of the old store reads back whole, at the same offsets, and takes appends.
fn assert_migrated(log: &SledLog, topics: &[&str], count: u64, first: u64) {
    assert_eq!(old_trees(log), 0, "the old trees are dropped");
    for topic in topics {
        let meta = log.meta(topic).unwrap().expect("topic");
        assert_eq!(
            (meta.epoch.as_str(), meta.first, meta.head),
            ("old", first, count)
        );
        let all = log.read(topic, 0, u64::MAX, 1000, usize::MAX).unwrap();
        assert_eq!(all, (first..=count).map(msg).collect::<Vec<_>>(), "{topic}");
    }
}

#[test]
fn an_old_store_is_migrated_at_open() {
    let dir = TempDir::new().unwrap();
    let topics = ["a", "a:b", "ab", "$dlq.a"];
    write_old_layout(&dir, &topics, 30, 10, 12);
    let log = open(&dir);
    assert_migrated(&log, &topics, 30, 12);
    assert_eq!(log.consumers("a").unwrap().len(), 1);
    // Whole old chunks were copied, checksummed: 11..=13 is one chunk.
    assert_eq!(log.chunk_starts("a")[0], 11);
    log.append("a", &[msg(31)]).unwrap();
    log.flush().unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.meta("a").unwrap().map(|m| m.head), Some(31));
    assert_migrated(&log, &topics[1..], 30, 12);
}

#[test]
fn a_migration_cut_short_migrates_again() {
    let dir = TempDir::new().unwrap();
    let topics = ["x", "x.y", "z"];
    write_old_layout(&dir, &topics, 20, 8, 1);
    {
        // As a crash would leave it: the stripe count and part of "x" copied (one chunk
        // changed, to see it replaced), the old trees all still there.
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        for stripe in 0..MESSAGE_TREES {
            db.open_tree(msgs_name(stripe)).unwrap();
        }
        meta.insert(STRIPES_KEY, &MESSAGE_TREES.to_be_bytes())
            .unwrap();
        let tree = db
            .open_tree(msgs_name(stripe_of("x", MESSAGE_TREES as usize) as u32))
            .unwrap();
        let value = encode_chunk(&[msg(1), msg(2), msg(3)]).unwrap();
        tree.insert(chunk_key("x", 1), value).unwrap();
        tree.insert(chunk_key("x", 4), encode_chunk(&[msg(9)]).unwrap())
            .unwrap();
        // "z" was copied and its trees dropped before the crash.
        let z_tree = db
            .open_tree(msgs_name(stripe_of("z", MESSAGE_TREES as usize) as u32))
            .unwrap();
        for start in [1u64, 9, 17] {
            let name = format!("seg:z:{start:020}");
            for item in db.open_tree(&name).unwrap().iter() {
                let (key, value) = item.unwrap();
                let offset = decode_offset(&key).unwrap();
                z_tree
                    .insert(chunk_key("z", offset), checksummed(&value))
                    .unwrap();
            }
            db.drop_tree(name).unwrap();
        }
        db.flush().unwrap();
    }
    let log = open(&dir);
    assert_migrated(&log, &topics, 20, 1);
}

#[test]
fn an_old_segment_without_its_topic_is_refused() {
    let dir = TempDir::new().unwrap();
    write_old_layout(&dir, &["t"], 5, 4, 1);
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("meta").unwrap().remove("t").unwrap();
        db.flush().unwrap();
    }
    let err = reopen_err(&dir);
    assert!(err.contains("meta record is missing"), "{err}");
}
