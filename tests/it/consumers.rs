//! Consumers (`consumer=NAME`) against PROTOCOL.md "Delivery modes": acks by offset and
//! `upto`, redelivery after `ack_wait`, dead letters, nack, sharing and redelivery on a
//! dropped connection, `max_inflight`, SSE and pull consumers, persistence through kill -9,
//! refused acks and the info route.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Short deadlines: ack_wait 300 ms, 50 ms backoff, 3 attempts.
const FAST: &str =
    "[consumers]\nack_wait_ms = 300\nmin_ack_wait_ms = 50\nbackoff_ms = [50]\nmax_deliver = 3\n";
/// An ack_wait that never expires within a test: only acks, nacks and drops move things.
pub(crate) const SLOW: &str =
    "[consumers]\nack_wait_ms = 60000\nmin_ack_wait_ms = 50\nbackoff_ms = [50]\n";

/// Subscribes as consumer `name` with extra subscribe fields; checks the `subscribed` reply
/// and returns it with any messages that (wrongly) came before it.
async fn join_any(c: &mut WsClient, topic: &str, name: &str, extra: Value) -> (Value, Vec<Value>) {
    let mut f = json!({"type": "subscribe", "topic": topic, "consumer": name, "req": 1});
    for (k, v) in extra.as_object().expect("extra fields") {
        f[k] = v.clone();
    }
    c.send(f).await;
    let mut early = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] != "message" {
            assert_eq!(v["type"], "subscribed", "{v}");
            assert_eq!(
                (&v["req"], &v["topic"], &v["consumer"]),
                (&json!(1), &json!(topic), &json!(name)),
                "{v}"
            );
            assert!(v["ack_floor"].as_u64().is_some(), "{v}");
            return (v, early);
        }
        early.push(v);
    }
}

/// [`join_any`], and the reply must come before any message (PROTOCOL.md: the reply, then
/// the messages).
pub(crate) async fn join(c: &mut WsClient, topic: &str, name: &str, extra: Value) -> Value {
    let (v, early) = join_any(c, topic, name, extra).await;
    assert!(
        early.is_empty(),
        "messages came before the `subscribed` reply: {early:?} then {v}"
    );
    v
}

/// (offset, attempt) of a delivery; a consumer delivery must carry `attempt`.
fn oa(v: &Value) -> (u64, u64) {
    let attempt = v["attempt"].as_u64();
    (
        v["offset"].as_u64().expect("offset"),
        attempt.unwrap_or_else(|| panic!("no attempt: {v}")),
    )
}

/// The next frame, which must be a message; returns (offset, attempt).
pub(crate) async fn next_msg(c: &mut WsClient) -> (u64, u64) {
    let v = c.recv().await;
    assert_eq!(v["type"], "message", "expected a message, got {v}");
    oa(&v)
}

/// Sends a ping; returns the messages that arrived before its pong.
pub(crate) async fn until_pong(c: &mut WsClient, req: u64) -> Vec<(u64, u64)> {
    c.send(json!({"type": "ping", "req": req})).await;
    let mut out = Vec::new();
    loop {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("pong") if v["req"] == req => return out,
            Some("message") => out.push(oa(&v)),
            _ => panic!("unexpected frame {v}"),
        }
    }
}

/// Sends a ping and asserts that the very next frame is its pong (nothing was delivered).
pub(crate) async fn nothing_pending(c: &mut WsClient, req: u64) {
    let got = until_pong(c, req).await;
    assert_eq!(got, vec![], "nothing should have been delivered");
}

pub(crate) fn info_path(topic: &str, name: &str) -> String {
    format!("/v1/topics/{}/consumers/{name}", enc(topic))
}

