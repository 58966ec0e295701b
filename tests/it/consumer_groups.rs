//! Consumer groups against hostile or careless clients: a group's settings are fixed when
//! it is created and change only with `PUT /v1/topics/{topic}/consumers/{name}` (from any
//! node), a member may only narrow its own window, idle groups expire, and a topic holds a
//! bounded number of groups.

use crate::cluster_harness::Cluster;
use crate::consumers::{
    assert_error, c_ack, dead_letters, info, info_path, join, next_msg, nothing_pending, publish_n,
    pull, until_pong, wait_info, SLOW,
};
use crate::harness::*;
use serde_json::{json, Value};

/// PUTs a settings body (raw text); returns status and JSON body.
async fn put_raw(node: &TestNode, topic: &str, name: &str, body: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .put(format!("{}{}", node.http(), info_path(topic, name)))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("put request");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

/// Sends a consumer subscribe with extra fields and returns the reply, which must be an
/// error frame echoing `req`.
async fn refused(c: &mut WsClient, topic: &str, name: &str, extra: &Value) -> Value {
    let mut f = json!({"type": "subscribe", "topic": topic, "consumer": name, "req": 7});
    for (k, v) in extra.as_object().expect("extra fields") {
        f[k] = v.clone();
    }
    c.send(f).await;
    let v = c.recv().await;
    assert_eq!(
        (&v["type"], &v["req"], &v["code"]),
        (&json!("error"), &json!(7), &json!("bad_request")),
        "{extra} -> {v}"
    );
    v
}

/// Waits until at least `ms` have passed on the node as its own timers measure it: a
/// consumer of `topic` (a topic of its own) with `ack_wait_ms = ms` gets its message again.
async fn server_time_passes(node: &TestNode, topic: &str, ms: u64) {
    let mut c = WsClient::connect(node).await;
    join(
        &mut c,
        topic,
        "clock",
        json!({"after": 0, "ack_wait_ms": ms}),
    )
    .await;
    publish_ok(node, topic, json!("tick")).await;
    assert_eq!(next_msg(&mut c).await, (1, 1));
    assert_eq!(next_msg(&mut c).await, (1, 2));
}

/// Waits until consumer `name`'s info route stops answering 200; returns what it answers.
async fn wait_gone(node: &TestNode, topic: &str, name: &str, what: &str) -> (u16, Value) {
    let path = info_path(topic, name);
    let path = &path;
    wait_for(what, move || async move {
        let (status, body) = get_json(node, path).await;
        (status != 200).then_some((status, body))
    })
    .await
}

#[tokio::test]
async fn a_second_worker_cannot_reconfigure_the_group_or_touch_the_firsts_messages() {
    let node = TestNode::start(SLOW);
    let mut a = WsClient::connect(&node).await;
    join(&mut a, "jobs", "workers", json!({"after": 0})).await;
    publish_n(&node, "jobs", 5).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(next_msg(&mut a).await);
    }
    assert_eq!(got, (1..=5).map(|o| (o, 1)).collect::<Vec<_>>());

    // Another worker names settings of its own: refused, naming the setting and the route
    // that changes it.
    let mut b = WsClient::connect(&node).await;
    for (extra, setting) in [
        (json!({"ack_wait_ms": 100, "max_deliver": 1}), "ack_wait_ms"),
        (json!({"max_deliver": 1}), "max_deliver"),
        (json!({"backoff_ms": [0]}), "backoff_ms"),
        (json!({"max_inflight": 101}), "max_inflight"),
    ] {
        let v = refused(&mut b, "jobs", "workers", &extra).await;
        let message = v["message"].as_str().unwrap_or("");
        assert!(message.contains(setting), "{v}");
        assert!(
            message.contains("PUT /v1/topics/jobs/consumers/workers"),
            "{v}"
        );
    }
    // The group's own values are fine, and max_inflight narrows B's window only.
    join(
        &mut b,
        "jobs",
        "workers",
        json!({"ack_wait_ms": 60000, "backoff_ms": [50], "max_inflight": 1}),
    )
    .await;
    publish_n(&node, "jobs", 5).await;
    let i = wait_info(&node, "jobs", "workers", "10 in flight", |v| {
        v["in_flight"] == 10
    })
    .await;
    assert_eq!(
        (&i["ack_wait_ms"], &i["max_deliver"], &i["max_inflight"]),
        (&json!(60000), &json!(5), &json!(100)),
        "{i}"
    );
    assert_eq!(i["members"], 2, "{i}");
    let got_b = until_pong(&mut b, 1).await;
    assert_eq!(got_b.len(), 1, "B asked for a window of 1: {got_b:?}");
    let got_a = until_pong(&mut a, 1).await;
    assert_eq!(got_a.len(), 4, "{got_a:?}");

    // Far longer than the ack_wait B asked for: nothing came again or died.
    server_time_passes(&node, "clock", 1000).await;
    nothing_pending(&mut a, 2).await;
    nothing_pending(&mut b, 2).await;
    let i = info(&node, "jobs", "workers").await;
    assert_eq!(
        (&i["in_flight"], &i["redelivered"], &i["dead_lettered"]),
        (&json!(10), &json!(0), &json!(0)),
        "{i}"
    );
    let (status, body) = get_json(&node, &format!("/v1/topics/{}", enc("$dlq.jobs"))).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn put_changes_a_groups_settings_and_they_take_effect() {
    let node = TestNode::start(SLOW);
    let mut a = WsClient::connect(&node).await;
    join(&mut a, "tune", "g", json!({"after": 0})).await;
    publish_ok(&node, "tune", json!(1)).await;
    assert_eq!(next_msg(&mut a).await, (1, 1));

    // Bad requests change nothing.
    let before = info(&node, "tune", "g").await;
    for body in [
        r#"{"ack_wait_ms": 1}"#,
        r#"{"max_inflight": 0}"#,
        r#"{"ack_wait": 500}"#,
        r#"{"backoff_ms": []}"#,
        r#"{}"#,
        "nope",
    ] {
        let (status, reply) = put_raw(&node, "tune", "g", body).await;
        assert_error(status, &reply, 400, "bad_request");
        assert_eq!(info(&node, "tune", "g").await, before, "after {body}");
    }
    let (status, reply) = put_raw(&node, "tune", "nobody", r#"{"max_deliver": 3}"#).await;
    assert_error(status, &reply, 404, "not_found");
    let (status, reply) = put_raw(&node, "never", "g", r#"{"max_deliver": 3}"#).await;
    assert_error(status, &reply, 404, "not_found");

    let settings = json!({"ack_wait_ms": 300, "max_deliver": 2});
    let (status, body) = put_raw(&node, "tune", "g", &settings.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["topic"], &body["consumer"]),
        (&json!("tune"), &json!("g"))
    );
    assert_eq!(
        (
            &body["ack_wait_ms"],
            &body["max_deliver"],
            &body["backoff_ms"]
        ),
        (&json!(300), &json!(2), &json!([50])),
        "{body}"
    );
    assert_eq!(info(&node, "tune", "g").await, body, "GET and PUT differ");

    // A new delivery gets the new ack_wait, and dies after the new max_deliver.
    publish_ok(&node, "tune", json!(2)).await;
    assert_eq!(next_msg(&mut a).await, (2, 1));
    assert_eq!(next_msg(&mut a).await, (2, 2));
    let dl = dead_letters(&node, "tune", 1).await;
    assert_eq!(
        (dl[0]["offset"].as_u64(), dl[0]["attempts"].as_u64()),
        (Some(2), Some(2)),
        "{}",
        dl[0]
    );
    // Offset 1 keeps the deadline it was delivered with (60 s).
    let i = wait_info(&node, "tune", "g", "the dead letter", |v| {
        v["dead_lettered"] == 1
    })
    .await;
    assert_eq!(
        (&i["in_flight"], &i["pending"]),
        (&json!(1), &json!(1)),
        "{i}"
    );

    // Subscriptions are checked against the new settings.
    let mut b = WsClient::connect(&node).await;
    refused(&mut b, "tune", "g", &json!({"ack_wait_ms": 60000})).await;
    join(&mut b, "tune", "g", settings).await;

    // The group's max_inflight (with a long ack_wait again): one at a time from now on.
    let slow_one = r#"{"max_inflight": 1, "ack_wait_ms": 60000}"#;
    let (status, body) = put_raw(&node, "tune", "g", slow_one).await;
    assert_eq!((status, &body["max_inflight"]), (200, &json!(1)), "{body}");
    c_ack(&mut a, "tune", "g", 1).await;
    wait_info(&node, "tune", "g", "the ack of 1", |v| v["in_flight"] == 0).await;
    publish_n(&node, "tune", 2).await;
    let i = wait_info(&node, "tune", "g", "one in flight", |v| v["in_flight"] == 1).await;
    assert_eq!(i["next"], 4, "the second message must wait: {i}");
    let got = [until_pong(&mut a, 3).await, until_pong(&mut b, 3).await].concat();
    assert_eq!(got, vec![(3, 1)]);
}

#[tokio::test]
async fn an_idle_group_expires_and_its_info_then_says_not_found() {
    let node = TestNode::start(
        "[consumers]\nidle_expiry_secs = 1\nmin_ack_wait_ms = 50\nbackoff_ms = [50]\n",
    );
    publish_ok(&node, "idle", json!(1)).await;
    let mut a = WsClient::connect(&node).await;
    join(&mut a, "idle", "kept", json!({"after": 0})).await;
    assert_eq!(next_msg(&mut a).await, (1, 1));
    c_ack(&mut a, "idle", "kept", 1).await;
    wait_info(&node, "idle", "kept", "the ack", |v| v["ack_floor"] == 1).await;
    // A pull consumer that starts at the head and leases nothing.
    assert_eq!(
        pull(&node, "idle", "consumer=polled&timeout=0").await,
        vec![]
    );

    let (status, body) = wait_gone(&node, "idle", "polled", "the pull consumer to expire").await;
    assert_error(status, &body, 404, "not_found");

    // A group with a connected member stays, however long it is idle.
    server_time_passes(&node, "clock", 1500).await;
    let i = info(&node, "idle", "kept").await;
    assert_eq!(
        (&i["members"], &i["ack_floor"]),
        (&json!(1), &json!(1)),
        "{i}"
    );
    // Once its member is gone, it expires too.
    drop(a);
    let (status, body) = wait_gone(&node, "idle", "kept", "the group to expire once idle").await;
    assert_error(status, &body, 404, "not_found");
    let (status, reply) = put_raw(&node, "idle", "kept", r#"{"max_deliver": 3}"#).await;
    assert_error(status, &reply, 404, "not_found");
}

#[tokio::test]
async fn the_cap_refuses_one_group_too_many() {
    let node = TestNode::start("[consumers]\nmax_groups_per_topic = 3\n");
    publish_ok(&node, "capped", json!(1)).await;
    for name in ["c0", "c1", "c2"] {
        pull(&node, "capped", &format!("consumer={name}&timeout=0")).await;
    }
    let (status, body) = get_json(&node, "/v1/topics/capped/messages?consumer=c3&timeout=0").await;
    assert_error(status, &body, 400, "bad_request");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("max_groups_per_topic"), "{body}");
    let mut c = WsClient::connect(&node).await;
    let v = refused(&mut c, "capped", "c3", &json!({})).await;
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_groups_per_topic"),
        "{v}"
    );
    let (status, body) = get_json(&node, &info_path("capped", "c3")).await;
    assert_error(status, &body, 404, "not_found");
    // The groups that exist still work, and the cap is per topic.
    join(&mut c, "capped", "c0", json!({})).await;
    assert_eq!(publish_ok(&node, "capped", json!(2)).await, 2);
    assert_eq!(next_msg(&mut c).await, (2, 1));
    publish_ok(&node, "neighbour", json!(1)).await;
    pull(&node, "neighbour", "consumer=c3&timeout=0").await;
    info(&node, "neighbour", "c3").await;
}

#[tokio::test]
async fn settings_are_changed_and_checked_at_the_owner_from_any_node() {
    let c = Cluster::start(2, SLOW).await;
    let t = "remote".to_string();
    // The topic's first message (offset 1); `other` does not own the topic.
    let (_, o) = c.create_topic(0, &t, json!(1)).await;
    let other = 1 - o;
    // A worker on the node that does not own the topic creates the group.
    let mut w = WsClient::connect(c.node(other)).await;
    join(&mut w, &t, "g", json!({"after": 0})).await;
    assert_eq!(next_msg(&mut w).await, (1, 1));
    let mut x = WsClient::connect(c.node(other)).await;
    let v = refused(&mut x, &t, "g", &json!({"max_deliver": 1})).await;
    assert!(
        v["message"].as_str().unwrap_or("").contains("max_deliver"),
        "{v}"
    );

    let (status, body) = put_raw(c.node(other), &t, "g", r#"{"ack_wait_ms": 300}"#).await;
    assert_eq!((status, &body["ack_wait_ms"]), (200, &json!(300)), "{body}");
    assert_eq!(info(c.node(o), &t, "g").await["ack_wait_ms"], 300);
    let (status, _) = publish(c.node(o), &t, json!(2), None).await;
    assert_eq!(status, 201);
    assert_eq!(next_msg(&mut w).await, (2, 1));
    assert_eq!(next_msg(&mut w).await, (2, 2), "the new ack_wait applies");
    let (status, reply) = put_raw(c.node(other), &t, "nobody", r#"{"max_deliver": 3}"#).await;
    assert_error(status, &reply, 404, "not_found");
}

#[tokio::test]
async fn a_group_whose_worker_is_connected_survives_a_crash_however_quiet_it_was() {
    let mut node = TestNode::start("[consumers]\nidle_expiry_secs = 4\nack_wait_ms = 60000\n");
    publish_ok(&node, "quiet", json!(1)).await;
    let mut w = WsClient::connect(&node).await;
    join(&mut w, "quiet", "workers", json!({"after": 0})).await;
    // The worker holds the message and never acks, for longer than the expiry.
    assert_eq!(next_msg(&mut w).await, (1, 1));
    server_time_passes(&node, "clock", 5_000).await;
    node.kill9();
    node.restart();
    // Before the worker is back, the group is still there, its message in flight...
    let i = info(&node, "quiet", "workers").await;
    assert_eq!(i["ack_floor"], 0, "{i}");
    // ...and the reconnecting worker gets the unacked message again.
    let mut w = WsClient::connect(&node).await;
    join(&mut w, "quiet", "workers", json!({})).await;
    assert_eq!(next_msg(&mut w).await, (1, 2));
}
