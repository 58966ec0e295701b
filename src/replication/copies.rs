//! This node's copies of its shards over time: the tasks of each shard instance, and
//! replacing an instance when its copy is dropped — damaged ([`super::heal`]), left behind
//! by a recovery elsewhere, or recovered here from a minority ([`super::recover`]).

use super::placement::topics_of;
use super::shards::{self, Group};
use super::ReplicationError;
use super::{heal, identity, read_lock, recover, write_lock, Inner, Leaders, Replication};
use crate::storage::Damage;
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the node compares its shards' generations with the ones its peers announce.
const GENERATIONS_EVERY: Duration = Duration::from_millis(250);

/// A damaged copy waiting to be dropped.
struct Pending {
    /// The replica whose copy is damaged (one replaced meanwhile is not).
    replica: u64,
    /// Since when it is announced damaged.
    since: Instant,
    say: identity::Every,
}

impl Pending {
    fn new(replica: u64) -> Pending {
        Pending {
            replica,
            since: Instant::now(),
            say: identity::Every::default(),
        }
    }
}

/// Why a copy is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// It is damaged: dropped, caught up from the leader.
    Damaged,
    /// A peer started the shard's group anew as this generation: dropped, caught up from
    /// the new group.
    Adopt(u64),
    /// Recovered here from a minority: the group starts anew from it, as this generation.
    Recover(u64),
}

/// A shard recovered from a minority on this node.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Recovered {
    pub shard: u32,
    pub generation: u64,
    /// The Raft id of this node's replica of the new group (its only voter for now).
    pub replica: u64,
    /// Every topic of the shard here, with its new epoch.
    pub topics: Vec<RecoveredTopic>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct RecoveredTopic {
    pub topic: String,
    pub epoch: String,
    pub first: u64,
    pub head: u64,
}

/// Why a recovery did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoverError {
    /// It may not: the shard is fine, or this is the wrong node.
    #[error("{0}")]
    Refused(#[from] recover::Refusal),
    /// It was tried and failed; the shard's instance here is stopped.
    #[error("the recovery failed: {0}")]
    Failed(String),
}

impl Replication {
    /// The background tasks of one local instance: leader tracking, upkeep, and the end of
    /// a recovery under way.
    pub(super) fn group_tasks(&self, group: &Arc<Group>) -> Vec<JoinHandle<()>> {
        let inner = &self.inner;
        vec![
            tokio::spawn(shards::track_leader(
                Arc::clone(group),
                Arc::clone(&inner.names),
                inner.leaders_tx.clone(),
                Arc::clone(&inner.stopping),
            )),
            tokio::spawn(shards::upkeep(
                Arc::clone(group),
                self.voters(group.shard).to_vec(),
                inner.settings.clone(),
                Arc::clone(&inner.names),
                Arc::clone(&inner.parts.net),
            )),
            tokio::spawn(recover::finish(
                Arc::clone(group),
                inner.parts.store.clone(),
            )),
        ]
    }

    /// Keeps `new` with the node's tasks; false (and aborts them) once the node stops.
    pub(super) fn keep_tasks(&self, new: Vec<JoinHandle<()>>) -> bool {
        match self.inner.tasks.lock() {
            Ok(mut tasks) if !self.inner.stopping.load(Ordering::Acquire) => {
                tasks.retain(|t| !t.is_finished());
                tasks.extend(new);
                true
            }
            _ => {
                new.iter().for_each(JoinHandle::abort);
                false
            }
        }
    }

