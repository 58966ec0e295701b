//! Process lifecycle: durability across `kill -9` for each fsync mode, epochs after unclean
//! stops, the graceful drain on SIGTERM, idempotency across restarts, config errors at start,
//! and the `starling pub` / `starling sub` command-line clients.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// One acknowledged publish.
#[derive(Debug, Clone)]
struct Acked {
    offset: u64,
    id: String,
    data: Value,
}

/// Publishes `n` messages to `topic` from `tasks` concurrent HTTP publishers (every third
/// message carries its own id); returns the epoch and every acknowledgement.
async fn publish_concurrently(
    node: &TestNode,
    topic: &str,
    n: usize,
    tasks: usize,
) -> (String, Vec<Acked>) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/topics/{}/messages", node.http(), enc(topic));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let client = client.clone();
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in (t..n).step_by(tasks) {
                let data = json!({"task": t, "i": i, "pad": "x".repeat(i % 50)});
                let mut body = json!({ "data": data });
                if i % 3 == 0 {
                    body["id"] = json!(format!("msg-{i}"));
                }
                let res = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("publish request");
                let status = res.status().as_u16();
                let reply: Value = res.json().await.expect("publish reply");
                assert_eq!(status, 201, "publish {i} failed: {reply}");
                assert_eq!(reply["duplicate"], false, "{reply}");
                if i % 3 == 0 {
                    assert_eq!(reply["id"], format!("msg-{i}"), "{reply}");
                }
                let epoch = reply["epoch"].as_str().expect("epoch").to_string();
                let ack = Acked {
                    offset: reply["offset"].as_u64().expect("offset"),
                    id: reply["id"].as_str().expect("id").to_string(),
                    data,
                };
                acks.push((epoch, ack));
            }
            acks
        }));
    }
    let mut epochs = HashSet::new();
    let mut all = Vec::new();
    for h in handles {
        for (epoch, ack) in h.await.expect("publisher task") {
            epochs.insert(epoch);
            all.push(ack);
        }
    }
    assert_eq!(
        epochs.len(),
        1,
        "acknowledgements span several epochs: {epochs:?}"
    );
    assert_eq!(all.len(), n);
    (epochs.into_iter().next().unwrap(), all)
}

/// Reads every retained message of `topic` with short polls, page by page; returns the
/// epoch and the envelopes in order.
async fn read_all(node: &TestNode, topic: &str) -> (String, Vec<Value>) {
    let mut after = 0u64;
    let mut epoch: Option<String> = None;
    let mut out = Vec::new();
    for _ in 0..1000 {
        let mut path = format!(
            "/v1/topics/{}/messages?after={after}&limit=1000&timeout=0",
            enc(topic)
        );
        if let Some(e) = &epoch {
            path.push_str(&format!("&epoch={e}"));
        }
        let (status, body) = get_json(node, &path).await;
        assert_eq!(status, 200, "poll failed: {body}");
        assert_eq!(
            body["recovered"], true,
            "reading back lost the position: {body}"
        );
        let this_epoch = body["epoch"].as_str().expect("epoch").to_string();
        if let Some(e) = &epoch {
            assert_eq!(&this_epoch, e, "epoch changed while reading");
        }
        epoch = Some(this_epoch);
        let msgs = body["messages"].as_array().expect("messages").clone();
        if msgs.is_empty() {
            assert_eq!(body["next"], after, "{body}");
            return (epoch.unwrap(), out);
        }
        let next = body["next"].as_u64().expect("next");
        assert_eq!(
            Some(next),
            msgs.last().unwrap()["offset"].as_u64(),
            "next is the last offset returned"
        );
        out.extend(msgs);
        after = next;
    }
    panic!("reading {topic} did not end");
}

/// The topic's epoch as `GET /v1/topics/{topic}` reports it.
async fn topic_epoch(node: &TestNode, topic: &str) -> String {
    let (status, body) = get_json(node, &format!("/v1/topics/{}", enc(topic))).await;
    assert_eq!(status, 200, "topic info: {body}");
    body["epoch"].as_str().expect("epoch").to_string()
}

/// Asserts that `read` holds exactly offsets 1..=n and every acknowledged message as acked.
fn assert_all_acked_present(topic: &str, epoch: &str, acks: &[Acked], read: &[Value]) {
    let offsets: Vec<u64> = read
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    let expected: Vec<u64> = (1..=acks.len() as u64).collect();
    assert_eq!(
        offsets,
        expected,
        "offsets after restart are not exactly 1..={}",
        acks.len()
    );
    let by_offset: BTreeMap<u64, &Value> = read
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m))
        .collect();
    let mut seen = HashSet::new();
    for ack in acks {
        assert!(
            seen.insert(ack.offset),
            "offset {} was acknowledged twice",
            ack.offset
        );
        let m = by_offset
            .get(&ack.offset)
            .unwrap_or_else(|| panic!("acknowledged offset {} lost", ack.offset));
        assert_eq!(m["id"], ack.id.as_str(), "id at offset {}", ack.offset);
        assert_eq!(m["data"], ack.data, "data at offset {}", ack.offset);
        assert_eq!(m["topic"], topic);
        assert_eq!(m["epoch"], epoch, "envelope epoch at offset {}", ack.offset);
    }
}

