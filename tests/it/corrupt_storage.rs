//! Issue 11: a node whose data directory was damaged (bytes flipped in sled's files, files
//! truncated) refuses to start with one line naming the directory and what to do: no panic,
//! no backtrace, no silent start on what is left.

use crate::harness::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Overwrites 4 bytes of `file` at `at`.
fn flip(file: &Path, at: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[0xff; 4]).expect("write");
}

fn truncate(file: &Path, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open");
    f.set_len(len).expect("truncate");
}

/// How a start attempt ended.
struct Outcome {
    exit: Option<i32>,
    listened: bool,
    stderr: String,
}

/// Starts node n1 on `data_dir` (the config's `data_dir`) and waits until it exits or
/// listens (then it is killed).
fn start(dir: &Path, data_dir: &Path) -> Outcome {
    let config = dir.join("node.toml");
    let text = format!(
        "data_dir = {:?}\n[[nodes]]\nid = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\n",
        data_dir.display().to_string()
    );
    std::fs::write(&config, text).expect("write config");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["node", "n1", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn starling");
    let deadline = Instant::now() + DEADLINE;
    let (exit, listened) = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break (status.code(), false);
        }
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        if stdout.contains("listening on") || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, stdout.contains("listening on"));
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    Outcome {
        exit,
        listened,
        stderr,
    }
}

#[tokio::test]
async fn a_damaged_data_directory_fails_start_with_one_clear_line() {
    let mut node = TestNode::start("");
    // Enough data for several of sled's 512 KiB log segments.
    let pad = "x".repeat(60_000);
    for i in 0..40 {
        publish_ok(&node, &format!("t{}", i % 3), json!(pad)).await;
    }
    assert!(node.terminate().success());
    let stopped = node.dir.join("data").join("n1");

    type Damage = fn(&Path);
    let cases: [(&str, Damage); 5] = [
        ("flipped bytes at the start of the db file", |d| {
            flip(&d.join("db"), 0)
        }),
        ("the db file truncated to nothing", |d| {
            truncate(&d.join("db"), 0)
        }),
        ("the db file's last 4 KiB cut off", |d| {
            let len = std::fs::metadata(d.join("db")).expect("db").len();
            truncate(&d.join("db"), len - 4096);
        }),
        ("the conf file truncated", |d| truncate(&d.join("conf"), 10)),
        ("the conf file with flipped bytes", |d| {
            flip(&d.join("conf"), 20)
        }),
    ];
    let mut failures = Vec::new();
    for (i, (what, damage)) in cases.iter().enumerate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let node_dir: PathBuf = data_dir.join("n1");
        copy_dir(&stopped, &node_dir);
        damage(&node_dir);
        let o = start(tmp.path(), &data_dir);
        let path = node_dir.display().to_string();
        let clear: Vec<&str> = o
            .stderr
            .lines()
            .filter(|l| l.contains(&path) && l.contains("damaged") && l.contains("backup"))
            .collect();
        let problems = [
            (o.listened, "the node started"),
            (
                matches!(o.exit, Some(0) | None),
                "exit code is not an error",
            ),
            (
                clear.len() != 1,
                "not one line naming the directory and what to do",
            ),
            (o.stderr.contains("panicked at"), "a panic was printed"),
            (
                o.stderr.to_lowercase().contains("backtrace"),
                "a backtrace was printed",
            ),
        ];
        for (_, problem) in problems.iter().filter(|(bad, _)| *bad) {
            failures.push(format!(
                "case {i} ({what}): {problem}; exit {:?}; stderr:\n{}",
                o.exit, o.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_damaged_chunk_of_the_only_copy_fails_start_and_is_never_served() {
    let mut node = TestNode::start("");
    for i in 0..5 {
        publish_ok(&node, "only", json!(i)).await;
    }
    assert!(node.terminate().success());
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    copy_dir(&node.dir.join("data").join("n1"), &data_dir.join("n1"));
    {
        // The topic's last chunk gets a flipped byte under its checksum.
        let db = sled::open(data_dir.join("n1")).expect("open the stopped node's store");
        let prefix = b"only\0";
        let (tree, key) = db
            .tree_names()
            .into_iter()
            .filter(|n| n.starts_with(b"msgs:"))
            .find_map(|n| {
                let t = db.open_tree(n).expect("tree");
                let key = t.scan_prefix(prefix).keys().next_back()?.expect("key");
                Some((t, key))
            })
            .expect("a chunk of the topic");
        let mut value = tree.get(&key).expect("get").expect("value").to_vec();
        *value.last_mut().expect("not empty") ^= 0x5a;
        tree.insert(&key, value).expect("write");
        db.flush().expect("flush");
    }
    let o = start(tmp.path(), &data_dir);
    assert!(!o.listened, "the node started on a damaged only copy");
    assert!(!matches!(o.exit, Some(0) | None), "exit {:?}", o.exit);
    let clear = o
        .stderr
        .lines()
        .filter(|l| {
            l.contains("too few other voters") && l.contains("damaged") && l.contains("backup")
        })
        .count();
    assert_eq!(clear, 1, "one line saying what to do:\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked at"), "{}", o.stderr);
}
