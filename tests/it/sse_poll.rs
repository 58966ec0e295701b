//! SSE (single and multi-topic), long polling, HTTP publish and the informational routes.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A GET with an optional `Last-Event-ID`; status and JSON body (Null if not JSON).
async fn get_with_id(node: &TestNode, path: &str, last_event_id: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{}", node.http(), path));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.expect("get");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

/// Asserts the protocol's error response: `status` and exactly `{"error":{"code","message"}}`.
fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let err = body["error"].as_object().expect("an error object");
    assert_eq!(err.len(), 2, "{body}");
    assert_eq!(err["code"], code, "{body}");
    let message = err["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{body}");
}

/// Opens an SSE stream, asserts 200 and the leading `retry: 3000`.
async fn open(node: &TestNode, path: &str, last_event_id: Option<&str>) -> SseClient {
    let mut sse = SseClient::connect(node, path, last_event_id).await;
    assert_eq!(sse.status, 200, "{path}");
    let first = sse.next().await.expect("retry event");
    assert_eq!(first.retry, Some(3000), "{first:?}");
    assert!(first.data.is_empty(), "{first:?}");
    sse
}

/// Publishes `n` messages `{"n": i}`.
async fn publish_n(node: &TestNode, topic: &str, n: usize) {
    for i in 0..n {
        publish_ok(node, topic, json!({ "n": i })).await;
    }
}

/// Reads `n` single-topic `message` events; checks each id is `<offset>:<epoch>`; returns
/// the offsets.
async fn sse_offsets(sse: &mut SseClient, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = sse.next_data().await;
        assert_eq!(ev.event, "message", "{ev:?}");
        let env = ev.json();
        let offset = env["offset"].as_u64().expect("offset");
        let id = format!("{}:{}", offset, env["epoch"].as_str().expect("epoch"));
        assert_eq!(ev.id.as_deref(), Some(id.as_str()));
        out.push(offset);
    }
    out
}

/// Reads the next data event, asserts it is a `reset`; returns its data.
async fn expect_reset(sse: &mut SseClient) -> Value {
    let ev = sse.next_data().await;
    assert_eq!(ev.event, "reset", "{ev:?}");
    ev.json()
}

/// Parses a composite id `a=1:E,b=2:F` into topic -> `offset:epoch`.
fn parse_multi_id(id: &str) -> BTreeMap<String, String> {
    id.split(',')
        .map(|p| {
            let (t, pos) = p.split_once('=').expect("composite id part");
            (t.to_string(), pos.to_string())
        })
        .collect()
}

/// Reads `n` message events of a multi-topic stream; offsets per topic, in arrival order.
async fn by_topic(sse: &mut SseClient, n: usize) -> BTreeMap<String, Vec<u64>> {
    let mut got = BTreeMap::<String, Vec<u64>>::new();
    for _ in 0..n {
        let env = sse.next_data().await.json();
        let offset = env["offset"].as_u64().expect("offset");
        let topic = env["topic"].as_str().expect("topic").to_string();
        got.entry(topic).or_default().push(offset);
    }
    got
}

async fn epoch_of(node: &TestNode, topic: &str) -> String {
    let (status, info) = get_json(node, &format!("/v1/topics/{}", enc(topic))).await;
    assert_eq!(status, 200, "{info}");
    info["epoch"].as_str().expect("epoch").to_string()
}

