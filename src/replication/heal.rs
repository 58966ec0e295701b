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
//! A copy is dropped only while enough of the shard's other voters are ready to catch it
//! up ([`may_drop`]): up, in the same generation, and announcing no damaged copy of their
//! own (a node announces its damaged copy, fact `damaged.<shard>`, for [`ANNOUNCED_FOR`]
//! before it drops it, so two nodes that find damage at once both keep theirs). Until then
//! the damaged records stay unserved; a node that finds damage while starting waits. Where
//! the shard has fewer than three voters (`factor` 1 or 2) no copy is ever dropped: at
//! start the node refuses to run with it.
//!
//! A drop is crash-safe: it first records (in one batch) that it is under way and the new
//! incarnation; sled makes writes durable in order, so after a crash anywhere the record is
//! there and the drop is finished before the shard starts.

use super::identity;
use super::network::RaftNet;
use super::placement;
use super::placement::Names;
use super::shards::{self, Group};
use super::state_machine::stored_voters;
use super::types::NodeId;
use super::{ReplicationError, ReplicationSettings};
use crate::storage::blocking::off_worker;
use crate::storage::flusher::Flusher;
use crate::storage::{Damaged, RaftStore, TopicLog};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often a damaged copy's node looks again whether it may drop it.
const RECHECK: Duration = Duration::from_millis(250);

/// What starting a shard's replica takes; cheap to clone.
#[derive(Clone)]
pub(crate) struct Parts {
    pub settings: ReplicationSettings,
    /// Node names by Raft id.
    pub names: Arc<Names>,
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

/// How long a node announces a damaged copy before it drops it: two nodes that find damage
/// in one shard at once see each other's announcement and both keep their copies.
pub(crate) const ANNOUNCED_FOR: Duration = Duration::from_secs(2);

/// Whether this node may drop its damaged copy of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Drop,
    /// Not now: too few of the shard's other voters are ready to catch the copy up.
    Wait {
        ready: usize,
        need: usize,
    },
    /// Never: the shard has too few voters to replace this one (`factor` 1 or 2).
    Never,
}

/// Whether this node's replica `me` may drop its copy of a shard whose group has `voters`
/// (Raft ids), given which of them are `ready` (see [`ready`]). A learner's copy counts
/// towards nothing: it may always go. A voter's may go only while the others that are
/// ready are a majority of all voters without it: they hold every committed entry, can
/// elect a leader and add the new replica, so the shard loses neither data nor
/// availability (with 3 voters: both others).
pub(crate) fn may_drop(voters: &[NodeId], me: NodeId, ready: impl Fn(NodeId) -> bool) -> Verdict {
    if !voters.contains(&me) {
        return Verdict::Drop;
    }
    if voters.len() < 3 {
        return Verdict::Never;
    }
    let need = voters.len() / 2 + 1;
    let ready = voters.iter().filter(|v| **v != me && ready(**v)).count();
    if ready >= need {
        Verdict::Drop
    } else {
        Verdict::Wait { ready, need }
    }
}

/// Whether voter `id` of `shard`'s group is ready to catch up a copy this node drops (see
/// [`may_drop`]): its node is up (its gossip facts are there) and still announces that very
/// replica (not a new one that holds nothing yet), in `generation`, with no damaged copy.
pub(crate) fn ready(parts: &Parts, id: NodeId, shard: u32, generation: u64) -> bool {
    let net = parts.net.as_ref();
    parts.names.of(id).is_some_and(|node| {
        identity::announced_replica(net, node, shard) == Some(id)
            && identity::generation_of(net, node, shard) == generation
            && !identity::damaged_of(net, node, shard)
    })
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
    let unfinished = off_worker(&parts.log, move |_| {
        Ok(shard_store.dropping()?.then_some(shard_store.recovering()?))
    })
    .await?;
    if let Some(recovering) = unfinished {
        tracing::warn!(shard, "finishing the drop of this node's copy of the shard");
        drop_copy(parts, shard, None, recovering).await?;
    } else if damaged {
        wait_to_drop(parts, shard, voters, node_incarnation).await?;
        drop_damaged(parts, shard).await?;
    }
    match start(parts, shard, voters, node_incarnation).await {
        Err(_) if damaged_now(parts, shard) => {
            wait_to_drop(parts, shard, voters, node_incarnation).await?;
            drop_damaged(parts, shard).await?;
            start(parts, shard, voters, node_incarnation).await
        }
        started => started,
    }
}

