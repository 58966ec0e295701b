//! The cluster through its real endpoints: routing between nodes, failover when an owner is
//! killed or hangs, the returning node catching up instead of forking the topic, and
//! consumers served across nodes. Real processes, real signals, real clients.

use crate::cluster_harness::Cluster;
use crate::harness::{enc, get_json, publish, wait_for, SseClient, WsClient, WsEvent};
use serde_json::{json, Value};
use starling::placement;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A topic name that `owner` owns while every node is up.
pub(crate) fn owned_by(c: &Cluster, prefix: &str, owner: usize) -> String {
    let ids: Vec<&str> = (0..c.len()).map(|i| c.id(i)).collect();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|t| placement::owner(t, ids.iter().copied()) == Some(c.id(owner)))
        .expect("some name hashes to every node")
}

/// What one subscriber saw, in order.
#[derive(Debug, Clone)]
enum Seen {
    Message {
        epoch: String,
        offset: u64,
        id: String,
    },
    Reset {
        epoch: String,
        recovered: bool,
    },
}

/// Reads a WebSocket subscriber's frames until `done` holds for what it saw so far.
async fn read_until(ws: &mut WsClient, seen: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    while !done(seen) {
        match ws.next_event().await {
            WsEvent::Json(v) if v["type"] == "message" => seen.push(Seen::Message {
                epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
                offset: v["offset"].as_u64().expect("offset"),
                id: v["id"].as_str().unwrap_or_default().to_string(),
            }),
            WsEvent::Json(v) if v["type"] == "subscribed" => seen.push(Seen::Reset {
                epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
                recovered: v["recovered"].as_bool().unwrap_or(true),
            }),
            WsEvent::Json(_) => {}
            WsEvent::Closed(code) => panic!("subscriber closed ({code:?}); saw {seen:?}"),
        }
    }
}

fn saw(seen: &[Seen], epoch: &str, offset: u64) -> bool {
    seen.iter().any(
        |s| matches!(s, Seen::Message { epoch: e, offset: o, .. } if e == epoch && *o == offset),
    )
}

/// The stream checks every subscriber must pass: within an epoch, offsets go up by one with
/// no hole; a new epoch is announced (`recovered:false`) before its first message, which is
/// its oldest retained offset or the first after the announced position. An announcement
/// lets the stream start over (a hung owner that resumes can briefly serve its stale epoch;
/// its followers are told, and told again when they move back).
fn assert_never_silent(seen: &[Seen]) {
    let mut epoch: Option<&str> = None;
    let mut last: Option<u64> = None;
    let mut announced: Option<&str> = None;
    for s in seen {
        match s {
            Seen::Reset {
                epoch: e,
                recovered,
            } => {
                assert!(
                    !recovered,
                    "a resumed subscription re-announced itself: {seen:?}"
                );
                announced = Some(e);
                last = None;
            }
            Seen::Message {
                epoch: e, offset, ..
            } => {
                if epoch != Some(e.as_str()) {
                    if epoch.is_some() {
                        assert_eq!(
                            announced,
                            Some(e.as_str()),
                            "epoch changed silently: {seen:?}"
                        );
                    }
                    epoch = Some(e);
                    last = None;
                }
                if let Some(l) = last {
                    assert_eq!(*offset, l + 1, "hole or repeat within epoch {e}: {seen:?}");
                }
                last = Some(*offset);
            }
        }
    }
}

#[tokio::test]
async fn publishes_on_every_node_reach_subscribers_on_every_node_in_order() {
    let c = Cluster::start(3, "").await;
    for owner in 0..3 {
        let t = owned_by(&c, "route", owner);
        let mut ws = Vec::new();
        let mut sse = Vec::new();
        for i in 0..3 {
            let mut w = WsClient::connect(c.node(i)).await;
            w.subscribe(&t, Some(0), None).await;
            ws.push(w);
            let path = format!("/v1/topics/{}/events?after=0", enc(&t));
            sse.push(SseClient::connect(c.node(i), &path, None).await);
        }
        let mut ids = Vec::new();
        for k in 0..12u64 {
            let (status, body) =
                publish(c.node((k % 3) as usize), &t, json!({ "k": k }), None).await;
            assert_eq!(status, 201, "publish on {}: {body}", c.id((k % 3) as usize));
            assert_eq!(body["offset"], k + 1, "{body}");
            ids.push(body["id"].clone());
        }
        for w in &mut ws {
            for (k, id) in ids.iter().enumerate() {
                let v = w.recv_type("message").await;
                assert_eq!(
                    (v["offset"].as_u64(), &v["id"]),
                    (Some(k as u64 + 1), id),
                    "{v}"
                );
                assert_eq!(v["data"]["k"], k as u64);
            }
        }
        for s in &mut sse {
            for (k, id) in ids.iter().enumerate() {
                let v = s.next_data().await.json();
                assert_eq!(
                    (v["offset"].as_u64(), &v["id"]),
                    (Some(k as u64 + 1), id),
                    "{v}"
                );
            }
        }
        for i in 0..3 {
            let (status, info) = get_json(c.node(i), &format!("/v1/topics/{}", enc(&t))).await;
            assert_eq!(status, 200, "{info}");
            assert_eq!(info["owner"], c.id(owner), "{info}");
            assert_eq!(info["head"], 12, "{info}");
        }
    }
    // Each message crossed to each of the two other nodes once, whatever the number of
    // subscribers there (two per node here): 3 topics x 12 messages x 2 nodes.
    let mut sent = 0.0;
    for i in 0..3 {
        sent += c
            .node(i)
            .count("starling_cluster_messages_sent_total", "")
            .await;
    }
    assert_eq!(sent, 72.0, "messages sent between nodes");
}