async fn poll(node: &TestNode, topic: &str, query: &str) -> Value {
    let path = format!("/v1/topics/{}/messages?{query}", enc(topic));
    let (status, body) = get_json(node, &path).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn poll_offsets(body: &Value) -> Vec<u64> {
    let messages = body["messages"].as_array().expect("messages");
    messages
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect()
}

// ---------------------------------------------------------------- SSE, one topic

#[tokio::test]
async fn sse_stream_retry_event_id_and_envelope() {
    let node = TestNode::start("");
    let mut sse = open(&node, "/v1/topics/env/events", None).await;
    let data = json!({"k": [1, "two"]});
    let (status, reply) = publish(&node, "env", data.clone(), Some("my-id-1")).await;
    assert_eq!(status, 201, "{reply}");
    let ev = sse.next_data().await;
    assert_eq!(ev.event, "message");
    let env = ev.json();
    let epoch = reply["epoch"].as_str().expect("epoch");
    assert!(epoch.len() <= 32 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(!epoch.is_empty());
    assert_eq!(ev.id.as_deref(), Some(format!("1:{epoch}").as_str()));
    assert_eq!(env["topic"], "env");
    assert_eq!(env["offset"], 1);
    assert_eq!(env["epoch"], epoch);
    assert_eq!(env["id"], "my-id-1");
    let time = env["time"].as_u64().expect("time");
    assert!(time > 1_600_000_000_000, "{env}");
    assert_eq!(env["data"], data);
    // Without a publisher id the server assigns one (a uuid).
    let (status, reply2) = publish(&node, "env", json!([]), None).await;
    assert_eq!(status, 201, "{reply2}");
    let env2 = sse.next_data().await.json();
    assert_eq!(env2["offset"], 2);
    assert_eq!(env2["data"], json!([]));
    assert_eq!(env2["id"], reply2["id"]);
    assert_eq!(env2["id"].as_str().map(str::len), Some(36), "{env2}");
}

#[tokio::test]
async fn sse_resume_with_last_event_id_header_and_after() {
    let node = TestNode::start("");
    let path = "/v1/topics/r/events";
    let mut sse = open(&node, path, None).await;
    publish_n(&node, "r", 3).await;
    assert_eq!(sse_offsets(&mut sse, 3).await, vec![1, 2, 3]);
    drop(sse);
    let epoch = epoch_of(&node, "r").await;
    publish_n(&node, "r", 2).await; // 4, 5 missed

    // Last-Event-ID: exactly the missed ones, in order, then live.
    let mut sse = open(&node, path, Some(&format!("3:{epoch}"))).await;
    assert_eq!(sse_offsets(&mut sse, 2).await, vec![4, 5]);
    assert_eq!(publish_ok(&node, "r", json!("live")).await, 6);
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![6]);

    // ?after=N does the same.
    let mut sse = open(&node, "/v1/topics/r/events?after=4", None).await;
    assert_eq!(sse_offsets(&mut sse, 2).await, vec![5, 6]);
    assert_eq!(publish_ok(&node, "r", json!("live")).await, 7);
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![7]);

    // ?after=0 is the oldest retained.
    let mut sse = open(&node, "/v1/topics/r/events?after=0", None).await;
    assert_eq!(sse_offsets(&mut sse, 7).await, (1..=7).collect::<Vec<_>>());

    // Last-Event-ID wins over ?after.
    let id5 = format!("5:{epoch}");
    let mut sse = open(&node, "/v1/topics/r/events?after=1", Some(&id5)).await;
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![6]);

    // Extension: ?last_event_id= for clients that cannot set headers.
    let path = format!("/v1/topics/r/events?last_event_id=6%3A{epoch}");
    let mut sse2 = open(&node, &path, None).await;
    assert_eq!(sse_offsets(&mut sse2, 1).await, vec![7]);
    assert_eq!(publish_ok(&node, "r", json!("live")).await, 8);
    assert_eq!(sse_offsets(&mut sse, 2).await, vec![7, 8]);
    assert_eq!(sse_offsets(&mut sse2, 1).await, vec![8]);
}

#[tokio::test]
async fn sse_wrong_epoch_is_reset_then_from_first() {
    let node = TestNode::start("");
    publish_n(&node, "e", 3).await;
    let epoch = epoch_of(&node, "e").await;
    let mut sse = open(&node, "/v1/topics/e/events", Some("2:someOtherEpoch9")).await;
    let d = expect_reset(&mut sse).await;
    assert_eq!(d["topic"], "e");
    assert_eq!(d["epoch"], epoch.as_str());
    assert_eq!(d["first"], 1);
    assert_eq!(d["head"], 3);
    assert_eq!(d["reason"], "epoch_changed");
    assert_eq!(sse_offsets(&mut sse, 3).await, vec![1, 2, 3]);
    publish_ok(&node, "e", json!("live")).await;
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![4]);
}

