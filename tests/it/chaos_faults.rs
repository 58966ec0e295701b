//! Fault injection, black-box: `POST /v1/chaos/partition` on real node processes cuts
//! gossip and cluster sessions with the named peers, the failure detectors on both sides
//! notice, and healing brings every member back. Off by default: 403.

use crate::cluster_harness::Cluster;
use crate::harness::{publish_ok, wait_for, TestNode};
use serde_json::{json, Value};

const CHAOS: &str = "[chaos]\nfault_injection = true\n";

/// POSTs `body` to node's partition endpoint; returns status and JSON body.
async fn partition(node: &TestNode, body: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chaos/partition", node.http()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("partition request");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

/// Makes node `i` drop exactly `peers`, and checks the reply.
async fn drop_peers(c: &Cluster, i: usize, peers: &[usize]) {
    let ids: Vec<&str> = peers.iter().map(|&j| c.id(j)).collect();
    let (status, body) = partition(c.node(i), &json!({ "drop": ids }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"node": c.id(i), "dropping": ids}));
}

/// Whether every (observer, member, status) holds now.
async fn all_hold(c: &Cluster, expected: &[(usize, usize, &str)]) -> bool {
    for &(observer, member, status) in expected {
        if c.status(observer, member).await.as_deref() != Some(status) {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn an_isolated_node_is_down_on_both_sides_and_comes_back_when_healed() {
    let c = Cluster::start(3, CHAOS).await;
    drop_peers(&c, 0, &[1, 2]).await;
    drop_peers(&c, 1, &[0]).await;
    drop_peers(&c, 2, &[0]).await;
    let cut = [
        (0, 1, "down"),
        (0, 2, "down"),
        (1, 0, "down"),
        (2, 0, "down"),
        (1, 2, "up"),
        (2, 1, "up"),
    ];
    wait_for("n1 to be cut off on both sides", || async {
        all_hold(&c, &cut).await.then_some(())
    })
    .await;
    // The majority side serves.
    let offset = publish_ok(c.node(1), "chaos.majority", json!("during the partition")).await;
    assert_eq!(offset, 1);
    assert!(all_hold(&c, &[(1, 2, "up"), (2, 1, "up")]).await);

    for i in 0..3 {
        drop_peers(&c, i, &[]).await;
    }
    c.wait_formed().await;
    publish_ok(c.node(0), "chaos.majority", json!("after healing")).await;
}

#[tokio::test]
async fn without_the_setting_the_endpoint_is_forbidden_and_nothing_changes() {
    let c = Cluster::start(2, "").await;
    let (status, body) = partition(c.node(0), r#"{"drop":["n2"]}"#).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("fault_injection = true"), "{message}");
    // Still connected: a publish through n1 reaches whichever node owns the topic.
    publish_ok(c.node(0), "chaos.forbidden", json!(1)).await;
    assert!(all_hold(&c, &[(0, 1, "up"), (1, 0, "up")]).await);
}

#[tokio::test]
async fn malformed_bodies_and_unknown_node_ids_are_bad_requests() {
    let c = Cluster::start(2, CHAOS).await;
    for (body, named) in [
        (r#"{"drop":["n2","n9"]}"#, "n9"),
        (r#"{"drop":["n1"]}"#, "n1"),
        (r#"{"drop":"n2"}"#, "drop"),
        (r#"{"cut":["n2"]}"#, "drop"),
        ("not json", "drop"),
    ] {
        let (status, reply) = partition(c.node(0), body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_request", "{body}: {reply}");
        let message = reply["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{body}: {message}");
    }
    // A refused request drops nothing: n2 is still reachable through n1.
    publish_ok(c.node(0), "chaos.refused", json!(1)).await;
    assert!(all_hold(&c, &[(0, 1, "up"), (1, 0, "up")]).await);
    let (status, reply) = partition(c.node(0), r#"{"drop":[]}"#).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"node": "n1", "dropping": []}));
}
