//! Cluster membership, black-box: real node processes gossip, detect failures (killed and
//! hung nodes), reconnect, and refuse a node with the wrong cookie.

use crate::cluster_harness::Cluster;
use crate::harness::{publish, wait_for};
use std::time::{Duration, Instant};

#[tokio::test]
async fn three_nodes_form_a_cluster_and_learn_members_through_a_seed() {
    // Every node gossips only through n1: n2 and n3 learn of each other from n1.
    let c = Cluster::builder(3).seeds(&[0]).start().await;
    for i in 0..3 {
        let view = c.view(i).await.expect("view");
        assert_eq!(view["node"], c.id(i));
        assert_eq!(view["ready"], true);
        let members = view["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{view}");
        for m in members {
            assert_eq!(m["status"], "up", "{view}");
            assert_eq!(m["self"], m["id"] == c.id(i), "{view}");
            let j = (0..3).find(|&j| m["id"] == c.id(j)).expect("known id");
            assert_eq!(m["http_addr"], c.node(j).addr.to_string(), "{view}");
        }
        assert!(c.ready(i).await);
    }
}

#[tokio::test]
async fn a_killed_node_is_marked_down_and_rejoins_when_restarted() {
    let mut c = Cluster::start(3, "").await;
    c.kill9(1);
    let took = c.wait_status(0, 1, "down").await;
    c.wait_status(2, 1, "down").await;
    eprintln!("membership: kill -9 -> down on n1 after {took:?}");
    let restarted = Instant::now();
    c.restart(1);
    // The restarted node is ready only once it has seen its live peers up.
    let view = wait_for("the restarted node to be ready", || async {
        c.view(1).await.filter(|v| v["ready"] == true)
    })
    .await;
    for m in view["members"].as_array().expect("members") {
        assert_eq!(m["status"], "up", "ready before its peers were up: {view}");
    }
    c.wait_status(0, 1, "up").await;
    let took = restarted.elapsed();
    eprintln!("membership: restart (process start included) -> up on n1 after {took:?}");
    c.wait_formed().await;
}

#[tokio::test]
async fn a_hung_node_is_marked_down_and_comes_back_when_resumed() {
    let mut c = Cluster::start(3, "").await;
    // SIGSTOP keeps every socket open: only the failure detector can notice.
    c.stop(1);
    let took = c.wait_status(0, 1, "down").await;
    c.wait_status(2, 1, "down").await;
    eprintln!("membership: kill -STOP -> down on n1 after {took:?}");
    c.cont(1);
    let took = c.wait_status(0, 1, "up").await;
    eprintln!("membership: kill -CONT -> up on n1 after {took:?}");
    c.wait_formed().await;
}

#[tokio::test]
async fn a_node_with_the_wrong_cookie_is_refused() {
    let c = Cluster::builder(3)
        .node_cluster(2, "cookie = \"not-the-cookie\"")
        .spawn();
    let good = [0, 1];
    // Until both good nodes refuse n3 (and n3 refuses them), n3 must never be up on them.
    wait_for(
        "the wrong-cookie node to be refused on both sides",
        || async {
            for &i in &good {
                let status = c.status(i, 2).await;
                assert_ne!(
                    status.as_deref(),
                    Some("up"),
                    "n3 was admitted by {}",
                    c.id(i)
                );
                if status.as_deref() != Some("refused") {
                    return None;
                }
                if c.status(2, i).await.as_deref() != Some("refused") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for &i in &good {
        c.wait_status(i, 1 - i, "up").await;
        // The two good nodes are a majority of every shard's voters: they elect leaders.
        wait_for(&format!("{} to be ready", c.id(i)), || async {
            c.ready(i).await.then_some(())
        })
        .await;
    }
    // The refused node is a minority on its own: it never serves (it could commit nothing).
    assert!(!c.ready(2).await, "n3 is ready without a majority");
    for &i in &good {
        assert_eq!(c.status(i, 2).await.as_deref(), Some("refused"));
    }
}

#[tokio::test]
async fn a_node_without_a_majority_is_not_ready_until_its_peer_returns() {
    let mut c = Cluster::start(2, "").await;
    c.kill9(1);
    c.kill9(0);
    c.restart(0);
    // Its only peer is gone: after join_timeout_ms (3 s) it has joined, but its shards (two
    // voters each) cannot elect a leader alone, so it must not serve: nothing it
    // acknowledged would be on a majority.
    wait_for("n1 to have joined", || async {
        c.view(0).await.filter(|v| v["ready"] == true).map(|_| ())
    })
    .await;
    assert!(!c.ready(0).await, "ready without a majority");
    let (status, body) = publish(c.node(0), "alone", serde_json::json!(1), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    c.restart(1);
    c.wait_formed().await;
    let (status, body) = publish(c.node(0), "alone", serde_json::json!(2), None).await;
    assert_eq!(status, 201, "{body}");
    // Leaving is prompt: the node closes its sessions and gossip without waiting.
    let started = Instant::now();
    assert!(c.terminate(0).success());
    let took = started.elapsed();
    eprintln!("membership: SIGTERM -> exit after {took:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