pub(crate) async fn info(node: &TestNode, topic: &str, name: &str) -> Value {
    let (status, body) = get_json(node, &info_path(topic, name)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consumer"], name, "{body}");
    body
}

/// Polls the consumer's info until `pred` holds; returns it.
pub(crate) async fn wait_info(
    node: &TestNode,
    topic: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let pred = &pred;
    wait_for(what, move || async move {
        let v = info(node, topic, name).await;
        pred(&v).then_some(v)
    })
    .await
}

/// POSTs an ack body; returns status and JSON body.
async fn ack_raw(node: &TestNode, topic: &str, name: &str, body: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{}/ack", node.http(), info_path(topic, name)))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("ack request");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

/// POSTs an ack body and asserts 200; returns the reply.
async fn ack_ok(node: &TestNode, topic: &str, name: &str, body: Value) -> Value {
    let (status, reply) = ack_raw(node, topic, name, &body.to_string()).await;
    assert_eq!(status, 200, "{body} -> {reply}");
    assert_eq!(reply["consumer"], name, "{reply}");
    reply
}

pub(crate) fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_ne!(
        body["error"]["message"].as_str().unwrap_or(""),
        "",
        "{body}"
    );
}

/// Waits until `$dlq.<topic>` holds at least `n` messages; returns their data.
pub(crate) async fn dead_letters(node: &TestNode, topic: &str, n: usize) -> Vec<Value> {
    let dlq = enc(&format!("$dlq.{topic}"));
    let path = format!("/v1/topics/{dlq}/messages?after=0&timeout=0");
    let path = &path;
    wait_for("dead letters", move || async move {
        let (status, body) = get_json(node, path).await;
        let msgs = body["messages"].as_array().filter(|m| m.len() >= n)?;
        assert_eq!(status, 200, "{body}");
        Some(msgs.iter().map(|m| m["data"].clone()).collect())
    })
    .await
}

/// A pull-consumer poll; returns (offset, attempt) of the leased messages.
pub(crate) async fn pull(node: &TestNode, topic: &str, query: &str) -> Vec<(u64, u64)> {
    let path = format!("/v1/topics/{}/messages?{query}", enc(topic));
    let (status, body) = get_json(node, &path).await;
    assert_eq!(status, 200, "{query}: {body}");
    assert!(body["epoch"].as_str().is_some(), "{body}");
    let msgs = body["messages"].as_array().expect("messages");
    msgs.iter().map(oa).collect()
}

pub(crate) async fn c_ack(c: &mut WsClient, topic: &str, name: &str, offset: u64) {
    c.send(json!({"type": "ack", "topic": topic, "consumer": name, "offset": offset}))
        .await;
}

pub(crate) async fn publish_n(node: &TestNode, topic: &str, n: u64) {
    for _ in 0..n {
        publish_ok(node, topic, json!({"n": 1})).await;
    }
}

#[tokio::test]
async fn ws_worker_acks_by_offset_and_upto() {
    let node = TestNode::start(SLOW);
    publish_n(&node, "work", 3).await;
    let mut c = WsClient::connect(&node).await;
    let (sub, early) = join_any(&mut c, "work", "w", json!({"after": 0})).await;
    assert_eq!(sub["ack_floor"], 0, "{sub}");
    publish_n(&node, "work", 3).await;
    let mut got: Vec<(u64, u64)> = early.iter().map(oa).collect();
    while got.len() < 6 {
        got.push(next_msg(&mut c).await);
    }
    assert_eq!(got, (1..=6).map(|o| (o, 1)).collect::<Vec<_>>());
    for o in [1, 3] {
        c_ack(&mut c, "work", "w", o).await;
    }
    let i = wait_info(&node, "work", "w", "acks of 1 and 3", |v| v["pending"] == 4).await;
    assert_eq!(i["ack_floor"], 1, "{i}");
    c.send(json!({"type": "ack", "topic": "work", "consumer": "w", "upto": 6}))
        .await;
    let i = wait_info(&node, "work", "w", "ack upto 6", |v| v["ack_floor"] == 6).await;
    assert_eq!(i["pending"], 0, "{i}");
    assert_eq!(i["in_flight"], 0, "{i}");
    assert_eq!(i["next"], 7, "{i}");
    assert_eq!(i["redelivered"], 0, "{i}");
    assert_eq!(i["members"], 1, "{i}");
    nothing_pending(&mut c, 2).await;
    // A message published now goes out as a first delivery.
    assert_eq!(publish_ok(&node, "work", json!("late")).await, 7);
    assert_eq!(next_msg(&mut c).await, (7, 1));
    // Checked last so that the rest is tested too: the reply comes before any message.
    assert!(
        early.is_empty(),
        "messages before the `subscribed` reply: {early:?} then {sub}"
    );
}

#[tokio::test]
async fn unacked_message_is_redelivered_then_dead_lettered() {
    let node = TestNode::start(FAST);
    let mut c = WsClient::connect(&node).await;
    join(&mut c, "redo", "r", json!({"after": 0})).await;
    publish_ok(&node, "redo", json!({"job": 1})).await;
    for attempt in 1..=3 {
        assert_eq!(next_msg(&mut c).await, (1, attempt));
    }
    let dl = dead_letters(&node, "redo", 1).await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["topic"], "redo", "{}", dl[0]);
    assert_eq!(dl[0]["consumer"], "r", "{}", dl[0]);
    assert_eq!(dl[0]["offset"], 1, "{}", dl[0]);
    assert_eq!(dl[0]["attempts"], 3, "{}", dl[0]);
    assert_eq!(dl[0]["data"], json!({"job": 1}), "{}", dl[0]);
    let i = info(&node, "redo", "r").await;
    assert_eq!(i["dead_lettered"], 1, "{i}");
    assert_eq!(i["redelivered"], 2, "{i}");
    assert_eq!(i["ack_floor"], 1, "{i}");
    assert_eq!(i["pending"], 0, "{i}");
    // The consumer moved on: the next message comes, and offset 1 never again.
    publish_ok(&node, "redo", json!({"job": 2})).await;
    assert_eq!(next_msg(&mut c).await, (2, 1));
    c_ack(&mut c, "redo", "r", 2).await;
    wait_info(&node, "redo", "r", "ack of 2", |v| v["ack_floor"] == 2).await;
}

