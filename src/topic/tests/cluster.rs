//! In-process twins of the cluster tests in `tests/it/cluster.rs`: several nodes' topic and
//! session layers in one process, joined by the cluster's in-memory transport
//! ([`SimNet`]). Membership is whatever the test sets, so failover is a step, not a race
//! with a failure detector.

use super::support::*;
use crate::cluster::client::Cluster;
use crate::cluster::sim::SimNet;
use crate::protocol::consumer::AckRequest;
use crate::protocol::frames::Position;
use crate::protocol::TopicName;
use crate::session::SessionMsg;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// Nodes `n1..=nN` on one simulated network.
struct Nodes {
    net: SimNet,
    ids: Vec<String>,
    nodes: Vec<Option<Harness>>,
}

impl Nodes {
    async fn start(n: usize) -> Nodes {
        let net = SimNet::default();
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let joined: Vec<_> = ids.iter().map(|id| net.join(id)).collect();
        // Together: each waits to hear from a majority before it forms the shards.
        let started = ids.iter().zip(joined).map(|(id, (view, transport))| {
            let cluster = Cluster::new(view, transport, Duration::from_secs(2));
            Harness::start_in(cluster, net.announcer(id))
        });
        let started = futures_util::future::join_all(started).await;
        let mut nodes = Vec::new();
        for (id, h) in ids.iter().zip(started) {
            net.serve(id, Arc::new(h.topics.clone()));
            nodes.push(Some(h));
        }
        Nodes { net, ids, nodes }
    }

