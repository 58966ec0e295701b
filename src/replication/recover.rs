//! Recovering a shard from a minority: the operator's way out when a majority of a shard's
//! voters lost their data for good (wiped, or the only voter of a `factor = 1` shard), so
//! the shard cannot elect a leader and never will.
//!
//! Asked on a node that holds a copy of the shard (a voter's or a learner's), while the
//! group has no live majority ([`check`]) and no peer announces a newer generation, the
//! node starts the shard's Raft group anew from its own copy ([`super::heal::restart_anew`]): every topic of the shard keeps its
//! messages, consumers and publish ids but gets a **new epoch** (acknowledged messages this
//! copy lacks may be lost, and clients are told: a resume from the old epoch is
//! `recovered:false`), the node's Raft state for the shard goes, and its replica starts as a
//! new incarnation of the shard's next *generation*, the only voter of a new group. Once it
//! leads, it takes a snapshot of the recovered data and purges its log below it
//! ([`finish`]), so every replica added later gets that data by snapshot; until then no
//! replica is added. Every other node that sees the higher generation announced in gossip
//! drops its copy of the shard and comes back as a new replica of the new group; the
//! leader adds each as a learner and makes the shard's voters by placement voters again
//! once they caught up ([`super::rejoin`]).
//!
//! A recovery while the others are merely cut off (not wiped) makes them throw away what
//! they did meanwhile when they see the new generation: the command is for data that is
//! gone, and says so.

use super::shards::Group;
use super::types::NodeId;
use crate::storage::RaftStore;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Why a shard is not recovered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("shard {0} is not one of this node's shards")]
    NoSuchShard(u32),
    #[error("this node holds no copy of shard {0} (it has applied nothing of it): recover from a node that does (GET /v1/cluster shows `applied`)")]
    Empty(u32),
    #[error("shard {shard} has a leader ({leader}) that a majority answers: nothing to recover")]
    Led { shard: u32, leader: String },
    #[error("shard {shard} still has a live majority of its voters: it elects a leader by itself")]
    Majority { shard: u32 },
    #[error("shard {shard} was already recovered elsewhere (generation {generation}): this node joins that group by itself")]
    Newer { shard: u32, generation: u64 },
    #[error("shard {shard}'s voters on {nodes} are unreachable, not known to have lost their data; if they did, ask again with force (they drop what they did meanwhile when they return)")]
    Unreachable { shard: u32, nodes: String },
}

/// Whether a shard whose group has the voter sets `configs` (two during a membership
/// change), of which the replicas in `live` are live (their node is up and still announces
/// that replica), may be recovered: only when some config has no live majority, so the
/// group can never commit again.
pub(crate) fn check(
    shard: u32,
    configs: &[BTreeSet<NodeId>],
    live: &[NodeId],
) -> Result<(), Refusal> {
    let has_majority = |voters: &BTreeSet<NodeId>| {
        let up = voters.iter().filter(|v| live.contains(v)).count();
        up * 2 > voters.len()
    };
    if !configs.is_empty() && configs.iter().all(has_majority) {
        return Err(Refusal::Majority { shard });
    }
    Ok(())
}

/// The generation a recovery starts, above `highest` (the highest this node has or has
/// heard of): the counter in the high 32 bits goes up by one, the low 32 bits are random,
/// so two recoveries started at once still differ, and every node adopts the higher.
pub(crate) fn next_generation(highest: u64) -> u64 {
    let counter = (highest >> 32) + 1;
    (counter << 32) | u64::from(super::identity::new_incarnation())
}

/// How long [`finish`] waits for each step before it tries again.
const STEP_WAIT: Duration = Duration::from_secs(5);

/// Ends a recovery of `group`'s shard, if one is under way: once this node leads, takes a
/// snapshot (it holds the recovered data, whatever was applied since) and purges the log
/// up to it, then records the recovery as done and lets the leader add replicas. Retries
/// until it succeeds or the instance stops.
pub(crate) async fn finish(group: Arc<Group>, store: RaftStore) {
    let shard = group.shard;
    if !group.recovering.load(Ordering::Acquire) {
        return;
    }
    let mut metrics = group.raft.metrics();
    let mut asked: Option<tokio::time::Instant> = None;
    let mut purging: Option<tokio::time::Instant> = None;
    loop {
        if group.retired.load(Ordering::Acquire) {
            return;
        }
        let m = metrics.borrow_watched().clone();
        if m.state == ServerState::Leader && m.last_applied.is_some() {
            let step = match (m.snapshot, m.purged) {
                (Some(snap), purged) if purged >= Some(snap) => break,
                (Some(snap), _) if purging.is_none_or(|t| t.elapsed() >= STEP_WAIT) => {
                    purging = Some(tokio::time::Instant::now());
                    group.raft.trigger().purge_log(snap.index).await
                }
                (Some(_), _) => Ok(()),
                // Asked again if no snapshot came of it (openraft skips one while another
                // is being built).
                (None, _) if asked.is_none_or(|t| t.elapsed() >= STEP_WAIT) => {
                    asked = Some(tokio::time::Instant::now());
                    group.raft.trigger().snapshot().await
                }
                (None, _) => Ok(()),
            };
            if let Err(e) = step {
                tracing::warn!(shard, error = %e, "the recovered shard stopped");
                return;
            }
        }
        if let Ok(Err(_)) = tokio::time::timeout(STEP_WAIT, metrics.changed()).await {
            return;
        }
    }
    let recorded = store.shard(shard).and_then(|s| s.end_recovery());
    match recorded {
        Ok(()) => {
            group.recovering.store(false, Ordering::Release);
            tracing::warn!(
                shard,
                generation = group.generation,
                "shard recovered: its data is in a snapshot, other replicas join from it"
            );
        }
        Err(e) => tracing::error!(shard, error = %e, "cannot record the end of the recovery"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_without_a_live_majority_is_recovered() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
        let three = [set(&[10, 20, 30])];
        assert!(check(1, &three, &[10]).is_ok(), "one of three");
        assert!(check(1, &three, &[]).is_ok(), "none");
        assert_eq!(
            check(1, &three, &[10, 30]),
            Err(Refusal::Majority { shard: 1 })
        );
        assert!(
            check(1, &[set(&[10, 20])], &[10]).is_ok(),
            "half is no majority"
        );
        assert!(check(1, &[set(&[10])], &[10]).is_err(), "a live only voter");
        assert!(check(1, &[set(&[10])], &[]).is_ok(), "the only voter wiped");
        // Live replicas that are no voters do not count.
        assert!(check(1, &three, &[10, 40, 50]).is_ok());
        // A change half done: refused only if both configs have a live majority.
        let joint = [set(&[10, 20, 30]), set(&[10, 20, 40])];
        assert!(check(1, &joint, &[10, 20]).is_err(), "both can elect");
        assert!(check(1, &joint, &[10, 30]).is_ok(), "the second cannot");
    }

    #[test]
    fn a_new_generation_is_above_every_one_known_and_two_at_once_differ() {
        let a = next_generation(0);
        let b = next_generation(0);
        assert_eq!(a >> 32, 1);
        assert_ne!(a, b, "two recoveries at once");
        let c = next_generation(a.max(b));
        assert!(c > a && c > b);
    }
}
