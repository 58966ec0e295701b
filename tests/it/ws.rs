//! The WebSocket transport (`GET /v1/ws`) against the contract in PROTOCOL.md: replies and
//! their fields, idempotent publish, replay-to-live seam, resume, resets, bad input, close
//! codes (4000, 1009, 4008) and heartbeat reaping.

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Asserts a server frame's shape: `type` is the first key and equals `kind`, `req` echoed.
fn check_reply(v: &Value, kind: &str, req: Option<u64>) {
    let first_key = v.as_object().and_then(|m| m.keys().next().cloned());
    assert_eq!(
        first_key.as_deref(),
        Some("type"),
        "`type` must come first: {v}"
    );
    assert_eq!(v["type"], kind, "{v}");
    if let Some(r) = req {
        assert_eq!(v["req"], r, "req must be echoed: {v}");
    }
}

/// Sends a ping and asserts the very next frame is its pong.
async fn ping_pong(c: &mut WsClient, req: u64) {
    c.send(json!({"type": "ping", "req": req})).await;
    let v = c.recv().await;
    check_reply(&v, "pong", Some(req));
}

/// Sends raw text and asserts the next frame is an error with `code` (and `req` if given).
async fn expect_error(c: &mut WsClient, text: &str, code: &str, req: Option<u64>) -> Value {
    c.send_text(text).await;
    let v = c.recv().await;
    check_reply(&v, "error", req);
    assert_eq!(v["code"], code, "sent {text}, got {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

async fn subscribe_frame(c: &mut WsClient, f: Value) -> Value {
    let req = f["req"].as_u64();
    c.send(f).await;
    let v = c.recv().await;
    check_reply(&v, "subscribed", req);
    v
}

/// Publishes `n` messages over HTTP, `par` at a time.
async fn publish_many(node: &TestNode, topic: &str, n: usize, par: usize, data: &Value) {
    let mut left = n;
    while left > 0 {
        let k = left.min(par);
        let futs = (0..k).map(|_| publish(node, topic, data.clone(), None));
        for (status, body) in futures_util::future::join_all(futs).await {
            assert_eq!(status, 201, "publish failed: {body}");
        }
        left -= k;
    }
}

#[tokio::test]
async fn replies_echo_req_and_carry_their_fields() {
    let node = TestNode::start("");
    let mut c = WsClient::connect(&node).await;
    let sub = subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "r1", "req": 101}),
    )
    .await;
    assert_eq!(sub["topic"], "r1");
    let epoch = sub["epoch"].as_str().expect("epoch").to_string();
    assert!(
        !epoch.is_empty() && epoch.len() <= 32 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{sub}"
    );
    assert_eq!(sub["head"], 0, "{sub}");
    assert_eq!(sub["first"], 1, "{sub}");
    assert_eq!(sub["recovered"], true, "{sub}");

    c.send(json!({"type": "publish", "topic": "r1", "data": {"k": [1, 2]}, "req": 102}))
        .await;
    let (mut published, mut message) = (None, None);
    for _ in 0..2 {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("published") => published = Some(v),
            Some("message") => message = Some(v),
            _ => panic!("unexpected frame {v}"),
        }
    }
    let p = published.expect("published reply");
    check_reply(&p, "published", Some(102));
    assert_eq!(p["topic"], "r1");
    assert_eq!(p["offset"], 1);
    assert_eq!(p["epoch"], epoch.as_str());
    assert_eq!(p["duplicate"], false);
    let id = p["id"].as_str().expect("id");
    assert!(!id.is_empty());
    let m = message.expect("message");
    check_reply(&m, "message", None);
    assert_eq!(m["topic"], "r1");
    assert_eq!(m["offset"], 1);
    assert_eq!(m["epoch"], epoch.as_str());
    assert_eq!(m["id"], id);
    assert_eq!(m["data"], json!({"k": [1, 2]}));
    assert!(m["time"].as_u64().is_some(), "{m}");

    ping_pong(&mut c, 103).await;
    c.send(json!({"type": "unsubscribe", "topic": "r1", "req": 104}))
        .await;
    let u = c.recv().await;
    check_reply(&u, "unsubscribed", Some(104));
    assert_eq!(u["topic"], "r1");
    // Delivered before the HTTP reply if it were delivered at all: the pong must come first.
    assert_eq!(publish_ok(&node, "r1", json!("after-unsub")).await, 2);
    ping_pong(&mut c, 105).await;
    // Unsubscribing again is an error that echoes req.
    expect_error(
        &mut c,
        r#"{"type":"unsubscribe","topic":"r1","req":106}"#,
        "bad_request",
        Some(106),
    )
    .await;
}

