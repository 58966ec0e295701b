//! Healing a damaged copy. A record that fails its checksum (a topic's chunk, a Raft log
//! entry or meta record) is never served: storage refuses the read and reports the copy
//! ([`crate::storage::damage`]). This node then drops its whole copy of that shard — the
//! shard's log, its Raft meta records and every topic of the shard — and starts its replica
//! again, empty, as a new *incarnation of that shard alone*: a replica that lost records
//! must not answer as the one that held them (its votes and acknowledged entries may be
//! among them, see [`super::identity`]). The shard's leader adds the new replica as a
//! learner, catches it up (entries or a snapshot) and puts it in the old one's place among
//! the voters, as for a wiped node ([`super::rejoin`]). The shard's own incarnation is kept
//! in its meta records and announced in gossip ([`identity::shard_fact`]).
//!
//! A copy is dropped only where another voter of the shard holds the data. Where this node
//! is the shard's only voter (`factor = 1`, or one configured node) the damaged records stay
//! unserved and the node says so: at start it refuses to run with such a shard.
//!
//! A drop is crash-safe: it first records (in one batch) that it is under way and the new
//! incarnation; sled makes writes durable in order, so after a crash anywhere the record is
//! there and the drop is finished before the shard starts.

use super::identity;
use super::network::RaftNet;
use super::placement;
use super::shards::{self, Group};
use super::{ReplicationError, ReplicationSettings};
use crate::storage::blocking::off_worker;
use crate::storage::flusher::Flusher;
use crate::storage::{Damaged, RaftStore, TopicLog};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What starting a shard's replica takes; cheap to clone.
#[derive(Clone)]
pub(crate) struct Parts {
    pub settings: ReplicationSettings,
    pub log: Arc<dyn TopicLog>,
    pub store: RaftStore,
    pub flusher: Flusher,
    pub net: Arc<dyn RaftNet>,
}

/// The shards `found` names (a topic by its shard).
pub(crate) fn shards_of(found: &[Damaged], shards: u32) -> BTreeSet<u32> {
    found
        .iter()
        .map(|d| match d {
            Damaged::Topic(topic) => placement::shard_of(topic, shards),
            Damaged::Shard(shard) => *shard,
        })
        .collect()
}

/// Whether this node (`me`) may drop its copy of a shard with `voters`: another voter holds
/// the data (a learner's copy never counts towards anything).
pub(crate) fn can_drop(voters: &[String], me: &str) -> bool {
    voters.iter().any(|v| v != me)
}

/// Starts this node's replica of `shard` (see [`shards::start_group`]), as the shard's own
/// incarnation if it has one, else `node_incarnation`. First finishes a drop a crash cut
/// short, and drops the copy if `damaged`; a damaged Raft record found while starting drops
/// it and starts once more.
pub(crate) async fn start_shard(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
    damaged: bool,
) -> Result<Group, ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let unfinished = off_worker(&parts.log, move |_| shard_store.dropping()).await?;
    if unfinished {
        tracing::warn!(shard, "finishing the drop of this node's copy of the shard");
        drop_copy(parts, shard, None).await?;
    } else if damaged {
        drop_damaged(parts, shard, voters).await?;
    }
    match start(parts, shard, voters, node_incarnation).await {
        Err(ReplicationError::Raft { .. }) if damaged_now(parts, shard) => {
            drop_damaged(parts, shard, voters).await?;
            start(parts, shard, voters, node_incarnation).await
        }
        started => started,
    }
}

/// Drops this node's damaged copy of `shard` (if another voter holds the data) and starts
/// its replica again, empty, as a new incarnation.
pub(crate) async fn restart_dropped(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
) -> Result<Group, ReplicationError> {
    drop_damaged(parts, shard, voters).await?;
    start(parts, shard, voters, node_incarnation).await
}

/// Whether a damaged record of `shard` was reported (taking the reports about it).
fn damaged_now(parts: &Parts, shard: u32) -> bool {
    let shards = parts.settings.shards;
    let about = |d: &Damaged| shards_of(std::slice::from_ref(d), shards).contains(&shard);
    !parts.store.damage().take_where(about).is_empty()
}

async fn start(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
) -> Result<Group, ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let own = off_worker(&parts.log, move |_| shard_store.incarnation()).await?;
    if let Some(n) = own {
        parts
            .net
            .announce(&identity::shard_fact(shard), &n.to_string())
            .await;
    }
    shards::start_group(
        &parts.settings,
        shard,
        voters,
        own.unwrap_or(node_incarnation),
        Arc::clone(&parts.log),
        &parts.store,
        parts.flusher.clone(),
        Arc::clone(&parts.net),
    )
    .await
}

async fn drop_damaged(
    parts: &Parts,
    shard: u32,
    voters: &[String],
) -> Result<(), ReplicationError> {
    if !can_drop(voters, &parts.settings.me) {
        return Err(ReplicationError::OnlyCopyDamaged { shard });
    }
    let incarnation = identity::new_incarnation();
    drop_copy(parts, shard, Some(incarnation)).await?;
    tracing::warn!(
        shard,
        incarnation,
        id = placement::replica_id(&parts.settings.me, incarnation),
        "dropped this node's damaged copy of the shard: it catches up from the shard's leader as a new replica"
    );
    Ok(())
}

/// Removes this node's copy of `shard` (see the module doc); `incarnation`: the one the
/// replica takes afterwards, or `None` to finish a drop already begun.
async fn drop_copy(
    parts: &Parts,
    shard: u32,
    incarnation: Option<u32>,
) -> Result<(), ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let shards = parts.settings.shards;
    off_worker(&parts.log, move |log| {
        if let Some(n) = incarnation {
            shard_store.begin_drop(n)?;
        }
        for topic in log.topics()? {
            if placement::shard_of(&topic, shards) == shard {
                log.forget(&topic)?;
            }
        }
        shard_store.drop_state()
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_names_shards() {
        let topic = "chat";
        let shard = placement::shard_of(topic, 8);
        let found = [Damaged::Topic(topic.into()), Damaged::Shard(5)];
        let want: BTreeSet<u32> = [shard, 5].into_iter().collect();
        assert_eq!(shards_of(&found, 8), want);
    }

    #[test]
    fn only_a_copy_another_voter_holds_is_dropped() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(can_drop(&names(&["n1", "n2", "n3"]), "n1"));
        assert!(can_drop(&names(&["n2", "n3"]), "n1"), "a learner's copy");
        assert!(!can_drop(&names(&["n1"]), "n1"), "the only voter");
    }
}