#[tokio::test]
async fn trimmed_history_is_announced_on_sse_and_poll() {
    let extra = "[retention]\nmax_messages = 100\n[storage]\nfsync = \"none\"\n";
    let node = TestNode::start(extra);
    for chunk in 0..6 {
        let futs = (0..50).map(|i| publish(&node, "t", json!(chunk * 50 + i), None));
        for (status, body) in futures_util::future::join_all(futs).await {
            assert_eq!(status, 201, "{body}");
        }
    }
    let first = wait_for("retention to trim the topic", || async {
        let (_, info) = get_json(&node, "/v1/topics/t").await;
        info["first"].as_u64().filter(|f| *f > 1)
    })
    .await;
    let epoch = epoch_of(&node, "t").await;
    // SSE: reset, then every retained message from `first`.
    let mut sse = open(&node, "/v1/topics/t/events", Some(&format!("5:{epoch}"))).await;
    let d = expect_reset(&mut sse).await;
    assert_eq!(d["topic"], "t");
    assert_eq!(d["epoch"], epoch.as_str());
    assert_eq!(d["first"], first);
    assert_eq!(d["head"], 300);
    assert_eq!(d["reason"], "trimmed");
    let got = sse_offsets(&mut sse, (301 - first) as usize).await;
    assert_eq!(got, (first..=300).collect::<Vec<_>>());
    // ?after below first gives the same reset.
    let mut sse = open(&node, "/v1/topics/t/events?after=1", None).await;
    assert_eq!(expect_reset(&mut sse).await["first"], first);
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![first]);
    // Long poll: recovered:false and messages from `first`.
    let body = poll(&node, "t", "after=5&timeout=0&limit=10").await;
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["epoch"], epoch.as_str());
    assert_eq!(poll_offsets(&body), (first..first + 10).collect::<Vec<_>>());
    assert_eq!(body["next"], first + 9);
    // Resuming exactly at the retention edge loses nothing and is recovered.
    let query = format!("after={}&timeout=0&limit=1", first - 1);
    let body = poll(&node, "t", &query).await;
    assert_eq!(body["recovered"], true, "{body}");
    assert_eq!(poll_offsets(&body), vec![first]);
}

#[tokio::test]
async fn sse_keepalive_comments_when_idle() {
    let node = TestNode::start("[heartbeat]\nsse_keepalive_ms = 200\n");
    let mut sse = open(&node, "/v1/topics/idle/events", None).await;
    assert_eq!(sse.comments, 0);
    let events = sse.until_comments(2).await;
    assert!(events.is_empty(), "an idle stream sent events: {events:?}");
    assert!(sse.comments >= 2);
    // The stream still works after keepalives.
    publish_ok(&node, "idle", json!("after keepalive")).await;
    let ev = sse.next_data().await;
    assert_eq!(ev.json()["data"], "after keepalive");
}

#[tokio::test]
async fn sse_bad_requests() {
    let node = TestNode::start("");
    for bad in ["garbage", "12", "x:abc", "-1:abc", "1:ab-c", "1:"] {
        let (status, body) = get_with_id(&node, "/v1/topics/ok/events", Some(bad)).await;
        assert_error(status, &body, 400, "bad_request");
    }
    let (status, body) = get_json(&node, "/v1/topics/ok/events?after=abc").await;
    assert_error(status, &body, 400, "bad_request");
    let long = "x".repeat(201);
    for t in ["a b", "a,b", long.as_str(), "$nope"] {
        let (status, body) = get_json(&node, &format!("/v1/topics/{}/events", enc(t))).await;
        assert_error(status, &body, 400, "invalid_topic");
    }
    publish_ok(&node, "ok", json!(1)).await;
}

// ---------------------------------------------------------------- SSE, several topics

#[tokio::test]
async fn multi_topic_sse_composite_ids_and_resume() {
    let node = TestNode::start("");
    let path = "/v1/events?topic=ma&topic=mb";
    let mut sse = open(&node, path, None).await;
    let mut ids = Vec::new();
    for (topic, offset) in [("ma", 1), ("mb", 1), ("ma", 2)] {
        assert_eq!(publish_ok(&node, topic, json!(offset)).await, offset);
        let ev = sse.next_data().await;
        assert_eq!(ev.event, "message");
        let env = ev.json();
        assert_eq!(env["topic"], topic);
        assert_eq!(env["offset"], offset);
        let id = ev.id.expect("composite id");
        let map = parse_multi_id(&id);
        assert_eq!(map.keys().collect::<Vec<_>>(), vec!["ma", "mb"], "{id}");
        let pos = format!("{}:{}", offset, env["epoch"].as_str().unwrap());
        assert_eq!(map[topic], pos, "{id}");
        ids.push(id);
    }
    let (ea, eb) = (epoch_of(&node, "ma").await, epoch_of(&node, "mb").await);
    assert_eq!(parse_multi_id(&ids[0])["mb"], format!("0:{eb}"));
    let want = parse_multi_id(&format!("ma=2:{ea},mb=1:{eb}"));
    assert_eq!(parse_multi_id(&ids[2]), want);
    drop(sse);
    publish_ok(&node, "mb", json!("b2")).await;
    publish_ok(&node, "ma", json!("a3")).await;

    // Resume from the last id: exactly mb 2 and ma 3, then live.
    let mut sse = open(&node, path, Some(&ids[2])).await;
    let want = BTreeMap::from([("ma".into(), vec![3]), ("mb".into(), vec![2])]);
    assert_eq!(by_topic(&mut sse, 2).await, want);
    publish_ok(&node, "mb", json!("b3")).await;
    let ev = sse.next_data().await;
    assert_eq!(ev.json()["data"], "b3");
    let want = parse_multi_id(&format!("ma=3:{ea},mb=3:{eb}"));
    assert_eq!(parse_multi_id(ev.id.as_deref().unwrap()), want);

    // Resume from the first id: every topic from its own position, in order per topic.
    let mut sse = open(&node, path, Some(&ids[0])).await;
    let want = BTreeMap::from([("ma".into(), vec![2, 3]), ("mb".into(), vec![1, 2, 3])]);
    assert_eq!(by_topic(&mut sse, 5).await, want);
    publish_ok(&node, "ma", json!("a4")).await;
    assert_eq!(sse.next_data().await.json()["data"], "a4");
}

