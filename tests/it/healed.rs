//! A corrupt replica heals (black-box, real processes): bytes flipped in records of a
//! stopped node's store (a topic's chunk, a Raft log entry) are never served, and the node
//! drops its copy of each shard concerned and catches it up from the shard's leader as a
//! new replica of that shard alone — found while starting, or later, when the node leads
//! the shard and reads the damaged chunk.

use crate::cluster_harness::Cluster;
use crate::harness::{enc, wait_for};
use crate::replication::{epoch_of, publish_through, tagged};
use crate::wiped::{assert_history, history_via, replicas};
use serde_json::{json, Value};

/// Shards of the test cluster (few, so that topics and the damaged log share none).
const SHARDS: u64 = 4;

fn shard_of(topic: &str) -> u64 {
    starling::placement::stable_hash(topic.as_bytes()) % SHARDS
}

/// Flips the last byte (payload, under the record's checksum) of one record in a stopped
/// node's sled store: in the trees whose name starts with `tree`, the first or last key
/// that starts with `key`.
fn flip_record(db: &sled::Db, tree: &str, key: &[u8], last: bool) {
    let mut found = None;
    for name in db.tree_names() {
        if !name.starts_with(tree.as_bytes()) {
            continue;
        }
        let t = db.open_tree(&name).expect("tree");
        let mut keys = t.scan_prefix(key).keys();
        let k = if last { keys.next_back() } else { keys.next() };
        if let Some(k) = k {
            found = Some((t, k.expect("key")));
            break;
        }
    }
    let (t, k) = found.unwrap_or_else(|| panic!("no record {key:?} in trees {tree}*"));
    let mut value = t.get(&k).expect("get").expect("value").to_vec();
    *value.last_mut().expect("not empty") ^= 0x5a;
    t.insert(&k, value).expect("write the flipped record");
}

/// Topic key prefix in a message tree.
fn chunk_prefix(topic: &str) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(0);
    key
}

/// Node `i`'s replica id of every shard, or `None` while it does not answer or is not a
/// voter of every shard.
async fn voter_ids(c: &Cluster, i: usize) -> Option<Vec<u64>> {
    let now = replicas(c, i).await?;
    let voter = now.len() as u64 == SHARDS
        && now
            .iter()
            .all(|(me, voters)| voters.len() == 3 && voters.contains(me));
    voter.then(|| now.iter().map(|(me, _)| *me).collect())
}

/// Waits until node `w` is a voter of every shard again with a new replica of exactly the
/// shards in `dropped` (the same one as `before` in the others); returns its ids.
async fn wait_replaced(c: &Cluster, w: usize, before: &[u64], dropped: &[u64]) -> Vec<u64> {
    let what = format!(
        "{} to be a voter of every shard, new in shards {dropped:?}",
        c.id(w)
    );
    wait_for(&what, || async {
        let now = voter_ids(c, w).await?;
        let changed: Vec<u64> = (0..SHARDS)
            .filter(|s| now[*s as usize] != before[*s as usize])
            .collect();
        (changed == dropped).then_some(now)
    })
    .await
}