#[tokio::test]
async fn publish_with_id_twice_is_a_duplicate() {
    let node = TestNode::start("");
    let mut c = WsClient::connect(&node).await;
    publish_ok(&node, "d1", json!(0)).await;
    c.send(json!({"type": "publish", "topic": "d1", "data": 1, "id": "key-1", "req": 1}))
        .await;
    let a = c.recv().await;
    check_reply(&a, "published", Some(1));
    assert_eq!(a["duplicate"], false);
    assert_eq!(a["id"], "key-1");
    assert_eq!(a["offset"], 2);
    c.send(json!({"type": "publish", "topic": "d1", "data": 2, "id": "key-1", "req": 2}))
        .await;
    let b = c.recv().await;
    check_reply(&b, "published", Some(2));
    assert_eq!(b["duplicate"], true, "{b}");
    assert_eq!(b["offset"], a["offset"]);
    assert_eq!(b["epoch"], a["epoch"]);
    assert_eq!(b["id"], "key-1");
    let (_, info) = get_json(&node, "/v1/topics/d1").await;
    assert_eq!(info["head"], 2, "a duplicate must not be stored: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_has_no_hole_and_no_duplicate() {
    let node = Arc::new(TestNode::start(""));
    let data = json!({"pad": "q".repeat(500)});
    // head + 1 of the `subscribed` reply once it arrived; 0 before.
    let sub_head = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let reader = {
        let (node, sub_head) = (node.clone(), sub_head.clone());
        tokio::spawn(async move {
            go_rx.await.expect("go");
            let mut c = WsClient::connect(&node).await;
            let f = json!({"type": "subscribe", "topic": "seam", "after": 0, "req": 7});
            let sub = subscribe_frame(&mut c, f).await;
            assert_eq!(sub["recovered"], true, "{sub}");
            assert_eq!(sub["first"], 1, "{sub}");
            sub_head.store(sub["head"].as_u64().unwrap() + 1, Ordering::Release);
            loop {
                let r = match c.next_event().await {
                    WsEvent::Json(v) if v["type"] == "message" => {
                        v["offset"].as_u64().ok_or(v.to_string())
                    }
                    WsEvent::Json(v) => Err(format!("unexpected frame {v}")),
                    WsEvent::Closed(code) => Err(format!("closed ({code:?})")),
                };
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    return;
                }
            }
        })
    };
    // A backlog, then keep publishing while the subscriber replays and goes live: at least
    // 100 more messages after it got its `subscribed` reply.
    publish_many(&node, "seam", 100, 4, &data).await;
    go_tx.send(()).unwrap();
    let (mut n, mut after_sub) = (100u64, 0);
    while after_sub < 100 {
        publish_many(&node, "seam", 4, 4, &data).await;
        n += 4;
        if sub_head.load(Ordering::Acquire) > 0 {
            after_sub += 4;
        }
    }
    let head = sub_head.load(Ordering::Acquire) - 1;
    assert!(
        (100..n).contains(&head),
        "subscribed mid-stream at head {head} of {n}"
    );
    for expected in 1..=n {
        let got = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("subscriber stalled")
            .expect("ended");
        assert_eq!(
            got,
            Ok(expected),
            "replay then live must be exactly 1..={n} in order"
        );
    }
    // Nothing extra after the seam: the next frame is the next live message.
    assert_eq!(publish_ok(&node, "seam", json!("last")).await, n + 1);
    let got = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("subscriber stalled")
        .expect("ended");
    assert_eq!(got, Ok(n + 1));
    reader.abort();
}