    fn node(&self, i: usize) -> &Harness {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// A topic named `prefix-k` whose shard prefers node `i` as its leader, once every
    /// node sees `i` leading it.
    async fn owned_by(&self, prefix: &str, i: usize) -> TopicName {
        let repl = &self.node(i).replication;
        let t = (0..)
            .map(|k| format!("{prefix}-{k}"))
            .find(|t| repl.voters(repl.shard_of(t)).first() == Some(&self.ids[i]))
            .expect("some shard prefers every node");
        let shard = repl.shard_of(&t);
        for h in self.nodes.iter().flatten() {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while h.replication.leader(shard).as_deref() != Some(self.ids[i].as_str()) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{t}: n{} leads",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        topic(&t)
    }

    /// Node `i` dies at once: it neither sends nor answers, and the others see it down.
    async fn kill(&mut self, i: usize) {
        self.net.stop(&self.ids[i]);
        let up: Vec<&str> = (0..self.ids.len())
            .filter(|j| *j != i)
            .map(|j| self.ids[j].as_str())
            .collect();
        self.net.set_up(&up);
        if let Some(h) = self.nodes[i].take() {
            h.stop().await;
        }
    }

    async fn stop(self) {
        for h in self.nodes.into_iter().flatten() {
            h.stop().await;
        }
    }
}

/// Joins consumer `name` of `topic` through `session`; panics unless it is accepted.
async fn join_consumer(session: &ActorRef<SessionMsg>, topic: &TopicName, name: &str) {
    let reply = session
        .call(
            |reply| SessionMsg::Subscribe {
                topic: topic.clone(),
                position: Position::default(),
                consumer: Some(name.to_string()),
                options: Default::default(),
                req: None,
                reply: Some(reply),
            },
            Some(DEADLINE),
        )
        .await;
    assert!(
        matches!(reply, Ok(CallResult::Success(Ok(())))),
        "joining {name} of {topic}"
    );
}

fn from_start() -> Position {
    Position {
        after: Some(0),
        epoch: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_on_every_node_reach_subscribers_on_every_node_in_order() {
    let nodes = Nodes::start(3).await;
    // A slow link must not reorder anything.
    nodes.net.delay("n1", "n3", Duration::from_millis(3));
    for owner in 0..3 {
        let t = nodes.owned_by("route", owner).await;
        let mut readers = Vec::new();
        for i in 0..3 {
            let (session, reader) = nodes.node(i).session().await;
            subscribe_at(&session, &t, from_start()).await;
            readers.push((session, reader));
        }
        let actors: Vec<_> = (0..3).map(|i| nodes.node(i).topic_actor_id(&t)).collect();
        for k in 1..=12u64 {
            let at = nodes.node((k % 3) as usize);
            let offset = at.publish_ok(&t, &format!("{{\"k\":{k}}}")).await;
            assert_eq!(offset, k, "publish {k} on n{}", k % 3 + 1);
        }
        for (i, (_, reader)) in readers.iter_mut().enumerate() {
            reader.wait_for_offset(&t, 12).await;
            assert_eq!(
                reader.offsets(&t),
                (1..=12).collect::<Vec<_>>(),
                "n{}",
                i + 1
            );
            let data: Vec<_> = reader.got.iter().map(|g| g.data["k"].as_u64()).collect();
            assert_eq!(data, (1..=12).map(Some).collect::<Vec<_>>(), "n{}", i + 1);
        }
        // Each follower delivered what the owner cast to it, without starting over (a
        // follower that misses deliveries retires and its subscribers replay instead).
        let now: Vec<_> = (0..3).map(|i| nodes.node(i).topic_actor_id(&t)).collect();
        assert_eq!(now, actors, "topic actors of {t}");
        for i in 0..3 {
            let info = nodes.node(i).topics.info(&t).await.expect("info");
            let info = info.expect("the topic exists");
            assert_eq!(
                (info.owner.as_str(), info.head),
                (nodes.ids[owner].as_str(), 12)
            );
        }
    }
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_moves_the_topic_in_the_same_epoch() {
    let mut nodes = Nodes::start(3).await;
    let t = nodes.owned_by("busy", 0).await;
    let mut readers = Vec::new();
    for i in 1..3 {
        let (session, reader) = nodes.node(i).session().await;
        subscribe_at(&session, &t, from_start()).await;
        readers.push((session, reader));
    }
    for k in 1..=3 {
        nodes.node(1).publish_ok(&t, &format!("{k}")).await;
    }
    let first_epoch = {
        let (_, reader) = &mut readers[0];
        reader.wait_for_offset(&t, 3).await;
        reader.got[0].epoch.clone()
    };

    nodes.kill(0).await;
    // The publish waits out the election ("moving" is retried inside) and lands on the new
    // leader, which holds every committed entry: same epoch, the next offset.
    let ack = nodes
        .node(1)
        .topics
        .publish(&t, bytes::Bytes::from_static(b"4"), Some("after".into()))
        .await
        .expect("publish after the owner died");
    assert_eq!(&*ack.epoch, first_epoch, "the epoch did not change");
    assert_eq!(ack.offset, 4);
    for (i, (_, reader)) in readers.iter_mut().enumerate() {
        reader.wait_for_offset(&t, 4).await;
        assert_eq!(reader.offsets(&t), vec![1, 2, 3, 4], "n{}", i + 2);
        assert!(
            reader.announced.iter().all(|(_, recovered)| *recovered),
            "n{}: a reset: {:?}",
            i + 2,
            reader.announced
        );
    }
    let info = nodes
        .node(2)
        .topics
        .info(&t)
        .await
        .expect("info")
        .expect("exists");
    assert_eq!((&*info.epoch, info.head), (first_epoch.as_str(), 4));
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_one_node_consumes_a_topic_owned_by_another() {
    let nodes = Nodes::start(3).await;
    let t = nodes.owned_by("work", 0).await;
    let (member, mut got) = nodes.node(1).session().await;
    join_consumer(&member, &t, "c1").await;
    for k in 1..=3 {
        nodes.node(2).publish_ok(&t, &format!("{k}")).await;
    }
    got.wait_for_offset(&t, 3).await;
    let attempts: Vec<_> = got.got.iter().map(|g| (g.offset, g.attempt)).collect();
    assert_eq!(attempts, [(1, Some(1)), (2, Some(1)), (3, Some(1))]);

    member
        .cast(SessionMsg::Ack {
            topic: t.clone(),
            consumer: "c1".into(),
            ack: AckRequest::Upto(3),
            req: None,
        })
        .expect("ack");
    let owner = nodes
        .node(0)
        .topics
        .handle(&t)
        .await
        .expect("owner's actor");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let info = owner
            .consumer_info("c1".into())
            .await
            .expect("consumer info");
        if info.is_some_and(|i| i.ack_floor == 3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ack reached the owner"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A member that leaves has its unacked message redelivered to the one that stays.
    let (other, mut other_got) = nodes.node(2).session().await;
    join_consumer(&other, &t, "c1").await;
    nodes.node(0).publish_ok(&t, "5").await;
    let four = |r: &Reader| r.offsets(&t).contains(&4);
    let w_got_it = tokio::select! {
        _ = got.wait_until("offset 4 on n2", four) => true,
        _ = other_got.wait_until("offset 4 on n3", four) => false,
    };
    let mut stays = if w_got_it {
        member.stop(None);
        other_got
    } else {
        other.stop(None);
        got
    };
    stays
        .wait_until("offset 4 again", |r| {
            r.got.iter().any(|g| g.offset == 4 && g.attempt == Some(2))
        })
        .await;
    nodes.stop().await;
}