#[tokio::test]
async fn multi_topic_sse_bad_requests() {
    let node = TestNode::start("");
    let (status, body) = get_json(&node, "/v1/events").await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = get_json(&node, "/v1/events?other=1").await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = get_json(&node, "/v1/events?topic=ok&topic=a%20b").await;
    assert_error(status, &body, 400, "invalid_topic");
    for bad in ["ok", "ok=1", "ok=x:e", "ok=1:e,"] {
        let (status, body) = get_with_id(&node, "/v1/events?topic=ok", Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let mut sse = open(&node, "/v1/events?topic=ok", None).await;
    publish_ok(&node, "ok", json!(1)).await;
    assert_eq!(sse.next_data().await.json()["offset"], 1);
}

// ---------------------------------------------------------------- long poll

#[tokio::test]
async fn short_poll_limit_and_epoch() {
    let node = TestNode::start("");
    publish_n(&node, "p", 5).await;
    let epoch = epoch_of(&node, "p").await;
    let body = poll(&node, "p", "after=2&timeout=0").await;
    assert_eq!(poll_offsets(&body), vec![3, 4, 5]);
    assert_eq!(body["next"], 5);
    assert_eq!(body["epoch"], epoch.as_str());
    assert_eq!(body["recovered"], true);
    let m = &body["messages"][0];
    assert_eq!(m["topic"], "p");
    assert_eq!(m["epoch"], epoch.as_str());
    assert_eq!(m["data"], json!({"n": 2}));
    assert!(m["id"].is_string() && m["time"].is_u64(), "{m}");
    // Nothing new: empty, next stays N.
    let body = poll(&node, "p", &format!("after=5&timeout=0&epoch={epoch}")).await;
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["next"], 5);
    assert_eq!(body["recovered"], true);
    // limit.
    let body = poll(&node, "p", "after=0&timeout=0&limit=2").await;
    assert_eq!(poll_offsets(&body), vec![1, 2]);
    assert_eq!(body["next"], 2);
    let query = format!("after=2&timeout=0&limit=2&epoch={epoch}");
    let body = poll(&node, "p", &query).await;
    assert_eq!(poll_offsets(&body), vec![3, 4]);
    assert_eq!(body["recovered"], true);
    // Another epoch: not recovered, from `first`.
    let body = poll(&node, "p", "after=3&timeout=0&epoch=deadbeef").await;
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(poll_offsets(&body), vec![1, 2, 3, 4, 5]);
    assert_eq!(body["next"], 5);
    assert_eq!(body["epoch"], epoch.as_str());
    assert_eq!(body["reason"], "epoch_changed");
}

#[tokio::test]
async fn long_poll_returns_when_a_message_arrives() {
    let node = TestNode::start("");
    publish_ok(&node, "lp", json!("before")).await;
    let url = format!("{}/v1/topics/lp/messages?after=1&timeout=10", node.http());
    let task = tokio::spawn(async move {
        let res = reqwest::get(url).await.expect("poll");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.expect("json"))
    });
    // The poll is parked once its session exists; publish after that.
    wait_for("the long poll to be waiting", || async {
        let parked = node.count("starling_connections", "\"poll\"").await;
        (parked >= 1.0).then_some(())
    })
    .await;
    assert!(!task.is_finished(), "the poll returned before a publish");
    publish_ok(&node, "lp", json!({"wake": true})).await;
    let polled = tokio::time::timeout(DEADLINE, task).await;
    let (status, body) = polled.expect("the poll returned").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(poll_offsets(&body), vec![2]);
    assert_eq!(body["messages"][0]["data"], json!({"wake": true}));
    assert_eq!(body["next"], 2);
    assert_eq!(body["recovered"], true);
}

