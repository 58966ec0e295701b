//! Recovering a shard from a minority: the operator's way out when a majority of a shard's
//! voters lost their data for good (wiped, or the only voter of a `factor = 1` shard), so
//! the shard cannot elect a leader and never will.
//!
//! Asked on a node that is one of the shard's voters by placement, while no majority of the
//! group's voters is live ([`check`]), the node starts the shard's Raft group anew from its
//! own copy ([`super::heal::restart_recovering`]): every topic of the shard keeps its
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Why a shard is not recovered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("shard {0} is not one of this node's shards")]
    NoSuchShard(u32),
    #[error("this node is not one of shard {shard}'s voters ({voters}): ask one of them")]
    NotAVoter { shard: u32, voters: String },
    #[error("shard {shard} has a leader ({leader}): nothing to recover")]
    Led { shard: u32, leader: String },
    #[error("shard {shard} still has {live} of its {voters} voters live, a majority: it elects a leader by itself")]
    Majority {
        shard: u32,
        live: usize,
        voters: usize,
    },
}

/// Whether a shard whose group has `voters` (Raft ids), of which `live` are live (their
/// node is up and still announces that replica), may be recovered from this node: only
/// when no majority of them is live, so the group can never elect a leader again.
pub(crate) fn check(shard: u32, voters: &[NodeId], live: &[NodeId]) -> Result<(), Refusal> {
    let live = voters.iter().filter(|v| live.contains(v)).count();
    if live * 2 > voters.len() {
        return Err(Refusal::Majority {
            shard,
            live,
            voters: voters.len(),
        });
    }
    Ok(())
}

/// How long [`finish`] waits for each step before it tries again.
const STEP_WAIT: Duration = Duration::from_secs(5);

/// Ends a recovery of `group`'s shard, if one is under way: once this node leads, takes a
/// snapshot and purges the log below it, then records the recovery as done and lets the
/// leader add replicas. Retries until it succeeds or the instance stops.
pub(crate) async fn finish(group: Arc<Group>, store: RaftStore) {
    let shard = group.shard;
    if !group.recovering.load(Ordering::Acquire) {
        return;
    }
    let mut metrics = group.raft.metrics();
    loop {
        if group.retired.load(Ordering::Acquire) {
            return;
        }
        let m = metrics.borrow_watched().clone();
        match (m.state, m.last_applied) {
            (ServerState::Leader, Some(applied)) if m.purged >= Some(applied) => break,
            (ServerState::Leader, Some(applied)) => {
                let step = if m.snapshot >= Some(applied) {
                    group.raft.trigger().purge_log(applied.index).await
                } else {
                    group.raft.trigger().snapshot().await
                };
                if let Err(e) = step {
                    tracing::warn!(shard, error = %e, "the recovered shard stopped");
                    return;
                }
            }
            _ => {}
        }
        if let Ok(Err(_)) = tokio::time::timeout(STEP_WAIT, metrics.changed()).await {
            return;
        }
    }
    let recorded = store
        .shard(shard)
        .and_then(|s| s.end_recovery().map(|()| s));
    match recorded {
        Ok(_) => {
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
        let voters = [10, 20, 30];
        assert!(check(1, &voters, &[10]).is_ok(), "one of three");
        assert!(check(1, &voters, &[]).is_ok(), "none");
        assert_eq!(
            check(1, &voters, &[10, 30]),
            Err(Refusal::Majority {
                shard: 1,
                live: 2,
                voters: 3
            })
        );
        assert!(check(1, &[10, 20], &[10]).is_ok(), "half is no majority");
        assert!(check(1, &[10], &[10]).is_err(), "a live only voter");
        assert!(check(1, &[10], &[]).is_ok(), "the only voter wiped");
        // Live replicas that are no voters do not count.
        assert!(check(1, &voters, &[10, 40, 50]).is_ok());
    }
}