#[tokio::test]
async fn nack_redelivers_over_ws_and_http() {
    let node = TestNode::start(SLOW);
    let mut c = WsClient::connect(&node).await;
    join(&mut c, "nk", "n", json!({"after": 0})).await;
    publish_ok(&node, "nk", json!("x")).await;
    assert_eq!(next_msg(&mut c).await, (1, 1));
    c.send(json!({"type": "nack", "topic": "nk", "consumer": "n", "offset": 1, "delay_ms": 100}))
        .await;
    assert_eq!(next_msg(&mut c).await, (1, 2));
    let reply = ack_ok(&node, "nk", "n", json!({"nack": [1], "delay_ms": 0})).await;
    assert_eq!(reply["nacked"], 1, "{reply}");
    assert_eq!(next_msg(&mut c).await, (1, 3));
    let reply = ack_ok(&node, "nk", "n", json!({"offsets": [1]})).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    let i = info(&node, "nk", "n").await;
    assert_eq!(i["ack_floor"], 1, "{i}");
    assert_eq!(i["redelivered"], 2, "{i}");
    assert_eq!(i["pending"], 0, "{i}");
}

#[tokio::test]
async fn dropped_connection_hands_its_messages_to_the_other_member() {
    let node = TestNode::start(SLOW);
    let opts = json!({"after": 0, "max_inflight": 1000});
    let mut a = WsClient::connect(&node).await;
    let mut b = WsClient::connect(&node).await;
    join(&mut a, "share", "g", opts.clone()).await;
    join(&mut b, "share", "g", opts).await;
    publish_n(&node, "share", 10).await;
    wait_info(&node, "share", "g", "10 in flight", |v| {
        v["in_flight"] == 10
    })
    .await;
    let got_a = until_pong(&mut a, 1).await;
    let got_b = until_pong(&mut b, 1).await;
    // Each offset went to exactly one of them, as a first delivery.
    let mut all: Vec<(u64, u64)> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    let want: Vec<(u64, u64)> = (1..=10).map(|o| (o, 1)).collect();
    assert_eq!(all, want, "A: {got_a:?} B: {got_b:?}");
    let set_a: BTreeSet<u64> = got_a.iter().map(|m| m.0).collect();
    let set_b: BTreeSet<u64> = got_b.iter().map(|m| m.0).collect();
    // Drop the connection that holds messages (both should: checked at the end).
    let shared = !set_a.is_empty() && !set_b.is_empty();
    let (a, mut b, set_a, set_b) = match set_a.is_empty() {
        false => (a, b, set_a, set_b),
        true => (b, a, set_b, set_a),
    };
    for o in &set_b {
        c_ack(&mut b, "share", "g", *o).await;
    }
    wait_info(&node, "share", "g", "B's acks", |v| {
        v["pending"] == set_a.len()
    })
    .await;
    drop(a);
    // ack_wait is 60 s: only the drop can bring A's messages back within the deadline.
    let mut again = Vec::new();
    while again.len() < set_a.len() {
        again.push(next_msg(&mut b).await);
    }
    assert!(again.iter().all(|m| m.1 == 2), "{again:?}");
    let again_set: BTreeSet<u64> = again.iter().map(|m| m.0).collect();
    assert_eq!(again_set, set_a, "B must get exactly A's unacked offsets");
    let i = info(&node, "share", "g").await;
    assert_eq!(i["members"], 1, "{i}");
    assert_eq!(i["redelivered"], set_a.len(), "{i}");
    b.send(json!({"type": "ack", "topic": "share", "consumer": "g", "upto": 10}))
        .await;
    wait_info(&node, "share", "g", "all acked", |v| {
        v["ack_floor"] == 10 && v["pending"] == 0
    })
    .await;
    nothing_pending(&mut b, 2).await;
    assert!(shared, "work not shared: {got_a:?} {got_b:?}");
}

