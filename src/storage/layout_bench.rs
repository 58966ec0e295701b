//! Measurements of the storage layout through [`SledLog`] directly, built only with
//! `--cfg starling_bench`: run them with `bench/storage-layout.sh`, which builds in release. Durable as the node's group
//! commit is: one `flush` per batch of appends. Results go to stdout.
//!
//! - `many_topics`: `STARLING_BENCH_TOPICS` (default 100,000) topics with one message each:
//!   disk use against the raw bytes, time to reopen, then the publish rate to all those
//!   distinct topics against the same number of publishes to one busy topic.
//! - `space_after_trim`: writes `STARLING_BENCH_MB` (default 1,024) MB, trims it all by
//!   retention, keeps writing (and trimming) as much again, printing disk use as it goes.

use super::{RetentionPolicy, SledLog, SledOptions, StoredMessage, TopicLog};
use bytes::Bytes;
use std::path::Path;
use std::time::Instant;

/// Appends per flush: a group commit under load.
const BATCH: usize = 64;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts() -> SledOptions {
    SledOptions {
        dedupe_window_ms: 60_000,
        cache_bytes: 64 * 1024 * 1024,
    }
}

/// Bytes the files under `dir` take on disk (like `du`).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => files(&e.path()),
            _ => 1,
        })
        .sum()
}

fn message(offset: u64, payload: usize) -> StoredMessage {
    StoredMessage {
        offset,
        id: format!("{:032x}", offset),
        time_ms: 1_700_000_000_000 + offset,
        data: Bytes::from(vec![b'x'; payload]),
    }
}

/// Raw bytes of a message as the application sees them: topic, id, time, offset, data.
fn raw(topic: &str, m: &StoredMessage) -> u64 {
    (topic.len() + m.id.len() + 16 + m.data.len()) as u64
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn open(dir: &Path) -> SledLog {
    SledLog::open(dir, opts()).expect("open")
}

#[test]
fn many_topics() {
    let n = env("STARLING_BENCH_TOPICS", 100_000);
    let dir = tempfile::tempdir_in(std::env::var("STARLING_BENCH_DIR").unwrap_or(".".into()))
        .expect("tempdir");
    let names: Vec<String> = (0..n).map(|i| format!("user.{i}")).collect();
    let mut raw_bytes = 0;
    {
        let log = open(dir.path());
        let started = Instant::now();
        for (i, topic) in names.iter().enumerate() {
            log.create(topic, "e1", 1).expect("create");
            let m = message(1, 100);
            raw_bytes += raw(topic, &m);
            log.append(topic, &[m]).expect("append");
            if i % BATCH == BATCH - 1 {
                log.flush().expect("flush");
            }
        }
        log.flush().expect("flush");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "first publish (creates the topic) to {n} topics: {:.0}/s",
            n as f64 / secs
        );
    }
    let disk = disk_bytes(dir.path());
    println!(
        "{n} topics x 1 message: disk {:.1} MB in {} files, raw {:.1} MB, ratio {:.2}",
        mb(disk),
        files(dir.path()),
        mb(raw_bytes),
        disk as f64 / raw_bytes as f64
    );
    let started = Instant::now();
    let log = open(dir.path());
    println!(
        "reopen with {n} topics: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for (i, topic) in names.iter().enumerate() {
        log.append(topic, &[message(2, 100)]).expect("append");
        if i % BATCH == BATCH - 1 {
            log.flush().expect("flush");
        }
    }
    log.flush().expect("flush");
    let distinct = n as f64 / started.elapsed().as_secs_f64();
    log.create("busy", "e1", 1).expect("create");
    let started = Instant::now();
    for offset in 1..=n {
        log.append("busy", &[message(offset, 100)]).expect("append");
        if offset % BATCH as u64 == 0 {
            log.flush().expect("flush");
        }
    }
    log.flush().expect("flush");
    let busy = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "publish, 1 message per append, flush per {BATCH}: {distinct:.0}/s to {n} distinct topics, {busy:.0}/s to one busy topic"
    );
    let disk = disk_bytes(dir.path());
    println!("after {} more messages: disk {:.1} MB", 2 * n, mb(disk));
}

/// Messages a topic retains at `head` (the last 1,000 once trimming).
fn retained(head: u64, trim: bool) -> u64 {
    if trim {
        head.min(1_000)
    } else {
        head
    }
}

#[test]
fn space_after_trim() {
    let total_mb = env("STARLING_BENCH_MB", 1024);
    let dir = tempfile::tempdir_in(std::env::var("STARLING_BENCH_DIR").unwrap_or(".".into()))
        .expect("tempdir");
    let log = open(dir.path());
    let topics: Vec<String> = (0..64).map(|i| format!("room.{i}")).collect();
    for t in &topics {
        log.create(t, "e1", 1).expect("create");
    }
    // 1 KiB messages, 64 per append (one 64 KiB chunk).
    let (payload, per_append) = (1024usize, 64u64);
    let round_bytes = (payload as u64) * per_append * topics.len() as u64;
    let rounds = total_mb * 1_000_000 / round_bytes;
    let mut head = 0u64;
    let started = Instant::now();
    let write_rounds = |log: &SledLog, count: u64, head: &mut u64, trim: bool| {
        for r in 0..count {
            let msgs: Vec<StoredMessage> = (*head + 1..=*head + per_append)
                .map(|o| message(o, payload))
                .collect();
            for t in &topics {
                log.append(t, &msgs).expect("append");
            }
            *head += per_append;
            log.flush().expect("flush");
            if trim {
                let keep = RetentionPolicy {
                    max_messages: 1_000,
                    max_age_ms: u64::MAX,
                };
                for t in &topics {
                    log.apply_retention(t, &keep, 0).expect("retention");
                }
            }
            if (r + 1) % (rounds / 8).max(1) == 0 {
                println!(
                    "  {:>6.1} s  written {:>6.0} MB  retained {:>6.1} MB  disk {:>7.1} MB",
                    started.elapsed().as_secs_f64(),
                    mb(*head * payload as u64 * topics.len() as u64),
                    mb(retained(*head, trim) * payload as u64 * topics.len() as u64),
                    mb(disk_bytes(dir.path()))
                );
            }
        }
    };
    println!("writing {total_mb} MB without retention:");
    write_rounds(&log, rounds, &mut head, false);
    let policy = RetentionPolicy {
        max_messages: 1_000,
        max_age_ms: u64::MAX,
    };
    let trim_started = Instant::now();
    for t in &topics {
        log.apply_retention(t, &policy, 0).expect("retention");
    }
    log.flush().expect("flush");
    println!(
        "trimmed to the last 1,000 messages per topic in {:.1} s: disk {:.1} MB",
        trim_started.elapsed().as_secs_f64(),
        mb(disk_bytes(dir.path()))
    );
    std::thread::sleep(std::time::Duration::from_secs(5));
    println!("5 s later, idle: disk {:.1} MB", mb(disk_bytes(dir.path())));
    println!("writing {total_mb} MB more, trimming after every round:");
    write_rounds(&log, rounds, &mut head, true);
    drop(log);
    let started = Instant::now();
    let log = open(dir.path());
    println!(
        "reopen: {:.2} s, disk {:.1} MB",
        started.elapsed().as_secs_f64(),
        mb(disk_bytes(dir.path()))
    );
    drop(log);
}
