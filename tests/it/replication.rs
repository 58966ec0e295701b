//! Replication, black-box: each topic's shard is a Raft group, its leader owns the topic, and
//! a publish is acknowledged once a majority has it. When the owner is killed, hangs, is cut
//! off from the majority or shuts down, another voter takes over the same history: the epoch
//! never changes, offsets continue without a hole, subscribers on the survivors see no reset,
//! and no acknowledged message or consumer ack is lost. The owner is always read from
//! `GET /v1/topics/{t}`, never computed. Times are printed, never asserted.

use crate::cluster_harness::{
    assert_acks_continue, assert_one_stream, assert_saw_acks, longest_silence, publish_client,
    read_until, saw, seen_ids, Ack, Cluster, Publisher, Seen,
};
use crate::harness::{enc, get_json, wait_for, WsClient, DEADLINE};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Instant;

const CHAOS: &str = "[chaos]\nfault_injection = true\n";

/// WebSocket subscribers to `topic` from `after=0`, one on each of `nodes`.
pub(crate) async fn subscribers(
    c: &Cluster,
    nodes: &[usize],
    topic: &str,
) -> Vec<(WsClient, Vec<Seen>)> {
    let mut subs = Vec::new();
    for &i in nodes {
        let mut w = WsClient::connect(c.node(i)).await;
        w.subscribe(topic, Some(0), None).await;
        subs.push((w, Vec::new()));
    }
    subs
}

/// Reads each subscriber up to `epoch`:`upto` and checks it saw one unbroken stream.
pub(crate) async fn read_all(subs: &mut [(WsClient, Vec<Seen>)], epoch: &str, upto: u64) {
    for (w, seen) in subs.iter_mut() {
        read_until(w, seen, |s| saw(s, epoch, upto)).await;
        assert_one_stream(seen, epoch, upto);
    }
}

/// The epoch of a publish reply.
pub(crate) fn epoch_of(reply: &Value) -> String {
    reply["epoch"].as_str().expect("epoch").to_string()
}

/// Publishes once through each of `via` (ids `<tag>-<n>`, retried under the same id until
/// accepted) and checks each lands in `epoch` at the next offset after `last`; returns the
/// last offset.
pub(crate) async fn publish_through(
    c: &Cluster,
    via: &[usize],
    topic: &str,
    epoch: &str,
    tag: &str,
    last: u64,
) -> u64 {
    let mut next = last;
    for (n, &i) in via.iter().enumerate() {
        let id = format!("{tag}-{n}");
        let (_, reply) = c.publish_id(i, topic, json!({ "via": c.id(i) }), &id).await;
        next += 1;
        assert_eq!(
            (
                reply["epoch"].as_str(),
                reply["offset"].as_u64(),
                reply["id"].as_str()
            ),
            (Some(epoch), Some(next), Some(id.as_str())),
            "publish through {} forked or skipped: {reply}",
            c.id(i)
        );
    }
    next
}

/// Checks `GET /v1/topics/{t}` on node `i`: same epoch, head `head`.
pub(crate) async fn assert_topic(c: &Cluster, i: usize, topic: &str, epoch: &str, head: u64) {
    let (status, info) = get_json(c.node(i), &format!("/v1/topics/{}", enc(topic))).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (info["epoch"].as_str(), info["head"].as_u64()),
        (Some(epoch), Some(head)),
        "{} reports {info}",
        c.id(i)
    );
}

/// When the first publish sent after `from` was acknowledged, as time since `from`.
fn first_ack_after(acks: &[Ack], from: Instant) -> std::time::Duration {
    acks.iter()
        .find(|a| a.sent > from)
        .map(|a| a.acked - from)
        .expect("a publish sent after the fault was acknowledged")
}

/// What a fault of a busy topic's owner left: the topic's first epoch, the owner and the two
/// other nodes, WS subscribers on those two (from offset 0), and every acknowledged publish.
struct Faulted {
    epoch: String,
    owner: usize,
    others: (usize, usize),
    subs: Vec<(WsClient, Vec<Seen>)>,
    acks: Vec<Ack>,
    last: u64,
}