    /// For as long as the node runs: drops every local copy reported damaged once it may
    /// ([`heal::may_drop`], after announcing it for [`heal::ANNOUNCED_FOR`]), and every copy
    /// of a shard a peer started anew under a higher generation, and starts its instance
    /// again (see [`heal`]).
    pub(super) async fn keep_copies(inner: Weak<Inner>, damage: Damage) {
        let mut ticks = tokio::time::interval(GENERATIONS_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut damaged: HashMap<u32, Pending> = HashMap::new();
        loop {
            tokio::select! {
                _ = damage.reported() => {}
                _ = ticks.tick() => {}
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let this = Replication { inner };
            for shard in heal::shards_of(&damage.take(), this.shards()) {
                let Ok(group) = this.group(shard) else {
                    continue;
                };
                if let Entry::Vacant(v) = damaged.entry(shard) {
                    heal::announce_damaged(&this.inner.parts, shard, true).await;
                    v.insert(Pending::new(*group.raft.node_id()));
                }
            }
            let mut todo: Vec<(Arc<Group>, Why)> = Vec::new();
            damaged.retain(|shard, pending| {
                let Ok(group) = this.group(*shard) else {
                    return false;
                };
                if *group.raft.node_id() != pending.replica {
                    // Replaced meanwhile (recovered here, or adopted): not this copy.
                    return false;
                }
                match this.verdict(&group) {
                    heal::Verdict::Drop if pending.since.elapsed() >= heal::ANNOUNCED_FOR => {
                        todo.push((group, Why::Damaged));
                        true
                    }
                    heal::Verdict::Drop => true,
                    heal::Verdict::Wait { ready, need } => {
                        if pending.say.due() {
                            heal::say_waiting(*shard, ready, need);
                        }
                        true
                    }
                    heal::Verdict::Never => {
                        let e = ReplicationError::OnlyCopyDamaged { shard: *shard };
                        tracing::error!(shard, error = %e, "the damaged records are not served");
                        false
                    }
                }
            });
            for (shard, generation) in this.newer_generations() {
                if let Ok(group) = this.group(shard) {
                    todo.push((group, Why::Adopt(generation)));
                }
            }
            for (group, why) in todo {
                if this.inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                let shard = group.shard;
                let _one = this.inner.replacing.lock().await;
                match this.replace_locked(&group, why).await {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        // Reports about the copy just dropped are no news about the new one.
                        let shards = this.shards();
                        damage.take_where(|d| {
                            heal::shards_of(std::slice::from_ref(d), shards).contains(&shard)
                        });
                        damaged.remove(&shard);
                    }
                    Err(e) => {
                        tracing::error!(shard, error = %e, "cannot replace this node's copy of the shard")
                    }
                }
            }
        }
    }

    /// Whether this node may drop its damaged copy in `group` now: from the group's own
    /// voters (see [`heal::may_drop`]).
    fn verdict(&self, group: &Group) -> heal::Verdict {
        let m = group.raft.metrics().borrow_watched().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let parts = &self.inner.parts;
        let ready = |id: u64| heal::ready(parts, id, group.shard, group.generation);
        heal::may_drop(&voters, m.id, ready)
    }

    /// Shards whose group a peer announces under a higher generation than this node's.
    fn newer_generations(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.all_groups().into_iter().filter_map(|g| {
            let newest = self.newest_generation(g.shard);
            (newest > g.generation).then_some((g.shard, newest))
        })
    }

    /// The highest generation of `shard` a peer announces (0 if none).
    fn newest_generation(&self, shard: u32) -> u64 {
        let net = self.inner.parts.net.as_ref();
        let me = self.me();
        let peers = self
            .inner
            .settings
            .nodes
            .iter()
            .filter(|n| n.as_str() != me);
        peers
            .map(|n| identity::generation_of(net, n, shard))
            .max()
            .unwrap_or(0)
    }

    /// Stops `old` (this node's instance of its shard), drops its copy as `why` says and
    /// starts it again as a new incarnation; `None` if `old` is no longer the shard's
    /// instance (it was replaced meanwhile). An instance stopped by a replacement whose
    /// restart failed is started again. Hold `replacing` (one replacement at a time).
    async fn replace_locked(
        &self,
        old: &Arc<Group>,
        why: Why,
    ) -> Result<Option<Arc<Group>>, ReplicationError> {
        let shard = old.shard;
        let Some(slot) = self.inner.groups.get(&shard) else {
            return Err(ReplicationError::Settings(format!("no shard {shard}")));
        };
        if !Arc::ptr_eq(&read_lock(slot), old) {
            return Ok(None);
        }
        let voters = self.voters(shard);
        if !old.retired.swap(true, Ordering::AcqRel) {
            // The shard's leader is unknown until the new instance's tracker says, so the
            // topic layer sees a change and retires the actors of the copy that goes.
            self.inner.leaders_tx.send_modify(|all| {
                let mut next = Leaders::clone(all);
                if let Some(s) = next.by_shard.get_mut(shard as usize) {
                    *s = None;
                }
                *all = Arc::new(next);
            });
            if let Err(e) = old.raft.shutdown().await {
                tracing::debug!(shard, error = %e, "raft shutdown");
            }
            // openraft's state machine task may still be applying what it was given (off
            // the async threads: it may be installing a whole snapshot).
            let fence = old.fence.clone();
            if tokio::task::spawn_blocking(move || fence.close())
                .await
                .is_err()
            {
                old.fence.close();
            }
        }
        let (parts, me) = (&self.inner.parts, self.inner.incarnation);
        let started = match why {
            Why::Damaged => heal::restart_dropped(parts, shard, voters, me).await,
            Why::Adopt(g) => heal::restart_anew(parts, shard, voters, me, g, false).await,
            Why::Recover(g) => heal::restart_anew(parts, shard, voters, me, g, true).await,
        };
        let failed = started.is_err();
        self.inner.leaders_tx.send_if_modified(|all| {
            if all.failed.contains(&shard) == failed {
                return false;
            }
            let mut next = Leaders::clone(all);
            match failed {
                true => next.failed.insert(shard),
                false => next.failed.remove(&shard),
            };
            *all = Arc::new(next);
            true
        });
        let group = Arc::new(started?);
        if !matches!(why, Why::Recover(_)) {
            // The recovered copy keeps its records, damaged ones too.
            heal::announce_damaged(parts, shard, false).await;
        }
        *write_lock(slot) = Arc::clone(&group);
        if !self.keep_tasks(self.group_tasks(&group)) {
            // The node stopped meanwhile, after shutting down the instances it saw.
            if let Err(e) = group.raft.shutdown().await {
                tracing::debug!(shard, error = %e, "raft shutdown");
            }
        }
        Ok(Some(group))
    }

    /// Recovers `shard` from this node's copy (see [`recover`]): refused unless this node
    /// holds a copy, no peer announces a newer generation and the group has no live majority
    /// (a voter is live if it is this node's replica, or its node is among `up` and
    /// announces that replica in this generation); also refused, unless `force`, while a
    /// voter that is not live is merely unreachable rather than known to have lost its data.
    /// Runs in a task of its own: a caller that goes away does not cut it short.
    pub async fn recover(
        &self,
        shard: u32,
        up: Vec<String>,
        force: bool,
    ) -> Result<Recovered, RecoverError> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _one = this.inner.replacing.lock().await;
            let (group, generation) = this.may_recover(shard, &up, force)?;
            tracing::warn!(
                shard,
                generation,
                "recovering the shard from this node's copy, as an operator asked: its topics get new epochs"
            );
            let group = this
                .replace_locked(&group, Why::Recover(generation))
                .await
                .map_err(|e| RecoverError::Failed(e.to_string()))?
                .ok_or_else(|| RecoverError::Failed("replaced meanwhile: ask again".into()))?;
            this.recovered(&group)
        });
        task.await
            .map_err(|e| RecoverError::Failed(e.to_string()))?
    }

    /// The shard's instance and the generation to recover it as, if it may be.
    fn may_recover(
        &self,
        shard: u32,
        up: &[String],
        force: bool,
    ) -> Result<(Arc<Group>, u64), recover::Refusal> {
        use recover::Refusal;
        let group = self.group(shard).map_err(|_| Refusal::NoSuchShard(shard))?;
        let m = group.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if m.last_applied.is_none() || !membership.nodes().any(|(id, _)| *id == m.id) {
            return Err(Refusal::Empty(shard));
        }
        // A leader that heard a majority within an election timeout is refused whatever
        // gossip says of its voters (a peer's facts may not be gossiped yet after a restart,
        // and `force` would then recover a healthy shard). One that never heard a majority
        // in its term, or not lately, may be recovered.
        let patience = std::time::Duration::from_millis(self.inner.settings.election_max_ms);
        if m.state == openraft::ServerState::Leader
            && m.last_quorum_acked
                .as_ref()
                .is_some_and(|at| at.elapsed() <= patience)
        {
            let leader = self.me().to_string();
            return Err(Refusal::Led { shard, leader });
        }
        let net = self.inner.parts.net.as_ref();
        let newest = self.newest_generation(shard);
        if newest > group.generation {
            return Err(Refusal::Newer {
                shard,
                generation: newest,
            });
        }
        let is_up = |node: &str| up.iter().any(|p| p == node);
        let configs = membership.get_joint_config().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let live: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|id| {
                *id == m.id
                    || self.inner.names.of(*id).is_some_and(|node| {
                        is_up(node)
                            && identity::generation_of(net, node, shard) == group.generation
                            && identity::announced_replica(net, node, shard) == Some(*id)
                    })
            })
            .collect();
        recover::check(shard, &configs, &live)?;
        // A voter that is not live counts as having lost its data only on evidence: its
        // node is up and announces another replica of the shard (a new incarnation).
        let lost = |id: u64, node: &str| {
            is_up(node) && identity::announced_replica(net, node, shard).is_some_and(|r| r != id)
        };
        let unreachable: Vec<&str> = voters
            .iter()
            .filter(|id| !live.contains(id))
            .filter_map(|id| Some((*id, self.inner.names.of(*id)?)))
            .filter(|(id, node)| !lost(*id, node))
            .map(|(_, node)| node)
            .collect();
        if !force && !unreachable.is_empty() {
            let nodes = unreachable.join(", ");
            return Err(Refusal::Unreachable { shard, nodes });
        }
        let generation = recover::next_generation(newest.max(group.generation));
        Ok((group, generation))
    }

    /// What a recovery of `group`'s shard gave: every topic of it here, with its new epoch.
    fn recovered(&self, group: &Group) -> Result<Recovered, RecoverError> {
        let shard = group.shard;
        let log = &self.inner.parts.log;
        let failed = |e: crate::storage::StorageError| RecoverError::Failed(e.to_string());
        let mut topics = Vec::new();
        for topic in topics_of(&**log, shard, self.shards()).map_err(failed)? {
            if let Some(meta) = log.meta(&topic).map_err(failed)? {
                topics.push(RecoveredTopic {
                    topic,
                    epoch: meta.epoch,
                    first: meta.first,
                    head: meta.head,
                });
            }
        }
        Ok(Recovered {
            shard,
            generation: group.generation,
            replica: *group.raft.node_id(),
            topics,
        })
    }
}