/// Publishes concurrently, kills the node with SIGKILL right after the last acknowledgement,
/// restarts it and checks that every acknowledged message survived unchanged.
async fn acked_messages_survive_kill9(fsync: &str, n: usize, tasks: usize) {
    let mut node = TestNode::start(&format!("[storage]\nfsync = \"{fsync}\"\n"));
    let topic = format!("durable.{fsync}");
    let (epoch, acks) = publish_concurrently(&node, &topic, n, tasks).await;
    node.kill9();
    node.restart();
    let (read_epoch, read) = read_all(&node, &topic).await;
    assert_eq!(
        read_epoch, epoch,
        "the epoch changed although no acknowledged data was lost"
    );
    assert_eq!(topic_epoch(&node, &topic).await, epoch);
    assert_all_acked_present(&topic, &epoch, &acks, &read);
    // The log continues after the recovered head: no offset is handed out twice.
    let next = publish_ok(&node, &topic, json!("after restart")).await;
    assert_eq!(next, n as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_fsync_keeps_every_acked_message_through_kill9() {
    acked_messages_survive_kill9("batch", 500, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn always_fsync_keeps_every_acked_message_through_kill9() {
    acked_messages_survive_kill9("always", 50, 8).await;
}

#[tokio::test]
async fn fsync_none_changes_epoch_only_after_an_unclean_stop() {
    let mut node = TestNode::start("[storage]\nfsync = \"none\"\n");
    let topic = "volatile";
    for i in 1..=5u64 {
        assert_eq!(publish_ok(&node, topic, json!({ "i": i })).await, i);
    }
    let epoch = topic_epoch(&node, topic).await;

    // A clean stop flushes: same epoch, same messages.
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status: {status}");
    node.restart();
    let (after_clean, read) = read_all(&node, topic).await;
    assert_eq!(after_clean, epoch, "a clean stop must keep the epoch");
    let offsets: Vec<u64> = read.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    for i in 6..=10u64 {
        assert_eq!(publish_ok(&node, topic, json!({ "i": i })).await, i);
    }

    // kill -9 may have lost acknowledged messages: the node must start a new epoch.
    node.kill9();
    node.restart();
    let new_epoch = topic_epoch(&node, topic).await;
    assert_ne!(
        new_epoch, epoch,
        "epoch unchanged after kill -9 with fsync=none"
    );
    let (status, body) = get_json(
        &node,
        &format!("/v1/topics/{topic}/messages?after=10&epoch={epoch}&timeout=0"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["recovered"], false,
        "old-epoch poll must be told: {body}"
    );
    assert_eq!(body["epoch"], new_epoch.as_str());
    let mut ws = WsClient::connect(&node).await;
    let sub = ws.subscribe(topic, Some(10), Some(&epoch)).await;
    assert_eq!(
        sub["recovered"], false,
        "old-epoch subscribe must be told: {sub}"
    );
    assert_eq!(sub["epoch"], new_epoch.as_str());
    let (status, reply) = publish(&node, topic, json!("new"), None).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["epoch"], new_epoch.as_str());
}

#[tokio::test]
async fn sigterm_drains_every_transport_and_exits_zero() {
    let mut node = TestNode::start("");
    let topic = "drain";
    let mut acks = Vec::new();
    for i in 1..=3u64 {
        let (status, reply) =
            publish(&node, topic, json!({ "i": i }), Some(&format!("d{i}"))).await;
        assert_eq!(status, 201, "{reply}");
        acks.push(Acked {
            offset: reply["offset"].as_u64().unwrap(),
            id: format!("d{i}"),
            data: json!({ "i": i }),
        });
    }
    let epoch = topic_epoch(&node, topic).await;

    let mut ws = WsClient::connect(&node).await;
    ws.subscribe(topic, Some(0), None).await;
    assert_eq!(ws.offsets(3).await, vec![1, 2, 3]);

    let mut sse =
        SseClient::connect(&node, &format!("/v1/topics/{topic}/events?after=0"), None).await;
    assert_eq!(sse.status, 200);
    for want in 1..=3u64 {
        assert_eq!(sse.next_data().await.json()["offset"], want);
    }

    let poll_url = format!(
        "{}/v1/topics/{topic}/messages?after=3&timeout=30",
        node.http()
    );
    let long_poll = tokio::spawn(async move {
        let res = reqwest::get(poll_url).await.expect("long poll");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    });
    wait_for("the long poll to reach the server", || async {
        // The gauge appears with the first poll session.
        (node
            .count("starling_connections", "transport=\"poll\"")
            .await
            == 1.0)
            .then_some(())
    })
    .await;

    unsafe {
        libc::kill(node.pid(), libc::SIGTERM);
    }
    assert_eq!(
        ws.closed().await,
        Some(1001),
        "WebSocket close code on shutdown"
    );
    while let Some(ev) = sse.next().await {
        assert_ne!(
            ev.event, "message",
            "unexpected message while draining: {ev:?}"
        );
    }
    let (status, body) = long_poll.await.expect("long poll task");
    assert_eq!(status, 200, "in-flight long poll on shutdown: {body}");
    assert_eq!(body["messages"], json!([]), "{body}");
    let exit = node.terminate();
    assert!(exit.success(), "exit status after SIGTERM: {exit}");

    node.restart();
    let (read_epoch, read) = read_all(&node, topic).await;
    assert_eq!(read_epoch, epoch);
    assert_all_acked_present(topic, &epoch, &acks, &read);
}

#[tokio::test]
async fn idempotency_key_survives_kill9() {
    let mut node = TestNode::start("");
    let topic = "idem";
    assert_eq!(publish_ok(&node, topic, json!("first")).await, 1);
    let (status, first) = publish(&node, topic, json!("keyed"), Some("k1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["offset"], 2);
    assert_eq!(first["duplicate"], false);
    node.kill9();
    node.restart();
    let (status, again) = publish(&node, topic, json!("keyed, resent"), Some("k1")).await;
    assert_eq!(status, 200, "resend after restart: {again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["offset"], 2, "{again}");
    assert_eq!(again["id"], "k1");
    assert_eq!(again["epoch"], first["epoch"]);
    // The duplicate stored nothing: the next publish takes the next offset.
    assert_eq!(publish_ok(&node, topic, json!("third")).await, 3);
    let (_, read) = read_all(&node, topic).await;
    assert_eq!(read.len(), 3);
    assert_eq!(read[1]["data"], "keyed");
}

/// Runs the binary with `args` in `dir`, killing it if it outlives the deadline; returns the
/// exit status, stdout and stderr.
fn run_cli(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out_path = dir.join("cli.stdout");
    let err_path = dir.join("cli.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn starling");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`starling {}` did not exit", args.join(" "));
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status, stdout, stderr)
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let nodes = format!(
        "data_dir = {:?}\n[[nodes]]\nid = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\n",
        dir.join("data").display().to_string()
    );
    let cases = [
        (
            "zero.toml",
            format!("{nodes}[retention]\nmax_messages = 0\n"),
            "n1",
            "retention.max_messages",
        ),
        (
            "typo.toml",
            format!("{nodes}[limits]\nmax_mesage_bytes = 5\n"),
            "n1",
            "max_mesage_bytes",
        ),
        (
            "fsync.toml",
            format!("{nodes}[storage]\nfsync = \"sometimes\"\n"),
            "n1",
            "fsync",
        ),
        ("node.toml", nodes.clone(), "zz9", "zz9"),
    ];
    for (file, text, id, key) in cases {
        let path = dir.join(file);
        std::fs::write(&path, &text).expect("write config");
        let (status, stdout, stderr) =
            run_cli(dir, &["node", id, "--config", path.to_str().unwrap()]);
        assert!(
            !status.success(),
            "{file}: node started with a bad config; stdout: {stdout}"
        );
        assert!(
            stderr.contains(key),
            "{file}: stderr does not name `{key}`: {stderr}"
        );
        assert!(
            !stdout.contains("listening on"),
            "{file}: node listened: {stdout}"
        );
    }
}

#[tokio::test]
async fn cli_pub_and_sub_talk_to_a_node() {
    let node = TestNode::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = node.http();
    let (status, stdout, stderr) = run_cli(
        tmp.path(),
        &["pub", "cli.topic", r#"{"a":1}"#, "--url", &url],
    );
    assert!(status.success(), "starling pub failed: {stderr}");
    let reply: Value = serde_json::from_str(stdout.trim()).expect("pub prints the reply as JSON");
    assert_eq!(reply["offset"], 1, "{reply}");
    assert_eq!(reply["topic"], "cli.topic");
    assert_eq!(reply["duplicate"], false);
    let (status, stdout, stderr) = run_cli(
        tmp.path(),
        &["pub", "cli.topic", "bare", "--id", "c1", "--url", &url],
    );
    assert!(status.success(), "starling pub --id failed: {stderr}");
    let keyed: Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(keyed["offset"], 2, "{keyed}");
    assert_eq!(keyed["id"], "c1");

    let mut sub = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["sub", "cli.topic", "--after", "0", "--url", &url])
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn starling sub");
    let stdout = sub.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("starling sub printed no line in time");
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("sub line is not JSON ({e}): {line}"))
    };
    let first = next_line();
    assert_eq!(first["offset"], 1, "{first}");
    assert_eq!(first["data"], json!({"a": 1}));
    let second = next_line();
    assert_eq!(second["offset"], 2, "{second}");
    assert_eq!(second["data"], "bare");
    // Replay is done (the offsets above came in order); a live message follows.
    assert_eq!(
        publish_ok(&node, "cli.topic", json!({"live": true})).await,
        3
    );
    let live = next_line();
    assert_eq!(live["offset"], 3, "{live}");
    assert_eq!(live["data"], json!({"live": true}));
    assert!(
        matches!(sub.try_wait(), Ok(None)),
        "starling sub exited early"
    );
    let _ = sub.kill();
    let _ = sub.wait();
}
