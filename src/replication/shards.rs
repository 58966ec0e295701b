//! The Raft instances of this node: one per shard, each with its log store, state machine
//! and network; started, initialized and stopped here. A node that is not one of a shard's
//! voters is its learner (added by the leader): it applies every entry too, so it knows
//! the leader and holds the data, but never votes. Also the two background tasks of each
//! instance: leader tracking, and the leader's upkeep of its shard: members in step with
//! the nodes' replicas ([`super::rejoin`]) and leadership spread.

use super::identity;
use super::log_store::LogStore;
use super::network::{Incoming, NetFactory, RaftNet};
use super::placement::{self, Names};
use super::rejoin::{self, MemberSeen, Step};
use super::state_machine::{Fence, StateMachine};
use super::types::{Metrics, NodeId, Raft};
use super::{Leaders, ReplicationError, ReplicationSettings};
use crate::storage::flusher::Flusher;
use crate::storage::{RaftStore, TopicLog};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::Instant as _;
use openraft::{BasicNode, ChangeMembers, Config, RaftLogReader, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries between snapshots.
const SNAPSHOT_EVERY: u64 = 20_000;
/// Entries kept below a snapshot, so a restarted replica catches up from the log.
const LOG_TAIL: u64 = 10_000;
/// Entries between snapshots of a shard whose log is kept in memory (a snapshot is then
/// only a position, and the log is purged below it).
const SOLO_SNAPSHOT_EVERY: u64 = 64;
/// Entries per AppendEntries (the network also caps them at ~1 MiB).
const MAX_PAYLOAD_ENTRIES: u64 = 256;
/// At most one leadership transfer attempt per shard in this period.
const TRANSFER_BACKOFF: Duration = Duration::from_secs(5);
/// How often the upkeep task looks at the shards.
const SPREAD_EVERY: Duration = Duration::from_millis(250);
/// How long the upkeep task waits for one membership change.
const CHANGE_WAIT: Duration = Duration::from_secs(5);

/// One local shard instance.
pub(crate) struct Group {
    pub shard: u32,
    pub raft: Raft,
    /// A snapshot being received from the leader.
    pub incoming: Incoming,
    /// Set when this instance is stopped to be replaced (its copy is being dropped): its
    /// stop is not a failure, and its tasks end.
    pub retired: std::sync::atomic::AtomicBool,
    /// The shard's generation here (raised by each recovery from a minority).
    pub generation: u64,
    /// Set while the group a recovery started has no snapshot of the recovered data yet:
    /// no replica may be added, since entries alone would not give it that data.
    pub recovering: std::sync::atomic::AtomicBool,
    /// Closed once the instance is stopped to be replaced (see [`Fence`]).
    pub fence: Fence,
    /// The log is kept in memory: what is applied is durable only after the next flush.
    pub in_memory: bool,
}

impl Group {
    fn retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }
}

fn config(
    settings: &ReplicationSettings,
    shard: u32,
    solo: bool,
) -> Result<Arc<Config>, ReplicationError> {
    let (every, tail) = match solo {
        true => (SOLO_SNAPSHOT_EVERY, 0),
        false => (SNAPSHOT_EVERY, LOG_TAIL),
    };
    let config = Config {
        cluster_name: format!("starling-shard-{shard}"),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_min_ms,
        election_timeout_max: settings.election_max_ms,
        enable_pre_vote: Some(true),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(every),
        max_in_snapshot_log_to_keep: tail,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ReplicationError::Settings(e.to_string()))
}

/// How a replica with no Raft state for its shard starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    /// Its incarnation (see [`identity`]).
    pub incarnation: u32,
    /// The shard's generation here.
    pub generation: u64,
    /// A recovery from a minority started anew from this replica's data: with no Raft state
    /// it initializes the group with itself as the only voter.
    pub recovering: bool,
}