#[tokio::test]
async fn long_poll_timeout_returns_empty() {
    let node = TestNode::start("");
    let body = poll(&node, "quiet", "after=0&timeout=1").await;
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["next"], 0);
    assert_eq!(body["recovered"], true);
    publish_ok(&node, "quiet", json!(1)).await;
    let body = poll(&node, "quiet", "after=1&timeout=1").await;
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["next"], 1);
}

#[tokio::test]
async fn poll_bad_params() {
    let node = TestNode::start("");
    publish_ok(&node, "bp", json!(1)).await;
    let queries = "after=-1 after=abc after=1.5 limit=0 limit=-3 limit=1001 timeout=121";
    for q in queries
        .split(' ')
        .chain(["timeout=x", "epoch=not-valid", "epoch="])
    {
        let (status, body) = get_json(&node, &format!("/v1/topics/bp/messages?{q}")).await;
        assert_error(status, &body, 400, "bad_request");
    }
    let (status, body) = get_json(&node, "/v1/topics/a%20b/messages?timeout=0").await;
    assert_error(status, &body, 400, "invalid_topic");
    let body = poll(&node, "bp", "after=0&timeout=0").await;
    assert_eq!(poll_offsets(&body), vec![1]);
}

// ---------------------------------------------------------------- publish and info routes

