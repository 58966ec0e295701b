//! This node's copies of its shards over time: the tasks of each shard instance, and
//! replacing an instance when its copy is dropped — damaged ([`super::heal`]), left behind
//! by a recovery elsewhere, or recovered here from a minority ([`super::recover`]).

use super::shards::{self, Group};
use super::{heal, identity, read_lock, recover, write_lock, Inner, Leaders, Replication};
use super::{ReplicationError, ServerState};
use crate::storage::Damage;
use openraft::async_runtime::WatchReceiver;
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
    /// Since when it is announced damaged.
    since: Instant,
    said: Option<Instant>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            since: Instant::now(),
            said: None,
        }
    }
}

impl Pending {
    /// Whether to say again that it waits (at once, then every 5 s).
    fn say(&mut self) -> bool {
        let due = self
            .said
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if due {
            self.said = Some(Instant::now());
        }
        due
    }
}

/// Why a copy is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// It is damaged: dropped, caught up from the leader.
    Damaged,
    /// A peer started the shard's group anew as this generation: dropped, caught up from
    /// the new group.
    Adopt(u32),
    /// Recovered here from a minority: the group starts anew from it.
    Recover,
}

/// A shard recovered from a minority on this node.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Recovered {
    pub shard: u32,
    pub generation: u32,
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
                if let Entry::Vacant(v) = damaged.entry(shard) {
                    heal::announce_damaged(&this.inner.parts, shard, true).await;
                    v.insert(Pending::default());
                }
            }
            let mut todo: Vec<(u32, Why)> = Vec::new();
            damaged.retain(|shard, pending| match this.verdict(*shard) {
                heal::Verdict::Drop if pending.since.elapsed() >= heal::ANNOUNCED_FOR => {
                    todo.push((*shard, Why::Damaged));
                    true
                }
                heal::Verdict::Drop => true,
                heal::Verdict::Wait { ready, need } => {
                    if pending.say() {
                        tracing::warn!(shard, ready, need, "this node's copy of the shard is damaged: waiting for enough of its other voters to be up with undamaged copies before dropping it");
                    }
                    true
                }
                heal::Verdict::Never => {
                    let e = ReplicationError::OnlyCopyDamaged { shard: *shard };
                    tracing::error!(shard, error = %e, "the damaged records are not served");
                    false
                }
            });
            todo.extend(this.newer_generations().map(|(s, g)| (s, Why::Adopt(g))));
            for (shard, why) in todo {
                if this.inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                match this.replace_copy(shard, why).await {
                    Ok(_) => {
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

    /// Whether this node may drop its damaged copy of `shard` now.
    fn verdict(&self, shard: u32) -> heal::Verdict {
        let Ok(group) = self.group(shard) else {
            return heal::Verdict::Never;
        };
        let net = self.inner.parts.net.as_ref();
        let ready = |n: &str| heal::ready(net, n, shard, group.generation);
        heal::may_drop(self.voters(shard), self.me(), ready)
    }

    /// Shards whose group a peer announces under a higher generation than this node's.
    fn newer_generations(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let net = self.inner.parts.net.as_ref();
        let me = self.me();
        self.all_groups().into_iter().filter_map(move |g| {
            let newest = self
                .inner
                .settings
                .nodes
                .iter()
                .filter(|n| n.as_str() != me)
                .map(|n| identity::generation_of(net, n, g.shard))
                .max()?;
            (newest > g.generation).then_some((g.shard, newest))
        })
    }

    /// Stops this node's instance of `shard`, drops its copy as `why` says and starts it
    /// again as a new incarnation. A damaged copy no other voter holds is kept (unserved).
    async fn replace_copy(&self, shard: u32, why: Why) -> Result<Arc<Group>, ReplicationError> {
        let Some(slot) = self.inner.groups.get(&shard) else {
            return Err(ReplicationError::Settings(format!("no shard {shard}")));
        };
        let voters = self.voters(shard);
        let old = Arc::clone(&read_lock(slot));
        old.retired.store(true, Ordering::Release);
        if let Err(e) = old.raft.shutdown().await {
            tracing::debug!(shard, error = %e, "raft shutdown");
        }
        // openraft's state machine task may still be applying what it was given.
        old.fence.close();
        let (parts, me) = (&self.inner.parts, self.inner.incarnation);
        let started = match why {
            Why::Damaged => heal::restart_dropped(parts, shard, voters, me).await,
            Why::Adopt(g) => heal::restart_adopting(parts, shard, voters, me, g).await,
            Why::Recover => heal::restart_recovering(parts, shard, voters, me).await,
        };
        let failed = started.is_err();
        self.inner.leaders_tx.send_modify(|all| {
            if all.failed.contains(&shard) != failed {
                let mut next = Leaders::clone(all);
                match failed {
                    true => next.failed.insert(shard),
                    false => next.failed.remove(&shard),
                };
                *all = Arc::new(next);
            }
        });
        let group = Arc::new(started?);
        *write_lock(slot) = Arc::clone(&group);
        if !self.keep_tasks(self.group_tasks(&group)) {
            // The node stopped meanwhile, after shutting down the instances it saw.
            if let Err(e) = group.raft.shutdown().await {
                tracing::debug!(shard, error = %e, "raft shutdown");
            }
        }
        Ok(group)
    }

    /// Recovers `shard` from this node's copy (see [`recover`]), if this node is one of its
    /// voters and no majority of the group's voters is live: a voter is live if it is this
    /// node's replica, or its node is `up` and announces that replica.
    pub async fn recover(
        &self,
        shard: u32,
        up: impl Fn(&str) -> bool,
    ) -> Result<Recovered, RecoverError> {
        let group = self
            .group(shard)
            .map_err(|_| recover::Refusal::NoSuchShard(shard))?;
        let voters = self.voters(shard);
        if !voters.iter().any(|v| v == self.me()) {
            let voters = voters.join(", ");
            return Err(recover::Refusal::NotAVoter { shard, voters }.into());
        }
        let m = group.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader && !self.quorum_lost(shard) {
            let leader = self.me().to_string();
            return Err(recover::Refusal::Led { shard, leader }.into());
        }
        let net = self.inner.parts.net.as_ref();
        let group_voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let live: Vec<u64> = group_voters
            .iter()
            .copied()
            .filter(|id| {
                *id == m.id
                    || self.inner.names.of(*id).is_some_and(|node| {
                        let generation = identity::generation_of(net, node, shard);
                        up(node)
                            && generation == group.generation
                            && identity::replica_incarnation(net, node, shard)
                                .map(|i| super::placement::replica_id(node, i))
                                == Some(*id)
                    })
            })
            .collect();
        recover::check(shard, &group_voters, &live)?;
        tracing::warn!(
            shard,
            voters = ?group_voters,
            live = ?live,
            "recovering the shard from this node's copy, as an operator asked: its topics get new epochs"
        );
        let group = self
            .replace_copy(shard, Why::Recover)
            .await
            .map_err(|e| RecoverError::Failed(e.to_string()))?;
        let log = &self.inner.parts.log;
        let mut topics = Vec::new();
        for topic in log
            .topics()
            .map_err(|e| RecoverError::Failed(e.to_string()))?
        {
            if self.shard_of(&topic) != shard {
                continue;
            }
            if let Ok(Some(meta)) = log.meta(&topic) {
                topics.push(RecoveredTopic {
                    topic,
                    epoch: meta.epoch,
                    first: meta.first,
                    head: meta.head,
                });
            }
        }
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(Recovered {
            shard,
            generation: group.generation,
            replica: *group.raft.node_id(),
            topics,
        })
    }
}