/// Starts this node's replica of `shard` (whose voters are `voters`) as `start` says;
/// initializes the group if this node is one of the voters, forms a new cluster
/// (incarnation 0) and has no Raft state for the shard yet, or if it recovers the shard.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_group(
    settings: &ReplicationSettings,
    shard: u32,
    voters: &[String],
    start: Start,
    log: Arc<dyn TopicLog>,
    store: &RaftStore,
    flusher: Flusher,
    net: Arc<dyn RaftNet>,
) -> Result<Group, ReplicationError> {
    let Start {
        incarnation,
        generation,
        recovering,
    } = start;
    let me = placement::replica_id(&settings.me, incarnation);
    let shard_store = store.shard(shard)?;
    let raft_err = |e: &dyn std::fmt::Display| ReplicationError::Raft {
        shard,
        detail: e.to_string(),
    };
    let fence = Fence::default();
    let mut sm = StateMachine::open(
        shard,
        settings.shards,
        log,
        shard_store.clone(),
        fence.clone(),
    )
    .map_err(|e| raft_err(&e))?;
    let solo = settings.alone()
        && {
            let replay = LogStore::on_disk_past(&shard_store, sm.applied_index())?;
            if replay {
                tracing::info!(shard, "the shard's log on disk is replayed first; it is kept in memory from the next start");
            }
            !replay
        };
    let mut log_store = match solo {
        true => {
            sm.answer_after_flushes(flusher.clone());
            LogStore::in_memory(shard, shard_store, flusher, !sm.formed())?
        }
        false => LogStore::new(shard, shard_store, flusher),
    };
    let empty = log_store
        .get_log_state()
        .await
        .map_err(|e| raft_err(&e))?
        .last_log_id
        .is_none()
        && log_store
            .read_vote()
            .await
            .map_err(|e| raft_err(&e))?
            .is_none();
    let network = NetFactory { shard, net };
    let raft = Raft::new(me, config(settings, shard, solo)?, network, log_store, sm)
        .await
        .map_err(|e| raft_err(&e))?;
    // Every voter with no Raft state initializes the group with the same voters (openraft
    // allows that with identical configurations): the first start of a cluster forms every
    // shard even while a shard's preferred voter is down.
    if empty && recovering {
        let node = BasicNode {
            addr: settings.me.clone(),
        };
        raft.initialize(BTreeMap::from([(me, node)]))
            .await
            .map_err(|e| raft_err(&e))?;
        tracing::warn!(
            shard,
            generation,
            "shard group started anew from this node's copy"
        );
    } else if empty && incarnation == 0 && voters.contains(&settings.me) {
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|n| (placement::replica_id(n, 0), BasicNode { addr: n.clone() }))
            .collect();
        raft.initialize(members).await.map_err(|e| raft_err(&e))?;
        tracing::info!(shard, voters = ?voters, "shard group initialized");
    } else if voters == [settings.me.as_str()] {
        // The only voter need not wait out an election timeout to lead again.
        if let Err(e) = raft.trigger().elect(false).await {
            tracing::warn!(shard, error = %e, "cannot start an election");
        }
    }
    Ok(Group {
        shard,
        raft,
        incoming: Incoming::default(),
        retired: Default::default(),
        generation,
        recovering: recovering.into(),
        fence,
        in_memory: solo,
    })
}

/// The leader of a shard as `m` says, by name.
pub(crate) fn leader_name(m: &Metrics, names: &Names) -> Option<String> {
    m.current_leader
        .and_then(|id| names.of(id))
        .map(str::to_string)
}