/// Says that a damaged copy waits to be dropped (`ready` of the `need` voters are ready).
pub(crate) fn say_waiting(shard: u32, ready: usize, need: usize) {
    tracing::warn!(shard, ready, need, "this node's copy of the shard is damaged: waiting for enough of its other voters to be up with undamaged copies before dropping it");
}

/// Announces that this node's copy of `shard` is damaged (or no longer).
pub(crate) async fn announce_damaged(parts: &Parts, shard: u32, damaged: bool) {
    let fact = identity::damaged_fact(shard);
    parts
        .net
        .announce(&fact, if damaged { "1" } else { "0" })
        .await;
}

/// While starting: announces the damaged copy and waits until it may be dropped (at least
/// [`ANNOUNCED_FOR`]), saying why every 5 s; an error if it never may.
async fn wait_to_drop(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
) -> Result<(), ReplicationError> {
    announce_damaged(parts, shard, true).await;
    let shard_store = parts.store.shard(shard)?;
    let (generation, own, stored) = off_worker(&parts.log, move |_| {
        Ok((
            shard_store.generation()?,
            shard_store.incarnation()?,
            stored_voters(&shard_store),
        ))
    })
    .await?;
    let me = placement::replica_id(&parts.settings.me, own.unwrap_or(node_incarnation));
    let since = tokio::time::Instant::now();
    let mut say = identity::Every::default();
    loop {
        // The group's voters as this copy last applied them; where that record is damaged
        // too, the placement voters' replicas as their nodes announce them.
        let voters: Vec<NodeId> = stored.clone().unwrap_or_else(|| {
            let net = parts.net.as_ref();
            // A peer whose replica is not known counts, as one never ready (an id no
            // replica has: the node part of a Raft id is its name's hash).
            let id = |(k, n): (usize, &String)| match *n == parts.settings.me {
                true => me,
                false => identity::announced_replica(net, n, shard).unwrap_or(k as u64),
            };
            voters.iter().enumerate().map(id).collect()
        });
        let ready = |id: NodeId| ready(parts, id, shard, generation);
        match may_drop(&voters, me, ready) {
            Verdict::Never => return Err(ReplicationError::OnlyCopyDamaged { shard }),
            Verdict::Drop if since.elapsed() >= ANNOUNCED_FOR => return Ok(()),
            Verdict::Drop => {}
            Verdict::Wait { ready, need } if say.due() => say_waiting(shard, ready, need),
            Verdict::Wait { .. } => {}
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Drops this node's damaged copy of `shard` and starts its replica again, empty, as a new
/// incarnation (the caller checked [`may_drop`]).
pub(crate) async fn restart_dropped(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
) -> Result<Group, ReplicationError> {
    drop_damaged(parts, shard).await?;
    start(parts, shard, voters, node_incarnation).await
}

/// Starts this node's replica of `shard` again as a new incarnation of `generation`, with
/// `recovering` (see [`super::recover`]) from this node's own copy: every topic of the
/// shard keeps its messages under a new epoch, the Raft state goes, and the replica is the
/// new group's only voter; without it (a peer started the group anew as `generation`) the
/// copy goes and the replica catches up from that group.
pub(crate) async fn restart_anew(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
    generation: u64,
    recovering: bool,
) -> Result<Group, ReplicationError> {
    let incarnation = identity::new_incarnation();
    drop_copy(parts, shard, Some((incarnation, generation)), recovering).await?;
    if !recovering {
        tracing::warn!(
            shard,
            generation,
            incarnation,
            "the shard was recovered from a minority elsewhere: dropped this node's copy, it catches up from the recovered group as a new replica"
        );
    }
    start(parts, shard, voters, node_incarnation).await
}

/// Whether a damaged record of `shard` was reported (taking the reports about it).
fn damaged_now(parts: &Parts, shard: u32) -> bool {
    let shards = parts.settings.shards;
    let about = |d: &Damaged| shards_of(std::slice::from_ref(d), shards).contains(&shard);
    !parts.store.damage().take_where(about).is_empty()
}

/// Announces the shard's own incarnation and generation as the store has them (if any);
/// returns them.
pub(crate) async fn announce_shard(
    parts: &Parts,
    shard: u32,
) -> Result<(Option<u32>, u64), ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let (own, generation) = off_worker(&parts.log, move |_| {
        Ok((shard_store.incarnation()?, shard_store.generation()?))
    })
    .await?;
    if let Some(n) = own {
        let fact = identity::shard_fact(shard);
        parts.net.announce(&fact, &n.to_string()).await;
    }
    if generation > 0 {
        let fact = identity::generation_fact(shard);
        parts.net.announce(&fact, &generation.to_string()).await;
    }
    Ok((own, generation))
}

/// Starts the replica as its store says (the shard's own incarnation, generation, and
/// whether a recovery is under way), after announcing them.
async fn start(
    parts: &Parts,
    shard: u32,
    voters: &[String],
    node_incarnation: u32,
) -> Result<Group, ReplicationError> {
    let (own, generation) = announce_shard(parts, shard).await?;
    let shard_store = parts.store.shard(shard)?;
    let recovering = off_worker(&parts.log, move |_| shard_store.recovering()).await?;
    let start = shards::Start {
        incarnation: own.unwrap_or(node_incarnation),
        generation,
        recovering,
    };
    shards::start_group(
        &parts.settings,
        shard,
        voters,
        start,
        Arc::clone(&parts.log),
        &parts.store,
        parts.flusher.clone(),
        Arc::clone(&parts.net),
    )
    .await
}

async fn drop_damaged(parts: &Parts, shard: u32) -> Result<(), ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let generation = off_worker(&parts.log, move |_| shard_store.generation()).await?;
    let incarnation = identity::new_incarnation();
    drop_copy(parts, shard, Some((incarnation, generation)), false).await?;
    tracing::warn!(
        shard,
        incarnation,
        id = placement::replica_id(&parts.settings.me, incarnation),
        "dropped this node's damaged copy of the shard: it catches up from the shard's leader as a new replica"
    );
    announce_damaged(parts, shard, false).await;
    Ok(())
}

/// Removes this node's copy of `shard` (see the module doc). `begin`: the incarnation and
/// generation the replica takes afterwards, or `None` to finish a drop already begun.
/// `recovering`: the shard's topics are kept, each under a new epoch, for a recovery
/// (else they go).
async fn drop_copy(
    parts: &Parts,
    shard: u32,
    begin: Option<(u32, u64)>,
    recovering: bool,
) -> Result<(), ReplicationError> {
    let shard_store = parts.store.shard(shard)?;
    let shards = parts.settings.shards;
    off_worker(&parts.log, move |log| {
        if let Some((incarnation, generation)) = begin {
            shard_store.begin_drop(incarnation, generation, recovering)?;
        }
        for topic in placement::topics_of(log, shard, shards)? {
            if recovering {
                let epoch = crate::protocol::resume::new_epoch();
                log.set_epoch(&topic, &epoch, 0)?;
                tracing::warn!(topic, epoch, "recovered under a new epoch");
            } else {
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
    fn a_voters_copy_goes_only_while_the_others_ready_are_a_majority() {
        let three = [1, 2, 3];
        let all = |_: NodeId| true;
        let none = |_: NodeId| false;
        assert_eq!(may_drop(&three, 1, all), Verdict::Drop);
        assert_eq!(
            may_drop(&three, 1, |n| n == 2),
            Verdict::Wait { ready: 1, need: 2 },
            "one other voter down, damaged, or a new replica not caught up"
        );
        assert_eq!(may_drop(&three, 4, none), Verdict::Drop, "a learner");
        assert_eq!(
            may_drop(&[1], 4, none),
            Verdict::Drop,
            "a learner of a single-voter shard"
        );
        assert_eq!(may_drop(&[1], 1, all), Verdict::Never);
        assert_eq!(may_drop(&[1, 2], 1, all), Verdict::Never);
        let five = [1, 2, 3, 4, 5];
        assert_eq!(may_drop(&five, 1, |n| n != 5), Verdict::Drop);
        assert_eq!(
            may_drop(&five, 1, |n| n == 2 || n == 3),
            Verdict::Wait { ready: 2, need: 3 }
        );
    }
}