/// Publishes through `node` every few milliseconds until stopped; records each outcome.
struct Publisher {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(String, u64, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(url: String, topic: String) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            // The offered load: one publish every 5 ms (a pace, not a wait for state).
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            let mut k = 0u64;
            while !s.load(Ordering::Relaxed) {
                pace.tick().await;
                k += 1;
                let body = json!({"data": {"k": k}, "id": format!("p-{k}")});
                let res = client
                    .post(format!("{url}/v1/topics/{}/messages", enc(&topic)))
                    .body(body.to_string())
                    .send()
                    .await;
                if let Ok(res) = res {
                    if res.status().is_success() {
                        let v: Value = res.json().await.unwrap_or_default();
                        let epoch = v["epoch"].as_str().unwrap_or_default().to_string();
                        let id = v["id"].as_str().unwrap_or_default().to_string();
                        a.lock()
                            .unwrap()
                            .push((epoch, v["offset"].as_u64().unwrap_or(0), id));
                    }
                }
            }
        });
        Publisher { stop, acks, task }
    }

    fn acked(&self) -> Vec<(String, u64, String)> {
        self.acks.lock().unwrap().clone()
    }

    async fn wait_acks(&self, epoch_not: Option<&str>, n: usize) -> Vec<(String, u64, String)> {
        wait_for(&format!("{n} acked publishes"), || async {
            let acks = self.acked();
            let matching = acks
                .iter()
                .filter(|(e, ..)| Some(e.as_str()) != epoch_not)
                .count();
            (matching >= n).then_some(acks)
        })
        .await
    }

    async fn finish(self) -> Vec<(String, u64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let acks = self.acks.clone();
        let _ = self.task.await;
        let acked = acks.lock().unwrap().clone();
        acked
    }
}

/// Checks that every acked publish a subscriber saw carries the id it was acked with.
fn assert_same_data(seen: &[Seen], acks: &[(String, u64, String)]) {
    let acked: HashMap<(&str, u64), &str> = acks
        .iter()
        .map(|(e, o, id)| ((e.as_str(), *o), id.as_str()))
        .collect();
    for s in seen {
        if let Seen::Message { epoch, offset, id } = s {
            if let Some(want) = acked.get(&(epoch.as_str(), *offset)) {
                assert_eq!(id, want, "{epoch}:{offset} delivered with other data");
            }
        }
    }
}