#[tokio::test]
async fn resume_delivers_exactly_the_missed_messages() {
    let node = TestNode::start("");
    for i in 1..=5 {
        publish_ok(&node, "res", json!(i)).await;
    }
    let mut c = WsClient::connect(&node).await;
    let sub = subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "res", "after": 0, "req": 1}),
    )
    .await;
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    assert_eq!(c.offsets(3).await, vec![1, 2, 3]);
    let last = 3;
    c.ws.close(None).await.expect("close");
    drop(c);
    for i in 6..=9 {
        publish_ok(&node, "res", json!(i)).await;
    }
    let mut c = WsClient::connect(&node).await;
    let sub = subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "res", "after": last, "epoch": epoch, "req": 2}),
    )
    .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"], epoch.as_str());
    assert_eq!(sub["head"], 9);
    assert_eq!(c.offsets(6).await, vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(publish_ok(&node, "res", json!(10)).await, 10);
    let m = c.recv().await;
    check_reply(&m, "message", None);
    assert_eq!(m["offset"], 10);
    assert_eq!(m["data"], 10);
}

#[tokio::test]
async fn wrong_epoch_resets_and_beyond_head_is_an_error() {
    let node = TestNode::start("");
    for i in 1..=3 {
        publish_ok(&node, "ep", json!(i)).await;
    }
    let mut c = WsClient::connect(&node).await;
    let sub = subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "ep", "after": 2, "epoch": "notTheEpoch1", "req": 5}),
    )
    .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert!(
        sub["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reset says why: {sub}"
    );
    assert_eq!(sub["first"], 1);
    assert_eq!(sub["head"], 3);
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    assert_ne!(epoch, "notTheEpoch1");
    assert_eq!(c.offsets(3).await, vec![1, 2, 3]);

    let mut d = WsClient::connect(&node).await;
    let frame = json!({"type": "subscribe", "topic": "ep", "after": 99, "epoch": epoch, "req": 6});
    expect_error(&mut d, &frame.to_string(), "bad_request", Some(6)).await;
    ping_pong(&mut d, 7).await;
    // The failed subscribe left nothing behind: the same topic can be subscribed now.
    let sub = subscribe_frame(
        &mut d,
        json!({"type": "subscribe", "topic": "ep", "after": 3, "epoch": epoch, "req": 8}),
    )
    .await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(publish_ok(&node, "ep", json!(4)).await, 4);
    assert_eq!(d.offsets(1).await, vec![4]);
    assert_eq!(c.offsets(1).await, vec![4]);
}