/// Keeps `leaders` current with `group`'s view of its leader, until the instance stops.
/// A retired instance (replaced by another) changes nothing: its successor's task owns
/// the shard's entry; the check runs inside each update, so it orders with the
/// replacement's own updates.
pub(crate) async fn track_leader(
    group: Arc<Group>,
    names: Arc<Names>,
    leaders: watch::Sender<Arc<Leaders>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut metrics = group.raft.metrics();
    let slot = usize::try_from(group.shard).ok();
    loop {
        let leader = leader_name(&metrics.borrow_watched(), &names);
        leaders.send_if_modified(|all| {
            if group.retired() {
                return false;
            }
            match slot.and_then(|i| all.by_shard.get(i)) {
                Some(known) if *known != leader => {
                    let mut next = Leaders::clone(all);
                    if let Some(s) = slot.and_then(|i| next.by_shard.get_mut(i)) {
                        tracing::info!(shard = group.shard, leader = ?leader, "shard leader changed");
                        *s = leader.clone();
                    }
                    *all = Arc::new(next);
                    true
                }
                _ => false,
            }
        });
        if metrics.changed().await.is_err() {
            // The instance stopped (shutdown, or a fatal storage error): this node no longer
            // knows a leader for the shard, so it neither claims it nor reports ready.
            // A shutdown stops every instance, and a copy being dropped its own; anything
            // else is a failure of this one (until its copy is dropped and it starts again).
            leaders.send_if_modified(|all| {
                if group.retired() {
                    return false;
                }
                let failed = !stopping.load(std::sync::atomic::Ordering::Acquire);
                tracing::warn!(shard = group.shard, failed, "shard instance stopped");
                let mut next = Leaders::clone(all);
                if let Some(s) = slot.and_then(|i| next.by_shard.get_mut(i)) {
                    *s = None;
                }
                if failed {
                    next.failed.insert(group.shard);
                }
                *all = Arc::new(next);
                true
            });
            return;
        }
    }
}

/// Moves `m`'s group (led by this node) one step towards holding, for each configured
/// node, the replica that node announced (`wanted`), with the `voting` nodes as voters.
/// False if a step failed.
async fn keep_members(
    group: &Group,
    m: &Metrics,
    wanted: &[(String, Option<NodeId>)],
    voting: &BTreeSet<String>,
) -> bool {
    let membership = m.membership_config.membership();
    let voters: HashSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<MemberSeen> = membership
        .nodes()
        .map(|(id, node)| MemberSeen {
            id: *id,
            node: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let matched: HashMap<NodeId, u64> = m
        .replication
        .iter()
        .flatten()
        .filter_map(|(id, l)| Some((*id, l.as_ref()?.index())))
        .collect();
    let last = m.last_log_index.unwrap_or(0);
    let shard = group.shard;
    let configs = membership.get_joint_config();
    let mut ok = true;
    for step in rejoin::plan(&members, configs, wanted, &matched, last, voting) {
        let (what, result) = match &step {
            Step::AddLearner { id, node } => {
                let node = BasicNode { addr: node.clone() };
                let added = group.raft.add_learner(*id, node, false);
                let added = match tokio::time::timeout(CHANGE_WAIT, added).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("not committed within {CHANGE_WAIT:?}")),
                };
                ("learner added", added)
            }
            Step::SetVoters { voters, .. } => {
                let change = ChangeMembers::ReplaceAllVoters(voters.clone());
                ("replica replaced", change_members(group, change).await)
            }
            Step::Remove(ids) => {
                let change = ChangeMembers::RemoveNodes(ids.clone());
                ("stale learner removed", change_members(group, change).await)
            }
        };
        match result {
            Ok(()) => tracing::info!(shard, step = ?step, "{what}"),
            Err(error) => {
                ok = false;
                tracing::warn!(shard, step = ?step, error, "membership step failed")
            }
        }
    }
    ok
}

async fn change_members(
    group: &Group,
    change: ChangeMembers<NodeId, BasicNode>,
) -> Result<(), String> {
    match tokio::time::timeout(CHANGE_WAIT, group.raft.change_membership(change, false)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not committed within {CHANGE_WAIT:?}")),
    }
}

/// A voter of `m`'s group (not `me`) whose log matches the leader's last entry.
pub(crate) fn caught_up(m: &Metrics, candidates: &[NodeId]) -> Option<NodeId> {
    let replication = m.replication.as_ref()?;
    let last = m.last_log_index?;
    candidates.iter().copied().find(|id| {
        *id != m.id
            && replication
                .get(id)
                .and_then(|matched| matched.as_ref())
                .is_some_and(|l| l.index() >= last)
    })
}