#[tokio::test]
async fn killing_the_owner_of_a_busy_topic_fails_over_then_it_rejoins_without_forking() {
    let mut c = Cluster::start(3, "").await;
    let t = owned_by(&c, "busy", 0);
    let mut subs = Vec::new();
    for i in [1, 2] {
        let mut w = WsClient::connect(c.node(i)).await;
        w.subscribe(&t, Some(0), None).await;
        subs.push((w, Vec::new()));
    }
    let publisher = Publisher::start(c.http(1), t.clone());
    let before = publisher.wait_acks(None, 20).await;
    let first_epoch = before[0].0.clone();

    c.kill9(0);
    let killed = Instant::now();
    let after = publisher.wait_acks(Some(&first_epoch), 1).await;
    eprintln!(
        "kill -9 of the owner to the first publish accepted by the new owner: {:?}",
        killed.elapsed()
    );
    let new_epoch = after
        .iter()
        .find(|(e, ..)| *e != first_epoch)
        .map(|(e, ..)| e.clone())
        .expect("new epoch");
    publisher.wait_acks(Some(&first_epoch), 20).await;
    let acks = publisher.finish().await;
    let last_new = acks
        .iter()
        .filter(|(e, ..)| *e == new_epoch)
        .map(|(_, o, _)| *o)
        .max();
    let last_new = last_new.expect("publishes in the new epoch");
    for (w, seen) in &mut subs {
        read_until(w, seen, |s| saw(s, &new_epoch, last_new)).await;
        assert_never_silent(seen);
        assert_same_data(seen, &acks);
        // Every publish acked by the new owner reached the surviving subscribers.
        for (e, o, _) in acks.iter().filter(|(e, ..)| *e == new_epoch) {
            assert!(saw(seen, e, *o), "acked {e}:{o} never delivered: {seen:?}");
        }
    }

    // The killed node comes back: it rejoins, takes its topics back from the interim owner
    // (same epoch, offsets continue), and the subscribers see no reset.
    c.restart(0);
    c.wait_formed().await;
    let mut next = last_new;
    for k in 0..5 {
        let (status, body) = publish(c.node(2), &t, json!({ "after": k }), None).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["epoch"],
            new_epoch.as_str(),
            "the returning owner forked the topic"
        );
        next += 1;
        assert_eq!(body["offset"], next, "{body}");
    }
    let (_, info) = get_json(c.node(1), &format!("/v1/topics/{}", enc(&t))).await;
    assert_eq!(info["owner"], c.id(0), "{info}");
    assert_eq!(info["epoch"], new_epoch.as_str(), "{info}");
    for (w, seen) in &mut subs {
        let mark = seen.len();
        read_until(w, seen, |s| saw(s, &new_epoch, next)).await;
        assert!(
            seen[mark..]
                .iter()
                .all(|s| matches!(s, Seen::Message { .. })),
            "a reset after the owner returned: {:?}",
            &seen[mark..]
        );
        assert_never_silent(seen);
    }
}

#[tokio::test]
async fn a_hung_owner_is_replaced_and_catches_up_when_it_resumes() {
    let mut c = Cluster::start(3, "").await;
    let t = owned_by(&c, "hung", 2);
    let mut w = WsClient::connect(c.node(0)).await;
    w.subscribe(&t, Some(0), None).await;
    let mut seen = Vec::new();
    let (status, body) = publish(c.node(1), &t, json!("before"), None).await;
    assert_eq!(status, 201, "{body}");
    let old_epoch = body["epoch"].as_str().expect("epoch").to_string();

    c.stop(2);
    let took = c.wait_status(0, 2, "down").await;
    c.wait_status(1, 2, "down").await;
    eprintln!("kill -STOP to marked down: {took:?}");
    let (status, body) = publish(c.node(0), &t, json!("during"), None).await;
    assert_eq!(status, 201, "{body}");
    let new_epoch = body["epoch"].as_str().expect("epoch").to_string();
    assert_ne!(
        new_epoch, old_epoch,
        "history on the hung node cannot be served"
    );
    let during = body["offset"].as_u64().expect("offset");
    read_until(&mut w, &mut seen, |s| saw(s, &new_epoch, during)).await;

    c.cont(2);
    c.wait_formed().await;
    let (status, body) = publish(c.node(1), &t, json!("after"), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["epoch"],
        new_epoch.as_str(),
        "the resumed owner forked the topic"
    );
    assert_eq!(body["offset"], during + 1, "{body}");
    let (_, info) = get_json(c.node(2), &format!("/v1/topics/{}", enc(&t))).await;
    assert_eq!(
        (&info["owner"], &info["epoch"]),
        (&json!(c.id(2)), &json!(new_epoch))
    );
    read_until(&mut w, &mut seen, |s| saw(s, &new_epoch, during + 1)).await;
    assert_never_silent(&seen);
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::Reset { epoch, .. } if *epoch == new_epoch)),
        "the new epoch was not announced: {seen:?}"
    );
}

