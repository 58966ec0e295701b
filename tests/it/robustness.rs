//! Regressions from review: clients that go away or stop reading cannot leak sessions or
//! hold up a shutdown, and odd ack requests cannot lose a dead letter.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_long_poll_whose_client_left_ends_its_session() {
    let node = TestNode::start("");
    let url = format!("{}/v1/topics/gone/messages?timeout=60", node.http());
    for _ in 0..3 {
        // The client gives up long before the poll's timeout.
        let r = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(r.is_err(), "the poll should still have been waiting");
    }
    wait_for("poll sessions to end after their clients left", || async {
        (node
            .metric("starling_connections", "transport=\"poll\"")
            .await
            == 0.0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_an_sse_client_that_stops_reading() {
    let mut node =
        TestNode::start("[limits]\nmax_message_bytes = 65536\nmax_outbound_queue_bytes = 140000\n");
    let stream = non_reader(
        &node,
        &["GET /v1/topics/big/events HTTP/1.1\r\nHost: x\r\n\r\n"],
    );
    let n = flood_until_slow_consumer(&node, "big").await;
    assert!(n > 1);
    let status = node.terminate();
    assert!(status.success(), "node exited with {status}");
    drop(stream);
}

#[tokio::test]
async fn a_nack_naming_one_offset_twice_dead_letters_it_once() {
    let node = TestNode::start("[consumers]\nmax_deliver = 1\n");
    publish_ok(&node, "jobs", json!("work")).await;
    let (s, v) = get_json(
        &node,
        "/v1/topics/jobs/messages?consumer=p&after=0&timeout=0",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"][0]["offset"], 1);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/topics/jobs/consumers/p/ack", node.http()))
        .body(r#"{"nack":[1,1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let dlq = wait_for("the dead letter", || async {
        let (_, v) = get_json(
            &node,
            &format!("/v1/topics/{}/messages?after=0&timeout=0", enc("$dlq.jobs")),
        )
        .await;
        v["messages"].as_array().filter(|m| !m.is_empty()).cloned()
    })
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["data"]["offset"], 1);
    assert_eq!(dlq[0]["data"]["consumer"], "p");
    let (_, info) = get_json(&node, "/v1/topics/jobs/consumers/p").await;
    assert_eq!(info["dead_lettered"], 1);
    assert_eq!(info["ack_floor"], 1);
}

#[tokio::test]
async fn a_websocket_that_pipelines_too_many_publishes_is_told_to_slow_down() {
    let node = TestNode::start("");
    let mut ws = WsClient::connect(&node).await;
    // Far more publishes than may be in flight, sent without reading any reply.
    let frame = json!({"type": "publish", "topic": "flood", "data": 1}).to_string();
    for _ in 0..6000 {
        ws.send_text(&frame).await;
    }
    let mut published = 0;
    let mut limited = 0;
    while published + limited < 6000 {
        let v = ws.recv().await;
        match v["type"].as_str() {
            Some("published") => published += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected frame {v}"),
        }
    }
    let (_, info) = get_json(&node, "/v1/topics/flood").await;
    assert_eq!(
        info["head"], published,
        "every accepted publish is stored, no other"
    );
    assert!(
        published >= 4096,
        "at least the in-flight allowance is accepted: {published}"
    );
}

#[tokio::test]
async fn unused_topics_leave_memory_and_come_back_on_use() {
    let node = TestNode::start("[limits]\ntopic_idle_secs = 1\n");
    let mut keeper = WsClient::connect(&node).await;
    keeper.subscribe("kept", Some(0), None).await;
    let mut ws = WsClient::connect(&node).await;
    ws.subscribe("passing", None, None).await;
    publish_ok(&node, "passing", json!(1)).await;
    assert_eq!(ws.recv_type("message").await["offset"], 1);
    ws.send(json!({"type": "unsubscribe", "topic": "passing", "req": 2}))
        .await;
    ws.recv_type("unsubscribed").await;
    // "passing" retires; "kept" has a subscriber and stays.
    wait_for("the unused topic to retire", || async {
        (node.metric("starling_topics_active", "").await == 1.0).then_some(())
    })
    .await;
    // Its data is still there, and it works again on next use.
    ws.subscribe("passing", Some(0), None).await;
    assert_eq!(ws.recv_type("message").await["offset"], 1);
    assert_eq!(publish_ok(&node, "passing", json!(2)).await, 2);
    assert_eq!(ws.recv_type("message").await["offset"], 2);
    // The topic that kept its subscriber still delivers.
    publish_ok(&node, "kept", json!("still here")).await;
    assert_eq!(keeper.recv_type("message").await["data"], "still here");
}

#[tokio::test]
async fn a_subscription_can_set_its_own_backoff_within_bounds() {
    // The configured backoff alone would hold a redelivery back for a minute.
    let node = TestNode::start("[consumers]\nack_wait_ms = 200\nbackoff_ms = [60000]\n");
    let mut ws = WsClient::connect(&node).await;
    let bad = json!({"type": "subscribe", "topic": "bo", "consumer": "c", "backoff_ms": [99_999_999_999u64], "req": 1});
    ws.send(bad).await;
    let v = ws.recv().await;
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("backoff_ms"),
        "{v}"
    );
    let sub = json!({"type": "subscribe", "topic": "bo", "consumer": "c", "after": 0, "backoff_ms": [0], "req": 2});
    ws.send(sub).await;
    assert_eq!(ws.recv_type("subscribed").await["req"], 2);
    publish_ok(&node, "bo", json!("job")).await;
    let first = ws.recv_type("message").await;
    assert_eq!(first["attempt"], 1);
    // Not acked: comes back after ack_wait plus the subscription's own (zero) backoff.
    let again = ws.recv_type("message").await;
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(again["attempt"], 2);
}