#[tokio::test]
async fn max_inflight_paces_deliveries() {
    let node = TestNode::start(SLOW);
    let mut c = WsClient::connect(&node).await;
    join(&mut c, "pace", "m", json!({"after": 0, "max_inflight": 5})).await;
    publish_n(&node, "pace", 20).await;
    for batch in 0..4u64 {
        let want: Vec<(u64, u64)> = (batch * 5 + 1..=batch * 5 + 5).map(|o| (o, 1)).collect();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(next_msg(&mut c).await);
        }
        assert_eq!(got, want);
        let next = batch * 5 + 6;
        let i = wait_info(&node, "pace", "m", "5 in flight", |v| {
            v["in_flight"] == 5 && v["next"] == next
        })
        .await;
        assert_eq!(i["max_inflight"], 5, "{i}");
        // Nothing more while 5 are unacked.
        nothing_pending(&mut c, batch + 10).await;
        c.send(json!({"type": "ack", "topic": "pace", "consumer": "m", "upto": next - 1}))
            .await;
    }
    let i = wait_info(&node, "pace", "m", "all acked", |v| v["ack_floor"] == 20).await;
    assert_eq!(i["pending"], 0, "{i}");
    assert_eq!(i["redelivered"], 0, "{i}");
    nothing_pending(&mut c, 99).await;
}

#[tokio::test]
async fn sse_consumer_acks_over_http_and_gets_redeliveries() {
    let node = TestNode::start(FAST);
    publish_n(&node, "sc", 2).await;
    let path = "/v1/topics/sc/events?consumer=b&after=0&ack_wait_ms=1000";
    let mut sse = SseClient::connect(&node, path, None).await;
    assert_eq!(sse.status, 200);
    publish_n(&node, "sc", 1).await;
    let mut epoch = String::new();
    for want in 1..=3u64 {
        let ev = sse.next_data().await;
        assert_eq!(ev.event, "message", "{ev:?}");
        let env = ev.json();
        assert_eq!(
            (env["offset"].as_u64(), env["attempt"].as_u64()),
            (Some(want), Some(1))
        );
        epoch = env["epoch"].as_str().expect("epoch").to_string();
        assert_eq!(ev.id, Some(format!("{want}:{epoch}")), "{ev:?}");
    }
    let reply = ack_ok(&node, "sc", "b", json!({"offsets": [1, 3]})).await;
    assert_eq!(
        (reply["acked"].as_u64(), reply["already"].as_u64()),
        (Some(2), Some(0))
    );
    let i = info(&node, "sc", "b").await;
    assert_eq!(i["ack_floor"], 1, "{i}");
    assert_eq!(i["pending"], 1, "{i}");
    assert_eq!(i["ack_wait_ms"], 1000, "{i}");
    // Offset 2 was not acked: it comes again on the stream after ack_wait.
    let ev = sse.next_data().await;
    let env = ev.json();
    assert_eq!(ev.event, "message", "{ev:?}");
    assert_eq!(
        (env["offset"].as_u64(), env["attempt"].as_u64()),
        (Some(2), Some(2)),
        "{env}"
    );
    assert_eq!(ev.id, Some(format!("2:{epoch}")));
    let reply = ack_ok(&node, "sc", "b", json!({"upto": 3})).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    let i = info(&node, "sc", "b").await;
    assert_eq!(
        (i["ack_floor"].as_u64(), i["pending"].as_u64()),
        (Some(3), Some(0)),
        "{i}"
    );
    assert_eq!(i["redelivered"], 1, "{i}");
}