/// The voter of `m`'s group (not this replica) that holds the most of the leader's log, if
/// any holds some: the one to hand leadership to when this node stops. openraft's transfer
/// stops new entries and the target waits for its log to catch up before it stands, so it
/// need not be caught up already (under load none ever is at the instant of asking).
pub(crate) fn most_caught_up(m: &Metrics, candidates: &[NodeId]) -> Option<NodeId> {
    let replication = m.replication.as_ref()?;
    candidates
        .iter()
        .copied()
        .filter(|id| *id != m.id)
        .filter_map(|id| Some((replication.get(&id)?.as_ref()?.index(), id)))
        .max()
        .map(|(_, id)| id)
}

/// The replica of `group`'s shard each of `nodes` announced (`me` is `my_id`); none for a
/// node still in an older generation of the shard (its replica belongs to a group that
/// was started anew: it drops it and announces a new one).
fn wanted(
    nodes: &[String],
    group: &Group,
    me: &str,
    my_id: NodeId,
    net: &dyn RaftNet,
) -> Vec<(String, Option<NodeId>)> {
    let shard = group.shard;
    nodes
        .iter()
        .map(|n| {
            let id = if n == me {
                Some(my_id)
            } else if identity::generation_of(net, n, shard) < group.generation {
                None
            } else {
                identity::announced_replica(net, n, shard)
            };
            (n.clone(), id)
        })
        .collect()
}

/// The voter of `m`'s group that is a replica of node `name`.
pub(crate) fn voter_of(m: &Metrics, name: &str, names: &Names) -> Option<NodeId> {
    m.membership_config
        .membership()
        .voter_ids()
        .find(|id| names.of(*id) == Some(name))
}

/// While this node leads `group`'s shard: keeps its members in step with the replicas the
/// configured nodes announced (after a failed step, again only after [`TRANSFER_BACKOFF`],
/// or one election timeout while a joint config waits to be finished),
/// and moves leadership to the shard's `preferred` node once its voter is caught up (at
/// most one attempt per [`TRANSFER_BACKOFF`]). One task per shard, so a shard that cannot
/// commit holds up no other.
pub(crate) async fn upkeep(
    group: Arc<Group>,
    voting: Vec<String>,
    settings: ReplicationSettings,
    names: Arc<Names>,
    net: Arc<dyn RaftNet>,
) {
    let Some(preferred) = voting.first().cloned() else {
        return;
    };
    let voting: BTreeSet<String> = voting.into_iter().collect();
    let mut last_transfer: Option<Instant> = None;
    let mut last_failure: Option<Instant> = None;
    let within = |t: Option<Instant>, d: Duration| t.is_some_and(|t| t.elapsed() < d);
    let recent = |t: Option<Instant>| within(t, TRANSFER_BACKOFF);
    let election = Duration::from_millis(settings.election_max_ms);
    let mut ticks = tokio::time::interval(SPREAD_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if group.retired() {
            return;
        }
        let m = group.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        // How long ago a majority last answered (heartbeats every `heartbeat_ms`): grows if
        // Raft's messages queue behind other traffic on the cluster link.
        if let Some(at) = &m.last_quorum_acked {
            let age = at.elapsed().as_secs_f64();
            metrics::histogram!("starling_raft_quorum_ack_age_seconds").record(age);
        }
        // A joint config (a change half done) is finished soon, whatever failed before.
        let joint = m.membership_config.membership().get_joint_config().len() > 1;
        let wait = if joint { election } else { TRANSFER_BACKOFF };
        let recovering = group.recovering.load(std::sync::atomic::Ordering::Acquire);
        if !recovering && !within(last_failure, wait) {
            let wanted = wanted(&settings.nodes, &group, &settings.me, m.id, net.as_ref());
            if !keep_members(&group, &m, &wanted, &voting).await {
                last_failure = Some(Instant::now());
            }
        }
        // The steps may have taken a while and changed the membership.
        let m = group.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        let Some(to) = voter_of(&m, &preferred, &names) else {
            continue;
        };
        if m.id == to || caught_up(&m, &[to]).is_none() || recent(last_transfer) {
            continue;
        }
        last_transfer = Some(Instant::now());
        tracing::info!(
            shard = group.shard,
            to,
            "moving leadership to the preferred voter"
        );
        if let Err(e) = group.raft.trigger().transfer_leader(to).await {
            tracing::warn!(shard = group.shard, error = %e, "leadership transfer failed");
        }
    }
}
