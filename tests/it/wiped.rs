//! A node restarted on a wiped data directory (black-box, real processes): it comes back
//! as a new replica of every shard, catches up, takes its old place among the voters, and
//! the cluster then survives losing another node with nothing lost and no epoch change.

use crate::cluster_harness::{publish_client, Cluster};
use crate::harness::{enc, wait_for};
use crate::replication::{
    assert_ids, assert_topic, epoch_of, publish_through, read_all, subscribers, tagged,
};
use serde_json::{json, Value};
use std::time::Instant;

/// Node `i`'s replica of every shard as `GET /v1/cluster` reports it: its Raft id and
/// the shard's voters.
pub(crate) async fn replicas(c: &Cluster, i: usize) -> Option<Vec<(u64, Vec<u64>)>> {
    let view = c.view(i).await?;
    view["shards"]
        .as_array()?
        .iter()
        .map(|s| {
            let voters: Option<Vec<u64>> =
                s["voters"].as_array()?.iter().map(Value::as_u64).collect();
            Some((s["replica"].as_u64()?, voters?))
        })
        .collect()
}

/// The whole history of `topic` read through node `via` with long polls from `after=0`:
/// (epoch, offset, id) of each message, in order.
pub(crate) async fn history_via(
    c: &Cluster,
    via: usize,
    topic: &str,
) -> Vec<(String, u64, String)> {
    let client = publish_client();
    let mut out: Vec<(String, u64, String)> = Vec::new();
    loop {
        let after = out.last().map_or(0, |m| m.1);
        let url = format!(
            "{}/v1/topics/{}/messages?after={after}&limit=1000&timeout=0",
            c.http(via),
            enc(topic)
        );
        let (client, url) = (&client, &url);
        let what = format!("{} to answer a poll of {topic} after {after}", c.id(via));
        let body: Value = wait_for(&what, || async move {
            let res = client.get(url).send().await.ok()?;
            if res.status() != 200 {
                return None;
            }
            res.json().await.ok()
        })
        .await;
        let msgs = body["messages"].as_array().expect("messages");
        if msgs.is_empty() {
            return out;
        }
        for m in msgs {
            out.push((
                m["epoch"].as_str().unwrap_or_default().to_string(),
                m["offset"].as_u64().expect("offset"),
                m["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
}

/// `history` is exactly `ids` at offsets 1, 2, ... in `epoch`.
pub(crate) fn assert_history(
    history: &[(String, u64, String)],
    epoch: &str,
    ids: &[String],
    what: &str,
) {
    let want: Vec<(String, u64, String)> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| (epoch.to_string(), k as u64 + 1, id.clone()))
        .collect();
    assert_eq!(history, want, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_a_wiped_data_dir_catches_up_and_the_cluster_survives_another_loss() {
    let mut c = Cluster::start(3, "").await;
    let all: Vec<usize> = (0..c.len()).collect();
    let t = "wiped";
    let (first, o) = c.create_topic(0, t, json!("first")).await;
    let epoch = epoch_of(&first);
    let mut ids = vec![format!("{t}.first")];
    // 20 more through every node in turn.
    let via: Vec<usize> = (0..20).map(|k| all[k % all.len()]).collect();
    let mut last = publish_through(&c, &via, t, &epoch, "a", 1).await;
    ids.extend(tagged("a", via.len()));
    // A few more topics, so the wiped node has several shards' entries to get back.
    let mut spread = Vec::new();
    for k in 0..6 {
        let name = format!("spread-{k}");
        let (reply, _) = c.create_topic(k % all.len(), &name, json!("first")).await;
        let e = epoch_of(&reply);
        let l = publish_through(&c, &all, &name, &e, "a", 1).await;
        let mut names = vec![format!("{name}.first")];
        names.extend(tagged("a", all.len()));
        spread.push((name, e, l, names));
    }

    // A node that does not own the topic shuts down and loses its data directory.
    let w = c.others(o).0;
    let before = replicas(&c, w).await.expect("the node's replicas");
    assert!(
        !before.is_empty() && before.iter().all(|(me, voters)| voters.contains(me)),
        "{before:?}"
    );
    let dir = c.data_dir(w);
    assert!(dir.is_dir(), "no data directory at {}", dir.display());
    let status = tokio::task::block_in_place(|| c.terminate(w));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    std::fs::remove_dir_all(&dir).expect("wipe the data directory");
    // Two voters of three go on meanwhile.
    let up = c.running();
    let via: Vec<usize> = (0..5).map(|k| up[k % up.len()]).collect();
    last = publish_through(&c, &via, t, &epoch, "down", last).await;
    ids.extend(tagged("down", via.len()));

    let restarted = Instant::now();
    c.restart(w);
    c.wait_formed().await;
    eprintln!(
        "{} restarted on an empty data directory: ready and formed after {:?}",
        c.id(w),
        restarted.elapsed()
    );
    // Every node names the same owner again.
    let o1 = c.wait_owner(t, |_| true).await;
    eprintln!("owner after the restart: {}", c.id(o1));
    // 10 more, through the wiped node too: same epoch, next offsets.
    let via: Vec<usize> = (0..10).map(|k| all[(k + w) % all.len()]).collect();
    last = publish_through(&c, &via, t, &epoch, "back", last).await;
    ids.extend(tagged("back", via.len()));
    // Every shard's leader puts the wiped node's new replica in its old one's place: it
    // reports itself one of three voters of every shard (three nodes, three voters), and
    // its old replica is not.
    let (before, c_ref) = (&before, &c);
    let now = wait_for(
        &format!("{} to be a voter of every shard again", c.id(w)),
        || async move {
            let now = replicas(c_ref, w).await?;
            let replaced = now.len() == before.len()
                && now.iter().zip(before).all(|((me, voters), (old, _))| {
                    voters.len() == 3 && voters.contains(me) && !voters.contains(old)
                });
            replaced.then_some(now)
        },
    )
    .await;
    for ((new, _), (old, _)) in now.iter().zip(before) {
        assert_ne!(new, old, "the wiped node answers as the replica it was");
    }

    // Another node dies: the topic's owner if that is one of the two original nodes (a new
    // leader must be elected from the wiped node and the other), else an original node.
    let o2 = c.wait_owner(t, |_| true).await;
    let victim = if o2 != w {
        o2
    } else {
        *all.iter().find(|&&i| i != w).expect("an original node")
    };
    c.kill9(victim);
    let survivors = c.running();
    let new_owner = c.wait_owner(t, |n| n != victim).await;
    eprintln!(
        "owner before the kill: {}; kill -9 of {}; new owner: {} (the wiped node is {})",
        c.id(o2),
        c.id(victim),
        c.id(new_owner),
        c.id(w)
    );
    let via: Vec<usize> = (0..6).map(|k| survivors[k % survivors.len()]).collect();
    last = publish_through(&c, &via, t, &epoch, "after", last).await;
    ids.extend(tagged("after", via.len()));
    assert!(last >= 30, "only {last} messages");

    // The whole history, through the wiped node: every acknowledged message, one epoch,
    // no gap, in order, by WebSocket and by long poll.
    let mut subs = subscribers(&c, &[w], t).await;
    read_all(&mut subs, &epoch, last).await;
    assert_ids(&subs, &ids, "WebSocket from 0 through the wiped node");
    let history = history_via(&c, w, t).await;
    assert_history(
        &history,
        &epoch,
        &ids,
        "long poll from 0 through the wiped node",
    );
    assert_topic(&c, w, t, &epoch, last).await;
    // The other shards too: each topic goes on through the survivors and keeps its history.
    for (name, e, l, names) in &mut spread {
        let next = publish_through(&c, &survivors, name, e, "after", *l).await;
        names.extend(tagged("after", survivors.len()));
        let history = history_via(&c, w, name).await;
        assert_history(
            &history,
            e,
            names,
            &format!("{name} through the wiped node"),
        );
        *l = next;
    }
}