#[tokio::test]
async fn pull_consumer_leases_redelivers_and_long_polls() {
    let node = TestNode::start(
        "[consumers]\nack_wait_ms = 1000\nmin_ack_wait_ms = 50\nbackoff_ms = [50]\n",
    );
    publish_n(&node, "pl", 4).await;
    let first = pull(&node, "pl", "consumer=p&after=0&limit=2&timeout=0").await;
    assert_eq!(first, vec![(1, 1), (2, 1)]);
    let second = pull(&node, "pl", "consumer=p&limit=2&timeout=0").await;
    assert_eq!(
        second,
        vec![(3, 1), (4, 1)],
        "leased messages must not be handed out again"
    );
    let reply = ack_ok(&node, "pl", "p", json!({"offsets": [3]})).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    // Leases of 1, 2 and 4 expire after ack_wait; a long poll waits for them.
    let again = pull(&node, "pl", "consumer=p&limit=2&timeout=5").await;
    assert_eq!(again, vec![(1, 2), (2, 2)]);
    let again = pull(&node, "pl", "consumer=p&limit=2&timeout=5").await;
    assert_eq!(again, vec![(4, 2)]);
    let reply = ack_ok(&node, "pl", "p", json!({"offsets": [1, 2, 4]})).await;
    assert_eq!(reply["acked"], 3, "{reply}");
    let i = info(&node, "pl", "p").await;
    assert_eq!(
        (i["ack_floor"].as_u64(), i["pending"].as_u64()),
        (Some(4), Some(0)),
        "{i}"
    );
    assert_eq!(i["redelivered"], 3, "{i}");
    // A long poll waiting when the message is published returns it.
    let waiting = async {
        wait_for("the long poll to be waiting", || async {
            (node
                .count("starling_connections", "transport=\"poll\"")
                .await
                >= 1.0)
                .then_some(())
        })
        .await;
        publish_ok(&node, "pl", json!("new")).await
    };
    let (got, offset) = tokio::join!(pull(&node, "pl", "consumer=p&limit=2&timeout=5"), waiting);
    assert_eq!(offset, 5);
    assert_eq!(got, vec![(5, 1)]);
    let reply = ack_ok(&node, "pl", "p", json!({"upto": 5})).await;
    assert_eq!(reply["acked"], 1, "{reply}");
}

#[tokio::test]
async fn acked_state_survives_kill9() {
    let mut node = TestNode::start(SLOW);
    let mut c = WsClient::connect(&node).await;
    join(&mut c, "dur", "k", json!({"after": 0})).await;
    publish_n(&node, "dur", 10).await;
    for want in 1..=10 {
        assert_eq!(next_msg(&mut c).await, (want, 1));
    }
    let acked = [1u64, 2, 3, 5, 8];
    let reply = ack_ok(&node, "dur", "k", json!({"offsets": acked})).await;
    assert_eq!(reply["acked"], 5, "{reply}");
    node.kill9();
    drop(c);
    node.restart();
    let i = info(&node, "dur", "k").await;
    assert_eq!(i["ack_floor"], 3, "{i}");
    assert_eq!(i["pending"], 5, "{i}");
    let mut c = WsClient::connect(&node).await;
    // Messages before the reply are checked by `ws_worker_acks_by_offset_and_upto`.
    let (sub, early) = join_any(&mut c, "dur", "k", json!({})).await;
    assert_eq!(sub["ack_floor"], 3, "{sub}");
    let mut got: Vec<(u64, u64)> = early.iter().map(oa).collect();
    while got.len() < 5 {
        got.push(next_msg(&mut c).await);
    }
    got.sort_unstable();
    assert_eq!(got, vec![(4, 2), (6, 2), (7, 2), (9, 2), (10, 2)]);
    nothing_pending(&mut c, 5).await;
    assert_eq!(publish_ok(&node, "dur", json!("after")).await, 11);
    assert_eq!(next_msg(&mut c).await, (11, 1));
}