#[tokio::test]
async fn trimmed_history_is_announced_and_continues_from_first() {
    let node = TestNode::start("[retention]\nmax_messages = 100\n");
    publish_many(&node, "trim", 300, 20, &json!("x")).await;
    let info = wait_for("retention to trim the topic", || async {
        let (status, info) = get_json(&node, "/v1/topics/trim").await;
        assert_eq!(status, 200, "{info}");
        (info["first"].as_u64().unwrap() > 1).then_some(info)
    })
    .await;
    let mut c = WsClient::connect(&node).await;
    let sub = subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "trim", "after": 1, "epoch": info["epoch"], "req": 3}),
    )
    .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert!(sub["reason"].as_str().is_some(), "{sub}");
    assert_eq!(sub["head"], 300);
    let first = sub["first"].as_u64().expect("first");
    assert!(first > 2 && first <= 201, "{sub}");
    let offsets = c.offsets((300 - first + 1) as usize).await;
    assert_eq!(offsets, (first..=300).collect::<Vec<_>>());
    ping_pong(&mut c, 4).await;
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_connection_stays_usable() {
    let node = TestNode::start(
        "[limits]\nmax_message_bytes = 1024\nmax_subscriptions_per_connection = 2\n",
    );
    let mut c = WsClient::connect(&node).await;
    expect_error(&mut c, "{not json", "bad_request", None).await;
    ping_pong(&mut c, 1001).await;
    expect_error(
        &mut c,
        r#"{"type":"frobnicate","req":11}"#,
        "bad_request",
        Some(11),
    )
    .await;
    ping_pong(&mut c, 1002).await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","topic":"a b","req":12}"#,
        "invalid_topic",
        Some(12),
    )
    .await;
    ping_pong(&mut c, 1003).await;
    let long = "t".repeat(201);
    let f = json!({"type": "publish", "topic": long, "data": 1, "req": 13});
    expect_error(&mut c, &f.to_string(), "invalid_topic", Some(13)).await;
    ping_pong(&mut c, 1004).await;
    let f = json!({"type": "publish", "topic": "big", "data": "y".repeat(2000), "req": 14});
    expect_error(&mut c, &f.to_string(), "too_large", Some(14)).await;
    ping_pong(&mut c, 1005).await;
    let f = json!({"type": "publish", "topic": "$dlq.x", "data": 1, "req": 15});
    expect_error(&mut c, &f.to_string(), "forbidden", Some(15)).await;
    ping_pong(&mut c, 1006).await;
    // A malformed consumer name or an out-of-bounds setting is an error, not a subscription.
    let f = json!({"type": "subscribe", "topic": "s1", "consumer": "bad name", "req": 16});
    expect_error(&mut c, &f.to_string(), "bad_request", Some(16)).await;
    let f =
        json!({"type": "subscribe", "topic": "s1", "consumer": "c1", "max_inflight": 0, "req": 17});
    expect_error(&mut c, &f.to_string(), "bad_request", Some(17)).await;
    ping_pong(&mut c, 1007).await;

    subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "s1", "req": 17}),
    )
    .await;
    let v = expect_error(
        &mut c,
        r#"{"type":"subscribe","topic":"s1","req":18}"#,
        "bad_request",
        Some(18),
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("s1"), "{v}");
    ping_pong(&mut c, 1008).await;
    subscribe_frame(
        &mut c,
        json!({"type": "subscribe", "topic": "s2", "req": 19}),
    )
    .await;
    c.send(json!({"type": "subscribe", "topic": "s3", "req": 20}))
        .await;
    let v = c.recv().await;
    check_reply(&v, "error", Some(20));
    ping_pong(&mut c, 1009).await;

    // Nothing was stored by the refused publishes, and the live subscriptions still work.
    let (status, _) = get_json(&node, "/v1/topics/big").await;
    assert_eq!(status, 404);
    publish_ok(&node, "s2", json!("ok")).await;
    let m = c.recv().await;
    check_reply(&m, "message", None);
    assert_eq!(
        (m["topic"].as_str(), m["offset"].as_u64()),
        (Some("s2"), Some(1))
    );
    let (status, _) = get_json(&node, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn repeated_malformed_frames_close_with_4000() {
    let mut node = TestNode::start("[limits]\nmax_malformed_frames = 3\n");
    let mut other = WsClient::connect(&node).await;
    other.subscribe("m1", None, None).await;
    let mut c = WsClient::connect(&node).await;
    for _ in 0..3 {
        c.send_text("not json at all").await;
    }
    let code = loop {
        match c.next_event().await {
            WsEvent::Json(v) => {
                check_reply(&v, "error", None);
                assert_eq!(v["code"], "bad_request");
            }
            WsEvent::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(4000));
    assert!(node.alive());
    ping_pong(&mut other, 1).await;
    publish_ok(&node, "m1", json!(1)).await;
    assert_eq!(other.offsets(1).await, vec![1]);
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let mut node =
        TestNode::start("[limits]\nmax_message_bytes = 1024\nmax_ws_frame_bytes = 2048\n");
    let mut other = WsClient::connect(&node).await;
    let mut c = WsClient::connect(&node).await;
    ping_pong(&mut c, 1).await;
    let big = json!({"type": "publish", "topic": "o1", "data": "z".repeat(10 * 1024), "req": 2});
    // The server may close before reading all of it; a failed send is acceptable here.
    let _ = c.ws.send(Message::text(big.to_string())).await;
    let code = match c.next_event().await {
        WsEvent::Json(v) => panic!("expected the close, got {v}"),
        WsEvent::Closed(code) => code,
    };
    assert_eq!(
        code,
        Some(1009),
        "an oversized frame must be closed with 1009"
    );
    assert!(node.alive());
    ping_pong(&mut other, 3).await;
    let (status, _) = get_json(&node, "/v1/topics/o1").await;
    assert_eq!(status, 404, "the oversized publish must not be stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_consumer_is_closed_with_4008_and_others_get_everything() {
    let node =
        TestNode::start("[limits]\nmax_message_bytes = 8192\nmax_outbound_queue_bytes = 65536\n");
    let mut a = WsClient::connect(&node).await;
    a.subscribe("slow", None, None).await;
    let mut b = WsClient::connect(&node).await;
    b.subscribe("slow", None, None).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let b_task = tokio::spawn(async move {
        loop {
            let r = match b.next_event().await {
                WsEvent::Json(v) if v["type"] == "message" => {
                    v["offset"].as_u64().ok_or(v.to_string())
                }
                WsEvent::Json(v) => Err(format!("unexpected frame {v}")),
                WsEvent::Closed(code) => Err(format!("B was closed ({code:?})")),
            };
            let stop = r.is_err();
            if tx.send(r).is_err() || stop {
                return;
            }
        }
    });
    let data = json!({"pad": "p".repeat(4000)});
    // Publish until A has overflowed (its kernel buffers plus 64 KiB), then a little more.
    let mut n = 0u64;
    while node
        .count("starling_slow_consumer_disconnects_total", "")
        .await
        < 1.0
    {
        assert!(
            n < 40_000,
            "A was never closed as a slow consumer after {n} messages"
        );
        publish_many(&node, "slow", 100, 10, &data).await;
        n += 100;
    }
    publish_many(&node, "slow", 20, 10, &data).await;
    n += 20;
    for expected in 1..=n {
        let got = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("B stalled")
            .expect("B ended");
        assert_eq!(got, Ok(expected), "B must receive every offset in order");
    }
    b_task.abort();
    assert_eq!(
        node.metric("starling_slow_consumer_disconnects_total", "")
            .await,
        1.0,
        "only A overflowed"
    );

    let mut offsets = Vec::new();
    let code = loop {
        match a.next_event().await {
            WsEvent::Json(v) => {
                check_reply(&v, "message", None);
                offsets.push(v["offset"].as_u64().unwrap());
            }
            WsEvent::Closed(code) => break code,
        }
    };
    let k = offsets.len() as u64;
    assert!(k < n, "A got everything ({k}), so it was not slow");
    assert_eq!(
        offsets,
        (1..=k).collect::<Vec<_>>(),
        "A's messages are a contiguous prefix"
    );
    assert_eq!(
        code,
        Some(4008),
        "A read {k} messages, then the connection ended with {code:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_reaped_and_answering_clients_stay() {
    let node =
        TestNode::start("[heartbeat]\nws_ping_interval_ms = 200\nws_pong_timeout_ms = 200\n");
    let ws = "transport=\"ws\"";
    let mut r = WsClient::connect(&node).await;
    ping_pong(&mut r, 1).await;
    let mut s = WsClient::connect(&node).await;
    ping_pong(&mut s, 2).await; // its session exists; from now on it never polls
    assert_eq!(node.metric("starling_connections", ws).await, 2.0);
    let reader = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(until, r.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(other) => panic!("the answering client got {other:?} during the window"),
            }
        }
        ping_pong(&mut r, 3).await;
        (r, pings)
    });
    wait_for("the silent client to be dropped", || async {
        (node.metric("starling_connections", ws).await == 1.0).then_some(())
    })
    .await;
    let (mut r, pings) = reader.await.expect("answering client");
    assert!(pings >= 1, "the server pinged the answering client");
    assert_eq!(node.metric("starling_connections", ws).await, 1.0);
    s.closed().await; // its connection is gone (reading it would time out otherwise)
    r.ws.close(None).await.expect("close");
    wait_for("ws connections to return to 0", || async {
        (node.metric("starling_connections", ws).await == 0.0).then_some(())
    })
    .await;
}
