//! Recovering a shard from a minority (black-box, real processes): two of three nodes lose
//! their data directories, so no shard can elect a leader; `starling recover-shard` on the
//! node that kept its data starts a shard anew from its copy under a new epoch (announced:
//! a resume from the old epoch is `recovered:false`), the wiped nodes join the new group
//! and hold its data (the shard goes on without the recovering node), and the topic goes
//! on, with the history the copy held.

use crate::cluster_harness::Cluster;
use crate::harness::{enc, get_json, wait_for};
use crate::replication::{epoch_of, publish_through, tagged};
use crate::wiped::{assert_history, history_via, replicas};
use serde_json::{json, Value};
use std::process::Command;

const SHARDS: u64 = 4;

/// `starling recover-shard <shard> --url <url> [--yes]`: exit success, stdout, stderr.
fn recover_shard(url: &str, shard: u64, yes: bool) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.args(["recover-shard", &shard.to_string(), "--url", url]);
    if yes {
        cmd.arg("--yes");
    }
    let out = cmd.output().expect("run starling recover-shard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_majority_lost_its_data_is_recovered_from_the_survivor_under_a_new_epoch() {
    let mut c = Cluster::start(3, &format!("[replication]\nshards = {SHARDS}\n")).await;
    let all: Vec<usize> = (0..c.len()).collect();
    let t = "rescued";
    let shard = starling::placement::stable_hash(t.as_bytes()) % SHARDS;
    let (first, _) = c.create_topic(0, t, json!("first")).await;
    let old_epoch = epoch_of(&first);
    let via: Vec<usize> = (0..10).map(|k| all[k % all.len()]).collect();
    let mut last = publish_through(&c, &via, t, &old_epoch, "a", 1).await;
    let mut ids = vec![format!("{t}.first")];
    ids.extend(tagged("a", via.len()));

    // A healthy shard is never recovered: the command is refused and changes nothing.
    let (ok, _, err) = recover_shard(&c.http(0), shard, true);
    assert!(!ok, "a healthy shard was recovered");
    assert!(err.contains("HTTP 400"), "{err}");
    let (ok, _, err) = recover_shard(&c.http(0), shard, false);
    assert!(!ok && err.contains("--yes"), "{err}");

    // Node 0 waits until it holds every message (it is a voter), then the other two lose
    // their data directories: no shard has a majority of its voters' data any more.
    let x = 0;
    let (c_ref, want) = (&c, ids.clone());
    wait_for("node 0 to hold the whole history", || async {
        (history_via(c_ref, x, t).await.len() == want.len()).then_some(())
    })
    .await;
    for w in [1, 2] {
        let status = tokio::task::block_in_place(|| c.terminate(w));
        assert!(status.success(), "SIGTERM exit: {status:?}");
        std::fs::remove_dir_all(c.data_dir(w)).expect("wipe the data directory");
    }
    c.restart(1);
    c.restart(2);
    let (c_ref, shard_ix) = (&c, shard as usize);

    // The operator recovers the shard from node 0's copy: refused until node 0 finds that
    // no majority of the shard's voters is live (a leader notices it lost its majority
    // after an election timeout), then done.
    let url = c.http(x);
    let refusals = std::cell::Cell::new(0);
    let out = wait_for("recover-shard to succeed", || {
        let (ok, out, err) = tokio::task::block_in_place(|| recover_shard(&url, shard, true));
        if !ok {
            // Printed as they come: a test that times out shows why it was refused.
            eprintln!("recover-shard refused: {}", err.trim());
            refusals.set(refusals.get() + 1);
        }
        async move { ok.then_some(out) }
    })
    .await;
    eprintln!("refused {} time(s) first", refusals.get());
    let reply: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(reply["shard"], shard, "{reply}");
    // The generation's counter (high 32 bits) went from 0 to 1.
    let generation = reply["generation"].as_u64().expect("generation");
    assert_eq!(generation >> 32, 1, "{reply}");
    let topics = reply["topics"].as_array().expect("topics");
    let mine = topics
        .iter()
        .find(|e| e["topic"] == t)
        .unwrap_or_else(|| panic!("{t} not in {reply}"));
    let epoch = mine["epoch"].as_str().expect("epoch").to_string();
    assert_ne!(epoch, old_epoch, "the recovered topic kept its epoch");
    assert_eq!(mine["head"], last, "{reply}");
    eprintln!("recovered: {reply}");

    // The topic goes on through every node, in the new epoch, after the head it had.
    let via: Vec<usize> = (0..6).map(|k| all[k % all.len()]).collect();
    last = publish_through(&c, &via, t, &epoch, "b", last).await;
    ids.extend(tagged("b", via.len()));
    for i in all.clone() {
        let h = history_via(&c, i, t).await;
        assert_history(&h, &epoch, &ids, &format!("{t} via {}", c.id(i)));
    }
    // A client resuming from the old epoch is told: never a silent jump.
    let path = format!(
        "/v1/topics/{}/messages?after=5&epoch={old_epoch}&timeout=0",
        enc(t)
    );
    let (status, body) = get_json(c.node(2), &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["epoch"], epoch.as_str(), "{body}");

    // The wiped nodes join the new group as voters of the shard.
    for w in [1, 2] {
        let what = format!("{} to be a voter of shard {shard} again", c.id(w));
        wait_for(&what, || async {
            let now = replicas(c_ref, w).await?;
            let (me, voters) = now.get(shard_ix)?;
            (voters.len() == 3 && voters.contains(me)).then_some(())
        })
        .await;
    }
    // They hold the recovered data themselves: without node 0 they go on, whole.
    c.kill9(x);
    last = publish_through(&c, &[1, 2], t, &epoch, "c", last).await;
    ids.extend(tagged("c", 2));
    assert_eq!(ids.len() as u64, last);
    for i in [1, 2] {
        let h = history_via(&c, i, t).await;
        assert_history(&h, &epoch, &ids, &format!("via {} without node 0", c.id(i)));
    }
}