/// Creates topic `t`, publishes through a node that does not own it, applies `fault` to the
/// owner (`what` names it in the printed failover time), and waits for 20 more publishes
/// acknowledged by the new owner. Checks what every such test checks: one epoch, offsets
/// continuing from the first message, every id once, and both subscribers saw every ack.
async fn fault_the_owner_under_load(
    c: &mut Cluster,
    t: &str,
    what: &str,
    fault: impl FnOnce(&mut Cluster, usize),
) -> Faulted {
    let (first, o) = c.create_topic(0, t, json!("first")).await;
    let epoch = epoch_of(&first);
    // The publisher goes through `a`, which does not own the topic; subscribers on both
    // nodes that survive.
    let (a, b) = c.others(o);
    let mut subs = subscribers(c, &[a, b], t).await;
    let publisher = Publisher::start(c.http(a), t.to_string());
    publisher.wait_acks(20, |_| true).await;

    let at = Instant::now();
    fault(c, o);
    let new_owner = c.wait_owner(t, |n| n != o).await;
    let acks = publisher.wait_acks(1, |ack| ack.sent > at).await;
    eprintln!(
        "{what} of the owner {} to the first publish acknowledged by the new owner {}: {:?} (target 1.5 s)",
        c.id(o),
        c.id(new_owner),
        first_ack_after(&acks, at)
    );
    publisher.wait_acks(20, |ack| ack.sent > at).await;
    let acks = publisher.finish().await;
    // p-1 follows the topic's first message: one epoch, offsets 2, 3, ... by id, each id once.
    assert_acks_continue(&acks, &epoch, 2);
    let last = acks.last().expect("acks").offset;
    read_all(&mut subs, &epoch, last).await;
    for (_, seen) in &subs {
        assert_saw_acks(seen, &acks);
    }
    Faulted {
        epoch,
        owner: o,
        others: (a, b),
        subs,
        acks,
        last,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_is_replaced_in_the_same_epoch_without_a_gap_and_rejoins() {
    let mut c = Cluster::start(3, "").await;
    let t = "busy";
    let faulted = fault_the_owner_under_load(&mut c, t, "kill -9", |c, o| c.kill9(o)).await;
    let (o, (a, b)) = (faulted.owner, faulted.others);
    for (_, seen) in &faulted.subs {
        assert_eq!(seen_ids(seen)[0], "busy.first", "{seen:?}");
    }
    for i in [a, b] {
        assert_topic(&c, i, t, &faulted.epoch, faulted.last).await;
    }

    // The killed node comes back with its data: same epoch, offsets continue, through it
    // and through the others; the subscribers see no reset.
    c.restart(o);
    one_history_after_return(&c, t, faulted, &[o, a, b], "back").await;
}

/// Once the faulted owner is back (`c` formed again): publishes through each of `via` (ids
/// `<tag>-<n>`) continue the one history, the first subscribers see them with no reset, a
/// new subscriber on the returned node gets the whole history with every acknowledged
/// publish, and every node reports the same head.
async fn one_history_after_return(c: &Cluster, t: &str, f: Faulted, via: &[usize], tag: &str) {
    let Faulted {
        epoch,
        owner: o,
        others: (a, b),
        mut subs,
        acks,
        last,
    } = f;
    c.wait_formed().await;
    let next = publish_through(c, via, t, &epoch, tag, last).await;
    read_all(&mut subs, &epoch, next).await;
    c.wait_owner(t, |_| true).await;
    for i in [o, a, b] {
        assert_topic(c, i, t, &epoch, next).await;
    }
    // The returning node serves the whole history, as acknowledged.
    let mut full = subscribers(c, &[o], t).await;
    read_all(&mut full, &epoch, next).await;
    assert_saw_acks(&full[0].1, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_owner_is_replaced_in_the_same_epoch_and_does_not_fork_when_it_resumes() {
    let mut c = Cluster::start(3, "").await;
    let t = "hung";
    let faulted = fault_the_owner_under_load(&mut c, t, "kill -STOP", |c, o| c.stop(o)).await;
    // The hung node resumes believing it still leads: it must not fork the topic. Publishes
    // through it and through the others continue the one history.
    let o = faulted.owner;
    let (a, b) = faulted.others;
    c.cont(o);
    one_history_after_return(&c, t, faulted, &[o, a, b, o], "resumed").await;
}

/// POSTs a partition to node `i` that drops exactly `peers`.
async fn drop_peers(c: &Cluster, i: usize, peers: &[usize]) {
    let ids: Vec<&str> = peers.iter().map(|&j| c.id(j)).collect();
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chaos/partition", c.http(i)))
        .header("content-type", "application/json")
        .body(json!({ "drop": ids }).to_string())
        .send()
        .await
        .expect("partition request");
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_from_the_majority_never_acknowledges_and_rejoins_its_history() {
    let c = Cluster::start(3, CHAOS).await;
    let t = "cut";
    let (first, o) = c.create_topic(0, t, json!("first")).await;
    let epoch = epoch_of(&first);
    let (a, b) = c.others(o);

    // Cut the owner off, both ways.
    drop_peers(&c, o, &[a, b]).await;
    drop_peers(&c, a, &[o]).await;
    drop_peers(&c, b, &[o]).await;
    // The majority elects a new owner: a publish through it is accepted, in the same epoch.
    let (_, reply) = c.publish_id(a, t, json!("majority"), "majority").await;
    assert_eq!(
        (reply["epoch"].as_str(), reply["offset"].as_u64()),
        (Some(epoch.as_str()), Some(2)),
        "{reply}"
    );
    let elected = Instant::now();
    let new_owner = c.wait_owner_among(&[a, b], t, |n| n != o).await;
    eprintln!("the majority's owner: {}", c.id(new_owner));
    let publisher = Publisher::start(c.http(b), t.to_string());

    // Meanwhile publishes through the isolated node are never acknowledged: every one sent
    // now (the majority has moved on) fails, until one is answered 503 `unavailable`.
    let client = publish_client();
    let url = format!("{}/v1/topics/{}/messages", c.http(o), enc(t));
    let deadline = Instant::now() + DEADLINE;
    let mut outcomes = Vec::new();
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "the isolated node never answered an error: {outcomes:?}"
        );
        let id = format!("isolated-{}", outcomes.len());
        let sent = Instant::now();
        assert!(sent > elected);
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"data": "isolated", "id": id}).to_string())
            .send()
            .await;
        match res {
            Err(e) => outcomes.push(format!("{id}: {e}")),
            Ok(res) => {
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                outcomes.push(format!("{id}: {status} {body}"));
                assert!(
                    !(200..300).contains(&status),
                    "the isolated node acknowledged a publish: {outcomes:?}"
                );
                break (status, body);
            }
        }
    };
    eprintln!("publishes through the isolated node: {outcomes:?}");
    assert_eq!(answer.0, 503, "{outcomes:?}");
    assert_eq!(answer.1["error"]["code"], "unavailable", "{outcomes:?}");

    publisher.wait_acks(20, |_| true).await;
    let acks = publisher.finish().await;
    assert_acks_continue(&acks, &epoch, 3);
    let last = acks.last().expect("acks").offset;

    // Heal: the formerly isolated node takes the majority's history, drops whatever it may
    // have half-written, and publishes through it continue that history.
    for i in 0..3 {
        drop_peers(&c, i, &[]).await;
    }
    c.wait_formed().await;
    let next = publish_through(&c, &[o], t, &epoch, "healed", last).await;
    let mut subs = subscribers(&c, &[o], t).await;
    read_all(&mut subs, &epoch, next).await;
    let seen = &subs[0].1;
    assert_saw_acks(seen, &acks);
    let ids = seen_ids(seen);
    let mut want = vec!["cut.first".to_string(), "majority".to_string()];
    want.extend(acks.iter().map(|a| a.id.clone()));
    want.push("healed-0".to_string());
    assert_eq!(ids, want, "the healed node's history is not the majority's");
    assert_topic(&c, o, t, &epoch, next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_shut_down_with_sigterm_hands_over_in_the_same_epoch() {
    let mut c = Cluster::start(3, "").await;
    let t = "term";
    let (first, o) = c.create_topic(0, t, json!("first")).await;
    let epoch = epoch_of(&first);
    let (a, b) = c.others(o);
    let mut subs = subscribers(&c, &[b], t).await;
    let publisher = Publisher::start(c.http(a), t.to_string());
    publisher.wait_acks(20, |_| true).await;

    let term = Instant::now();
    let status = tokio::task::block_in_place(|| c.terminate(o));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    eprintln!("SIGTERM to exit: {:?}", term.elapsed());
    publisher.wait_acks(20, |ack| ack.sent > term).await;
    let acks = publisher.finish().await;
    let (outage, began) = longest_silence(&acks, term);
    eprintln!(
        "SIGTERM of the owner {}: longest time without an acknowledgement at {}: {outage:?}, starting {:?} after the signal",
        c.id(o),
        c.id(a),
        began.map(|b| b.saturating_duration_since(term))
    );
    assert_acks_continue(&acks, &epoch, 2);
    let last = acks.last().expect("acks").offset;
    read_all(&mut subs, &epoch, last).await;
    assert_saw_acks(&subs[0].1, &acks);
    let new_owner = c.wait_owner(t, |n| n != o).await;
    assert_ne!(new_owner, o);
    assert_topic(&c, b, t, &epoch, last).await;
}

/// A pull-consumer poll through `node` with a client timeout; `None` unless it answers 200.
async fn try_pull(c: &Cluster, node: usize, topic: &str, query: &str) -> Option<Vec<(u64, u64)>> {
    let url = format!("{}/v1/topics/{}/messages?{query}", c.http(node), enc(topic));
    let res = publish_client().get(url).send().await.ok()?;
    if res.status() != 200 {
        return None;
    }
    let body: Value = res.json().await.ok()?;
    let msgs = body["messages"].as_array()?;
    Some(
        msgs.iter()
            .map(|m| {
                (
                    m["offset"].as_u64().expect("offset"),
                    m["attempt"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no attempt: {m}")),
                )
            })
            .collect(),
    )
}

/// POSTs a consumer ack through `node`; returns the status (0 if no answer).
async fn try_ack(c: &Cluster, node: usize, topic: &str, body: Value) -> u16 {
    let url = format!("{}/v1/topics/{}/consumers/c1/ack", c.http(node), enc(topic));
    let res = publish_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    res.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_acked_position_survives_its_owners_death() {
    // A lease lost with the owner comes back after 2 s, not the default 30 s.
    let mut c = Cluster::start(3, "[consumers]\nack_wait_ms = 2000\nmin_ack_wait_ms = 50\n").await;
    let t = "work";
    let (first, o) = c.create_topic(0, t, json!({ "k": 1 })).await;
    let epoch = epoch_of(&first);
    let (a, b) = c.others(o);
    for k in 2..=10u64 {
        let (_, reply) = c
            .publish_id(a, t, json!({ "k": k }), &format!("m-{k}"))
            .await;
        assert_eq!(
            (reply["epoch"].as_str(), reply["offset"].as_u64()),
            (Some(epoch.as_str()), Some(k)),
            "{reply}"
        );
    }
    // Through a node that does not own the topic: lease 1..5, ack them.
    let leased = try_pull(&c, a, t, "consumer=c1&after=0&limit=5&timeout=0")
        .await
        .expect("pull through a non-owner");
    assert_eq!(leased, (1..=5).map(|o| (o, 1)).collect::<Vec<_>>());
    let status = try_ack(&c, a, t, json!({"offsets": [1, 2, 3, 4, 5]})).await;
    assert!((200..300).contains(&status), "ack answered {status}");

    c.kill9(o);
    // Pull through a survivor until 6..10 were all delivered; 1..5 never come back.
    let deadline = Instant::now() + DEADLINE;
    let mut got = BTreeSet::new();
    let want: BTreeSet<u64> = (6..=10).collect();
    while !want.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "6..10 not all delivered after the owner's death: got {got:?}"
        );
        if let Some(msgs) = try_pull(&c, a, t, "consumer=c1&limit=10&timeout=1").await {
            for (offset, attempt) in msgs {
                assert!(
                    offset > 5,
                    "acked offset {offset} delivered again (attempt {attempt})"
                );
                assert!(offset <= 10, "offset {offset} was never published");
                got.insert(offset);
            }
        }
    }
    // The survivors agree on the position, which moves on with the acks of 6..10.
    let new_owner = c.wait_owner(t, |n| n != o).await;
    eprintln!("the new owner: {}", c.id(new_owner));
    let info_path = format!("/v1/topics/{}/consumers/c1", enc(t));
    wait_for("the survivors to accept the ack of 6..10", || async {
        let status = try_ack(&c, b, t, json!({"offsets": [6, 7, 8, 9, 10]})).await;
        (200..300).contains(&status).then_some(())
    })
    .await;
    for i in [a, b] {
        let what = format!("{} to report the consumer's ack floor at 10", c.id(i));
        let (c, info_path) = (&c, &info_path);
        wait_for(&what, || async move {
            let (status, info) = get_json(c.node(i), info_path).await;
            (status == 200 && info["ack_floor"] == 10).then_some(())
        })
        .await;
    }
}

/// The epoch node `i` reports for `topic` (`GET /v1/topics/{t}`).
async fn topic_epoch(c: &Cluster, i: usize, topic: &str) -> String {
    let (status, info) = get_json(c.node(i), &format!("/v1/topics/{}", enc(topic))).await;
    assert_eq!(status, 200, "{info}");
    info["epoch"].as_str().expect("epoch").to_string()
}

/// What each of `subs` delivered, by id: each must be exactly `want`, in order.
pub(crate) fn assert_ids(subs: &[(WsClient, Vec<Seen>)], want: &[String], what: &str) {
    for (_, seen) in subs {
        assert_eq!(seen_ids(seen), want, "{what}: {seen:?}");
    }
}

/// Ids `<tag>-0`, `<tag>-1`, ..., as `publish_through` publishes them.
pub(crate) fn tagged(tag: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |k| format!("{tag}-{k}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_beyond_the_factor_publishes_and_subscribes_through_the_leader() {
    // Four nodes and three voters per shard: each shard has one learner. Which node that is
    // the test cannot tell (placement is the cluster's business), so every topic is
    // published to and subscribed to through every node, its shard's learner among them.
    let mut c = Cluster::start(4, "").await;
    let all: Vec<usize> = (0..c.len()).collect();
    let topics = c.topics_by_owner("beyond", 16).await;
    let owners: BTreeSet<usize> = topics.iter().map(|(_, o)| *o).collect();
    assert!(
        owners.len() >= 2,
        "fewer than two nodes lead a shard: {topics:?}"
    );
    eprintln!(
        "topics by owner: {:?}",
        topics
            .iter()
            .map(|(t, o)| (t.as_str(), c.id(*o)))
            .collect::<Vec<_>>()
    );

    // Per topic: its epoch, last offset, the ids in order, and a subscriber on every node.
    let mut state = Vec::new();
    for (t, _) in &topics {
        let epoch = topic_epoch(&c, 0, t).await;
        let mut subs = subscribers(&c, &all, t).await;
        // The probe is offset 1; one publish through each node follows it.
        let last = publish_through(&c, &all, t, &epoch, "every", 1).await;
        read_all(&mut subs, &epoch, last).await;
        let mut ids = vec![format!("{t}.first")];
        ids.extend(tagged("every", all.len()));
        assert_ids(&subs, &ids, &format!("{t} before the kill"));
        for &i in &all {
            assert_topic(&c, i, t, &epoch, last).await;
        }
        state.push((t.clone(), epoch, last, ids, subs));
    }

    // The owner of one topic dies: its shard keeps two voters and the learner. Every topic
    // goes on through each survivor, the learner of that shard included.
    let victim = topics[0].1;
    for (_, _, _, _, subs) in &mut state {
        subs.remove(victim);
    }
    c.kill9(victim);
    let survivors = c.running();
    let new_owner = c.wait_owner(&topics[0].0, |n| n != victim).await;
    eprintln!(
        "kill -9 of {} (owner of {}): new owner {}",
        c.id(victim),
        topics[0].0,
        c.id(new_owner)
    );
    for (t, epoch, last, ids, subs) in &mut state {
        let next = publish_through(&c, &survivors, t, epoch, "survivor", *last).await;
        read_all(subs, epoch, next).await;
        ids.extend(tagged("survivor", survivors.len()));
        assert_ids(
            subs,
            ids,
            &format!("{t} after the kill of {}", c.id(victim)),
        );
        for &i in &survivors {
            assert_topic(&c, i, t, epoch, next).await;
        }
        *last = next;
    }
}
