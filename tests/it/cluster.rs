//! The cluster through its real endpoints: publishes and subscriptions routed between nodes,
//! and consumers served across nodes. Failover (an owner killed, hung, cut off or shut
//! down) is in `replication.rs`. Real processes, real clients.

use crate::cluster_harness::Cluster;
use crate::harness::{enc, get_json, publish, wait_for, SseClient, WsClient};
use serde_json::json;

#[tokio::test]
async fn publishes_on_every_node_reach_subscribers_on_every_node_in_order() {
    let c = Cluster::start(3, "").await;
    // A topic owned by each node that leads a shard (each topic starts with its probe at 1).
    let topics = c.topics_by_owner("route", 48).await;
    eprintln!("topics by owner: {topics:?}");
    for (t, owner) in &topics {
        let t = t.as_str();
        let mut ws = Vec::new();
        let mut sse = Vec::new();
        for i in 0..3 {
            let mut w = WsClient::connect(c.node(i)).await;
            w.subscribe(t, Some(0), None).await;
            ws.push(w);
            let path = format!("/v1/topics/{}/events?after=0", enc(t));
            sse.push(SseClient::connect(c.node(i), &path, None).await);
        }
        let mut ids = Vec::new();
        for k in 0..12u64 {
            let (status, body) =
                publish(c.node((k % 3) as usize), t, json!({ "k": k }), None).await;
            assert_eq!(status, 201, "publish on {}: {body}", c.id((k % 3) as usize));
            assert_eq!(body["offset"], k + 2, "{body}");
            ids.push(body["id"].clone());
        }
        for w in &mut ws {
            assert_eq!(w.recv_type("message").await["offset"], 1, "the probe");
            for (k, id) in ids.iter().enumerate() {
                let v = w.recv_type("message").await;
                assert_eq!(
                    (v["offset"].as_u64(), &v["id"]),
                    (Some(k as u64 + 2), id),
                    "{v}"
                );
                assert_eq!(v["data"]["k"], k as u64);
            }
        }
        for s in &mut sse {
            assert_eq!(s.next_data().await.json()["offset"], 1, "the probe");
            for (k, id) in ids.iter().enumerate() {
                let v = s.next_data().await.json();
                assert_eq!(
                    (v["offset"].as_u64(), &v["id"]),
                    (Some(k as u64 + 2), id),
                    "{v}"
                );
            }
        }
        for i in 0..3 {
            let (status, info) = get_json(c.node(i), &format!("/v1/topics/{}", enc(t))).await;
            assert_eq!(status, 200, "{info}");
            assert_eq!(info["owner"], c.id(*owner), "{info}");
            assert_eq!(info["head"], 13, "{info}");
        }
    }
    // Each live message crossed to each of the two other nodes once, whatever the number of
    // subscribers there (two per node here): topics x 12 messages x 2 nodes.
    let mut sent = 0.0;
    for i in 0..3 {
        sent += c
            .node(i)
            .count("starling_cluster_messages_sent_total", "")
            .await;
    }
    assert_eq!(
        sent,
        (topics.len() * 12 * 2) as f64,
        "messages sent between nodes"
    );
}

#[tokio::test]
async fn a_consumer_on_one_node_consumes_a_topic_owned_by_another() {
    let c = Cluster::start(3, "").await;
    // Offset 1 is the topic's first publish; the consumer starts after it.
    let (_, o) = c.create_topic(0, "work", json!({ "k": 0 })).await;
    let t = "work";
    // The member is on `x`, publishes and acks go through `y`: neither owns the topic.
    let (x, y) = c.others(o);
    let mut w = WsClient::connect(c.node(x)).await;
    w.send(json!({"type": "subscribe", "topic": t, "consumer": "c1", "after": 1, "req": 1}))
        .await;
    let v = w.recv_type("subscribed").await;
    assert_eq!(v["req"], 1, "{v}");
    for k in 2..=4u64 {
        let (status, body) = publish(c.node(y), t, json!({ "k": k }), None).await;
        assert_eq!((status, body["offset"].as_u64()), (201, Some(k)), "{body}");
    }
    for k in 2..=4u64 {
        let m = w.recv_type("message").await;
        assert_eq!(
            (m["offset"].as_u64(), m["attempt"].as_u64()),
            (Some(k), Some(1)),
            "{m}"
        );
    }
    w.send(json!({"type": "ack", "topic": t, "consumer": "c1", "upto": 4}))
        .await;
    let info_path = format!("/v1/topics/{}/consumers/c1", enc(t));
    wait_for("the ack to reach the owner", || async {
        let (status, info) = get_json(c.node(y), &info_path).await;
        (status == 200 && info["ack_floor"] == 4).then_some(())
    })
    .await;

    // An HTTP ack on a third node, for a message the member got.
    let (status, _) = publish(c.node(y), t, json!({ "k": 5 }), None).await;
    assert_eq!(status, 201);
    let m = w.recv_type("message").await;
    assert_eq!(m["offset"], 5, "{m}");
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v1/topics/{}/consumers/c1/ack",
            c.http(y),
            enc(t)
        ))
        .body(json!({"offsets": [5]}).to_string())
        .send()
        .await
        .expect("ack");
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let (_, info) = get_json(c.node(o), &info_path).await;
    assert_eq!(info["ack_floor"], 5, "{info}");

    // A member that leaves has its unacked messages redelivered to the one that stays.
    let mut other = WsClient::connect(c.node(y)).await;
    other
        .send(json!({"type": "subscribe", "topic": t, "consumer": "c1", "req": 2}))
        .await;
    other.recv_type("subscribed").await;
    let (status, _) = publish(c.node(o), t, json!({ "k": 6 }), None).await;
    assert_eq!(status, 201);
    let w_got_it = tokio::select! {
        m = w.recv_type("message") => { assert_eq!(m["offset"], 6, "{m}"); true }
        m = other.recv_type("message") => { assert_eq!(m["offset"], 6, "{m}"); false }
    };
    // Whichever got it leaves without acking: the other gets it again at once (well
    // before ack_wait, 30 s by default).
    let mut stays = if w_got_it {
        drop(w);
        other
    } else {
        drop(other);
        w
    };
    let m = stays.recv_type("message").await;
    assert_eq!(
        (m["offset"].as_u64(), m["attempt"].as_u64()),
        (Some(6), Some(2)),
        "{m}"
    );
}
