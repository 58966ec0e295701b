//! Issue 11, hostile clients: publishes whose `data` serde_json cannot read back (a lone
//! surrogate escape, nesting past its recursion limit) are refused on every publish route,
//! and what is accepted reaches every transport as JSON, on one SSE `data:` line.

use crate::harness::*;
use serde_json::{json, Value};

/// `data` that `RawValue` lets through but serde_json clients cannot parse, with line
/// breaks between its tokens (which the old re-serialization could not take out).
fn unreadable_data() -> Vec<String> {
    vec![
        "[\n\n\"\\ud800\",\n1]".to_string(),
        format!("{}\n{}", "[".repeat(129), "]".repeat(129)),
    ]
}

fn assert_bad_request(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`data`"),
        "{body}"
    );
}

#[tokio::test]
async fn unreadable_data_is_refused_over_http_and_the_node_keeps_serving() {
    let node = TestNode::start("");
    let mut sse = SseClient::connect(&node, "/v1/topics/nl/events?after=0", None).await;
    for data in unreadable_data() {
        let (status, body) = publish_raw(&node, "nl", format!("{{\"data\":{data}}}")).await;
        assert_bad_request(status, &body);
    }
    assert_eq!(
        publish_ok(&node, "nl", json!({"after": "refusals"})).await,
        1
    );
    let ev = sse.next_data().await;
    assert_eq!(ev.json()["offset"], 1, "{}", ev.data);
    assert_eq!(ev.json()["data"], json!({"after": "refusals"}));
    let (_, info) = get_json(&node, "/v1/topics/nl").await;
    assert_eq!(info["head"], 1, "nothing refused was stored: {info}");
}

#[tokio::test]
async fn unreadable_data_is_refused_over_websocket_and_the_connection_stays_open() {
    let node = TestNode::start("");
    let mut ws = WsClient::connect(&node).await;
    for (req, data) in (7..).zip(unreadable_data()) {
        let frame = format!(r#"{{"type":"publish","topic":"w","req":{req},"data":{data}}}"#);
        ws.send_text(&frame).await;
        let v = ws.recv().await;
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], "bad_request", "{v}");
        assert_eq!(v["req"], req, "{v}");
    }
    ws.send(json!({"type": "ping", "req": 20})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    ws.send(json!({"type": "publish", "topic": "w", "data": [1], "req": 21}))
        .await;
    let v = ws.recv().await;
    assert_eq!(v["type"], "published", "{v}");
    assert_eq!(v["offset"], 1, "nothing refused was stored: {v}");
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}

#[tokio::test]
async fn multi_line_data_arrives_on_one_sse_data_line_as_published() {
    let node = TestNode::start("");
    let mut sse = SseClient::connect(&node, "/v1/topics/ml/events?after=0", None).await;
    let mut ws = WsClient::connect(&node).await;
    ws.subscribe("ml", Some(0), None).await;
    // A subscriber that was there when the hostile publish came must not see it.
    let (status, body) = publish_raw(
        &node,
        "ml",
        format!("{{\"data\":{}}}", unreadable_data()[0]),
    )
    .await;
    assert_bad_request(status, &body);
    // Line breaks between tokens, CRLF, an escaped newline inside a string, and numbers a
    // re-serialization through serde_json's Value would rewrite.
    let data = "{\r\n  \"n\": 12345678901234567890123,\n  \"f\": 1.50,\n  \"s\": \"a\\nb\"\n}";
    let (status, body) = publish_raw(&node, "ml", format!("{{\"data\":{data}}}")).await;
    assert_eq!(status, 201, "{body}");
    let ev = sse.next_data().await;
    // The harness joins the data lines of one event with '\n'.
    assert!(
        !ev.data.contains('\n'),
        "more than one data line: {:?}",
        ev.data
    );
    let envelope = ev.json();
    assert_eq!(envelope["offset"], 1, "{}", ev.data);
    assert_eq!(envelope["data"]["s"], "a\nb");
    let stored = r#""data":{  "n": 12345678901234567890123,  "f": 1.50,  "s": "a\nb"}"#;
    assert!(
        ev.data.contains(stored),
        "data not as published: {}",
        ev.data
    );
    let v = ws.recv_type("message").await;
    assert_eq!(
        (v["offset"].clone(), v["data"]["s"].clone()),
        (json!(1), json!("a\nb"))
    );
    let (_, poll) = get_json(&node, "/v1/topics/ml/messages?after=0&timeout=0").await;
    assert_eq!(poll["messages"].as_array().map(Vec::len), Some(1), "{poll}");
    assert_eq!(poll["messages"][0]["data"]["f"], 1.5);
}