#[tokio::test]
async fn a_consumer_on_one_node_consumes_a_topic_owned_by_another() {
    let c = Cluster::start(3, "").await;
    let t = owned_by(&c, "work", 0);
    let mut w = WsClient::connect(c.node(1)).await;
    w.send(json!({"type": "subscribe", "topic": t, "consumer": "c1", "req": 1}))
        .await;
    let v = w.recv_type("subscribed").await;
    assert_eq!(v["req"], 1, "{v}");
    for k in 1..=3u64 {
        let (status, body) = publish(c.node(2), &t, json!({ "k": k }), None).await;
        assert_eq!((status, body["offset"].as_u64()), (201, Some(k)), "{body}");
    }
    for k in 1..=3u64 {
        let m = w.recv_type("message").await;
        assert_eq!(
            (m["offset"].as_u64(), m["attempt"].as_u64()),
            (Some(k), Some(1)),
            "{m}"
        );
    }
    w.send(json!({"type": "ack", "topic": t, "consumer": "c1", "upto": 3}))
        .await;
    let info_path = format!("/v1/topics/{}/consumers/c1", enc(&t));
    wait_for("the ack to reach the owner", || async {
        let (status, info) = get_json(c.node(2), &info_path).await;
        (status == 200 && info["ack_floor"] == 3).then_some(())
    })
    .await;

    // An HTTP ack on a third node, for a message the member got.
    let (status, _) = publish(c.node(2), &t, json!({ "k": 4 }), None).await;
    assert_eq!(status, 201);
    let m = w.recv_type("message").await;
    assert_eq!(m["offset"], 4, "{m}");
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v1/topics/{}/consumers/c1/ack",
            c.http(2),
            enc(&t)
        ))
        .body(json!({"offsets": [4]}).to_string())
        .send()
        .await
        .expect("ack");
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let (_, info) = get_json(c.node(0), &info_path).await;
    assert_eq!(info["ack_floor"], 4, "{info}");

    // A member that leaves has its unacked messages redelivered to the one that stays.
    let mut other = WsClient::connect(c.node(2)).await;
    other
        .send(json!({"type": "subscribe", "topic": t, "consumer": "c1", "req": 2}))
        .await;
    other.recv_type("subscribed").await;
    let (status, _) = publish(c.node(0), &t, json!({ "k": 5 }), None).await;
    assert_eq!(status, 201);
    let w_got_it = tokio::select! {
        m = w.recv_type("message") => { assert_eq!(m["offset"], 5, "{m}"); true }
        m = other.recv_type("message") => { assert_eq!(m["offset"], 5, "{m}"); false }
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
        (Some(5), Some(2)),
        "{m}"
    );
}

#[tokio::test]
async fn consumer_positions_move_with_the_topic() {
    let mut c = Cluster::start(3, "").await;
    let t = owned_by(&c, "cpos", 0);
    // n1 is away: the topic and its consumer live on the runner-up meanwhile.
    c.kill9(0);
    c.wait_status(1, 0, "down").await;
    c.wait_status(2, 0, "down").await;
    let mut w = WsClient::connect(c.node(2)).await;
    w.send(json!({"type": "subscribe", "topic": t, "consumer": "c1", "req": 1}))
        .await;
    w.recv_type("subscribed").await;
    for k in 1..=4u64 {
        let (status, body) = publish(c.node(1), &t, json!({ "k": k }), None).await;
        assert_eq!((status, body["offset"].as_u64()), (201, Some(k)), "{body}");
    }
    for k in 1..=4u64 {
        assert_eq!(w.recv_type("message").await["offset"], k);
    }
    w.send(json!({"type": "ack", "topic": t, "consumer": "c1", "upto": 3}))
        .await;
    let info_path = format!("/v1/topics/{}/consumers/c1", enc(&t));
    wait_for("the ack to be recorded", || async {
        let (_, info) = get_json(c.node(1), &info_path).await;
        (info["ack_floor"] == 3).then_some(())
    })
    .await;

    // n1 returns and takes the topic back, consumer position included.
    c.restart(0);
    c.wait_formed().await;
    wait_for(
        "n1 to own the topic with the consumer's position",
        || async {
            let (_, topic) = get_json(c.node(0), &format!("/v1/topics/{}", enc(&t))).await;
            let (_, info) = get_json(c.node(0), &info_path).await;
            (topic["owner"] == c.id(0) && info["ack_floor"] == 3).then_some(())
        },
    )
    .await;
    let (status, body) = publish(c.node(0), &t, json!({ "k": 5 }), None).await;
    assert_eq!((status, body["offset"].as_u64()), (201, Some(5)), "{body}");
    // The member (still connected to n3) gets the unacked 4 again and 5, in either order
    // (4 may first go to a membership that is being released); nothing at or below the
    // acked position comes back.
    let mut got = Vec::new();
    while !(got.contains(&4) && got.contains(&5)) {
        let m = w.recv_type("message").await;
        let offset = m["offset"].as_u64().expect("offset");
        assert!(offset > 3, "acked offset {offset} delivered again: {m}");
        got.push(offset);
    }
    assert!(got.contains(&4), "unacked 4 was not redelivered: {got:?}");
}