#[tokio::test]
async fn bad_acks_are_refused_and_change_nothing() {
    let mut node = TestNode::start(SLOW);
    let mut c = WsClient::connect(&node).await;
    join(&mut c, "bad", "x", json!({"after": 0})).await;
    publish_n(&node, "bad", 3).await;
    for want in 1..=3 {
        assert_eq!(next_msg(&mut c).await, (want, 1));
    }
    let before = info(&node, "bad", "x").await;
    assert_eq!(before["pending"], 3, "{before}");
    for body in [
        r#"{"offsets":[2,9]}"#,
        r#"{"upto":9}"#,
        r#"{"nack":[9]}"#,
        r#"{"offsets":"x"}"#,
        r#"{}"#,
        r#"{"offsets":[1],"upto":2}"#,
        "nope",
    ] {
        let (status, reply) = ack_raw(&node, "bad", "x", body).await;
        assert_error(status, &reply, 400, "bad_request");
        assert_eq!(info(&node, "bad", "x").await, before, "after {body}");
    }
    let reply = ack_ok(&node, "bad", "x", json!({"offsets": [1]})).await;
    assert_eq!(
        (reply["acked"].as_u64(), reply["already"].as_u64()),
        (Some(1), Some(0))
    );
    let reply = ack_ok(&node, "bad", "x", json!({"offsets": [1]})).await;
    assert_eq!(
        (reply["acked"].as_u64(), reply["already"].as_u64()),
        (Some(0), Some(1))
    );
    let (status, reply) = ack_raw(&node, "bad", "nobody", r#"{"offsets":[1]}"#).await;
    assert_error(status, &reply, 404, "not_found");
    let (status, reply) = get_json(&node, &info_path("bad", "nobody")).await;
    assert_error(status, &reply, 404, "not_found");
    // WebSocket: another consumer's name, no offset, a never-delivered offset.
    for (frame, req) in [
        (
            json!({"type": "ack", "topic": "bad", "consumer": "y", "offset": 2, "req": 7}),
            7,
        ),
        (
            json!({"type": "ack", "topic": "bad", "consumer": "x", "req": 8}),
            8,
        ),
        (
            json!({"type": "ack", "topic": "bad", "consumer": "x", "offset": 99, "req": 9}),
            9,
        ),
    ] {
        c.send(frame.clone()).await;
        let v = c.recv().await;
        assert_eq!(v["type"], "error", "{frame} -> {v}");
        assert_eq!(v["req"], req, "{v}");
        assert_eq!(v["code"], "bad_request", "{v}");
    }
    let i = info(&node, "bad", "x").await;
    assert_eq!(
        (i["ack_floor"].as_u64(), i["pending"].as_u64()),
        (Some(1), Some(2)),
        "{i}"
    );
    nothing_pending(&mut c, 10).await;
    assert!(node.alive());
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}

#[tokio::test]
async fn info_counts_acks_redeliveries_and_dead_letters() {
    let node = TestNode::start(FAST);
    let mut c = WsClient::connect(&node).await;
    let opts = json!({"after": 0, "ack_wait_ms": 1000, "max_deliver": 2});
    join(&mut c, "inf", "i", opts).await;
    publish_n(&node, "inf", 5).await;
    for want in 1..=5 {
        assert_eq!(next_msg(&mut c).await, (want, 1));
    }
    for o in [1, 2, 4] {
        c_ack(&mut c, "inf", "i", o).await;
    }
    let i = wait_info(&node, "inf", "i", "three acks", |v| v["pending"] == 2).await;
    assert_eq!(i["ack_floor"], 2, "{i}");
    assert_eq!(i["next"], 6, "{i}");
    assert_eq!(i["dead_lettered"], 0, "{i}");
    // 3 and 5 come again after ack_wait, oldest first.
    assert_eq!(next_msg(&mut c).await, (3, 2));
    assert_eq!(next_msg(&mut c).await, (5, 2));
    let reply = ack_ok(&node, "inf", "i", json!({"offsets": [3]})).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    // A nack on the last attempt dead-letters.
    let reply = ack_ok(&node, "inf", "i", json!({"nack": [5]})).await;
    assert_eq!(reply["nacked"], 1, "{reply}");
    let i = info(&node, "inf", "i").await;
    assert_eq!(i["ack_floor"], 5, "{i}");
    assert_eq!(i["next"], 6, "{i}");
    assert_eq!(i["pending"], 0, "{i}");
    assert_eq!(i["in_flight"], 0, "{i}");
    assert_eq!(i["redelivered"], 2, "{i}");
    assert_eq!(i["dead_lettered"], 1, "{i}");
    assert_eq!(i["members"], 1, "{i}");
    assert_eq!(i["max_deliver"], 2, "{i}");
    assert_eq!(i["ack_wait_ms"], 1000, "{i}");
    let dl = dead_letters(&node, "inf", 1).await;
    assert_eq!(
        (dl[0]["offset"].as_u64(), dl[0]["attempts"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(dl[0]["consumer"], "i", "{}", dl[0]);
    nothing_pending(&mut c, 3).await;
}