/// Topics `<prefix>-<k>` with an owner `owner` accepts and a shard `shard_ok` accepts,
/// created (one publish each) until one fits; returns it and its epoch.
async fn topic_where(
    c: &Cluster,
    prefix: &str,
    owner: impl Fn(usize) -> bool,
    shard_ok: impl Fn(u64) -> bool,
) -> (String, String) {
    for k in 0..64 {
        let topic = format!("{prefix}-{k}");
        if !shard_ok(shard_of(&topic)) {
            continue;
        }
        let (reply, o) = c.create_topic(k % c.len(), &topic, json!("first")).await;
        if owner(o) {
            return (topic, epoch_of(&reply));
        }
    }
    panic!("no topic {prefix}-* fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_are_never_served_and_the_node_catches_its_copy_up_again() {
    let mut c = Cluster::start(3, &format!("[replication]\nshards = {SHARDS}\n")).await;
    let all: Vec<usize> = (0..c.len()).collect();
    let w = 2;
    // `led`: a topic w leads (its first chunk is damaged, found when w reads it as the
    // leader); `other`: a topic of another shard, led elsewhere (its last chunk is damaged,
    // found when w opens its store); a third shard's last log entry is damaged too.
    let (led, led_epoch) = topic_where(&c, "led", |o| o == w, |_| true).await;
    let (other, other_epoch) = topic_where(&c, "other", |o| o != w, |s| s != shard_of(&led)).await;
    let log_shard = (0..SHARDS)
        .find(|s| *s != shard_of(&led) && *s != shard_of(&other))
        .expect("a third shard");
    let via: Vec<usize> = (0..12).map(|k| all[k % all.len()]).collect();
    let mut led_last = publish_through(&c, &via, &led, &led_epoch, "a", 1).await;
    let mut other_last = publish_through(&c, &via, &other, &other_epoch, "a", 1).await;
    let mut led_ids = vec![format!("{led}.first")];
    led_ids.extend(tagged("a", via.len()));
    let mut other_ids = vec![format!("{other}.first")];
    other_ids.extend(tagged("a", via.len()));
    let before = voter_ids(&c, w).await.expect("w a voter of every shard");

    let status = tokio::task::block_in_place(|| c.terminate(w));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    {
        let db = sled::open(c.data_dir(w)).expect("open the stopped node's store");
        flip_record(&db, "msgs:", &chunk_prefix(&led), false);
        flip_record(&db, "msgs:", &chunk_prefix(&other), true);
        flip_record(&db, &format!("raft-log:{log_shard}"), &[], true);
        db.flush().expect("flush");
    }

    c.restart(w);
    c.wait_formed().await;
    // Found while starting: the store's damaged chunk and log entry. Only those two shards
    // have a new replica on w; it is a voter of every shard again.
    let mut dropped = vec![shard_of(&other), log_shard];
    dropped.sort();
    let healed = wait_replaced(&c, w, &before, &dropped).await;
    eprintln!("dropped at start: shards {dropped:?}; replicas {before:?} -> {healed:?}");

    // Leadership of `led`'s shard comes back to w (its preferred node), which holds the
    // damaged first chunk. A read of the whole history makes w read it: it is not served
    // (an error, or the right messages from another node), and w drops that copy too.
    let w_leads = c.wait_owner(&led, |o| o == w).await;
    assert_eq!(w_leads, w);
    let url = format!(
        "{}/v1/topics/{}/messages?after=0&limit=1000&timeout=0",
        c.http(0),
        enc(&led)
    );
    let res = reqwest::get(&url).await.expect("poll");
    let status = res.status();
    if status == 200 {
        let body: Value = res.json().await.expect("json");
        let got: Vec<&str> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(got, led_ids, "a damaged chunk was served");
    }
    let mut dropped = vec![shard_of(&other), log_shard, shard_of(&led)];
    dropped.sort();
    let healed = wait_replaced(&c, w, &before, &dropped).await;
    eprintln!("first read answered {status}; then replicas {healed:?}");

    // Everything goes on, in the same epochs, and every node serves the whole history.
    let via: Vec<usize> = (0..6).map(|k| all[(k + w) % all.len()]).collect();
    led_last = publish_through(&c, &via, &led, &led_epoch, "b", led_last).await;
    other_last = publish_through(&c, &via, &other, &other_epoch, "b", other_last).await;
    led_ids.extend(tagged("b", via.len()));
    other_ids.extend(tagged("b", via.len()));
    for i in all.clone() {
        let h = history_via(&c, i, &led).await;
        assert_history(&h, &led_epoch, &led_ids, &format!("{led} via {}", c.id(i)));
        let h = history_via(&c, i, &other).await;
        assert_history(
            &h,
            &other_epoch,
            &other_ids,
            &format!("{other} via {}", c.id(i)),
        );
    }

    // w's new copies hold the data: with another node gone, w is half of every majority,
    // and both topics keep their whole history.
    let victim = *all.iter().find(|&&i| i != w).expect("another node");
    c.kill9(victim);
    let survivors = c.running();
    led_last = publish_through(&c, &survivors, &led, &led_epoch, "c", led_last).await;
    other_last = publish_through(&c, &survivors, &other, &other_epoch, "c", other_last).await;
    led_ids.extend(tagged("c", survivors.len()));
    other_ids.extend(tagged("c", survivors.len()));
    assert_eq!(led_ids.len() as u64, led_last);
    assert_eq!(other_ids.len() as u64, other_last);
    let h = history_via(&c, w, &led).await;
    assert_history(&h, &led_epoch, &led_ids, "led via w after a loss");
    let h = history_via(&c, w, &other).await;
    assert_history(&h, &other_epoch, &other_ids, "other via w after a loss");
}