#[tokio::test]
async fn publish_replies_and_idempotency() {
    let node = TestNode::start("");
    let (status, first) = publish(&node, "pub", json!({"a": 1}), Some("key-1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["topic"], "pub");
    assert_eq!(first["offset"], 1);
    assert_eq!(first["id"], "key-1");
    assert_eq!(first["duplicate"], false);
    assert!(first["epoch"].is_string());
    assert_eq!(publish_ok(&node, "pub", json!("other")).await, 2);
    let (status, dup) = publish(&node, "pub", json!({"a": 2}), Some("key-1")).await;
    assert_eq!(status, 200, "{dup}");
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["offset"], 1);
    assert_eq!(dup["epoch"], first["epoch"]);
    assert_eq!(dup["id"], "key-1");
    // The duplicate stored nothing.
    let body = poll(&node, "pub", "after=0&timeout=0").await;
    assert_eq!(poll_offsets(&body), vec![1, 2]);
    assert_eq!(body["messages"][0]["data"], json!({"a": 1}));
}

#[tokio::test]
async fn publish_bad_input_and_the_node_survives() {
    let node = TestNode::start("[limits]\nmax_message_bytes = 1024\n");
    let mut sse = open(&node, "/v1/topics/good/events", None).await;
    let bodies = r#"{not json|[1,2]|7|{"id":"x"}|{"data":1|{"data":1,"id":""}|{"data":1,"id":5}"#;
    for body in bodies.split('|') {
        let (status, reply) = publish_raw(&node, "good", body.to_string()).await;
        assert_error(status, &reply, 400, "bad_request");
    }
    let long = "x".repeat(201);
    for t in ["a b", "a/b", long.as_str(), "é"] {
        let (status, reply) = publish(&node, t, json!(1), None).await;
        assert_error(status, &reply, 400, "invalid_topic");
    }
    assert_eq!(publish(&node, &long[1..], json!(1), None).await.0, 201);
    for t in ["$dlq.good", "$dlq.x"] {
        let (status, reply) = publish(&node, t, json!(1), None).await;
        assert_error(status, &reply, 403, "forbidden");
    }
    let (status, reply) = publish(&node, "good", json!("y".repeat(2000)), None).await;
    assert_error(status, &reply, 413, "too_large");
    let (status, reply) = publish(&node, "good", json!("y".repeat(20_000)), None).await;
    assert_error(status, &reply, 413, "too_large");
    // Exactly at the limit is accepted (1022 chars + 2 quotes = 1024 bytes of JSON).
    let at_limit = json!("z".repeat(1022));
    assert_eq!(publish(&node, "good", at_limit, None).await.0, 201);
    // Wrong method on a known route.
    let url = format!("{}/v1/topics/good", node.http());
    let res = reqwest::Client::new().delete(url).send().await.unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    // Nothing above hurt the node or its other clients.
    assert_eq!(publish_ok(&node, "good", json!("final")).await, 2);
    assert_eq!(sse_offsets(&mut sse, 2).await, vec![1, 2]);
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}

#[tokio::test]
async fn unknown_route_is_a_404_json_error() {
    let node = TestNode::start("");
    for path in ["/v1/nope", "/nope", "/v1/topics/a/b/c"] {
        let (status, reply) = get_json(&node, path).await;
        assert_error(status, &reply, 404, "not_found");
    }
}

/// Two edge cases of the publish body, checked together so one failure does not hide the other.
#[tokio::test]
async fn publish_body_edge_cases() {
    let node = TestNode::start("");
    let mut failures = Vec::new();
    // `null` is JSON: a message whose data is null.
    let (status, reply) = publish_raw(&node, "edge", r#"{"data":null}"#.into()).await;
    if status == 201 {
        let body = poll(&node, "edge", "after=0&timeout=0").await;
        assert_eq!(body["messages"][0]["data"], Value::Null, "{body}");
    } else {
        failures.push(format!(r#"{{"data":null}} -> {status} {reply}"#));
    }
    // The body is a JSON object; an array is not `{"data","id"}` and must not be published.
    let (status, reply) = publish_raw(&node, "edge", r#"[1,"k"]"#.into()).await;
    if status != 400 || reply["error"]["code"] != "bad_request" {
        failures.push(format!(r#"[1,"k"] -> {status} {reply}"#));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn topic_info_route() {
    let node = TestNode::start("");
    let (status, body) = get_json(&node, "/v1/topics/info").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = get_json(&node, "/v1/topics/a%20b").await;
    assert_error(status, &body, 400, "invalid_topic");
    publish_n(&node, "info", 3).await;
    let (status, body) = get_json(&node, "/v1/topics/info").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], "info");
    assert!(body["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(body["first"], 1);
    assert_eq!(body["head"], 3);
    assert_eq!(body["owner"], "n1");
    assert_eq!(body["subscribers"], 0);
    let _sse = open(&node, "/v1/topics/info/events", None).await;
    wait_for("the SSE subscriber to be counted", || async {
        let (_, b) = get_json(&node, "/v1/topics/info").await;
        (b["subscribers"] == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn health_cluster_and_metrics() {
    let node = TestNode::start("");
    let (status, body) = get_json(&node, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    // Ready once its shards have elected their leader (itself), a moment after it listens.
    wait_for("the node to be ready", || async {
        (get_json(&node, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = get_json(&node, "/v1/cluster").await;
    assert_eq!(status, 200, "{body}");
    let members = body["members"].as_array().expect("members");
    let me = members.iter().find(|m| m["id"] == "n1").expect("n1 listed");
    assert_eq!(me["http_addr"], node.addr.to_string());
    assert_eq!(me["status"], "up");

    // Traffic: one delivery each over SSE and WebSocket.
    let mut sse = open(&node, "/v1/topics/m/events", None).await;
    let mut ws = WsClient::connect(&node).await;
    ws.subscribe("m", None, None).await;
    publish_ok(&node, "m", json!("x")).await;
    assert_eq!(sse_offsets(&mut sse, 1).await, vec![1]);
    assert_eq!(ws.offsets(1).await, vec![1]);
    let res = reqwest::get(format!("{}/metrics", node.http()))
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    let names = "messages_published_total messages_delivered_total connections";
    let more = "publish_to_deliver_seconds storage_flush_seconds";
    for name in names.split(' ').chain(more.split(' ')) {
        let found = text.contains(&format!("starling_{name}"));
        assert!(found, "starling_{name} missing from /metrics:\n{text}");
    }
    assert!(node.metric("starling_messages_published_total", "").await >= 1.0);
    let delivered = "starling_messages_delivered_total";
    wait_for("deliveries to be counted", || async {
        let sse = node.count(delivered, "\"sse\"").await;
        let ws = node.count(delivered, "\"ws\"").await;
        (sse >= 1.0 && ws >= 1.0).then_some(())
    })
    .await;
    assert!(node.metric("starling_connections", "\"sse\"").await >= 1.0);
    let latency = "starling_publish_to_deliver_seconds_count";
    assert!(node.metric(latency, "").await >= 1.0);
}
