//! The Raft instances of this node: one per shard, each with its log store, state machine
//! and network; started, initialized and stopped here. A node that is not one of a shard's
//! voters is its learner (added by the leader): it applies every entry too, so it knows
//! the leader and holds the data, but never votes. Also the two background tasks: leader
//! tracking (one per instance) and, per node, leadership spread and adding learners.

use super::log_store::LogStore;
use super::network::{Incoming, NetFactory, RaftNet};
use super::placement;
use super::state_machine::StateMachine;
use super::types::{Metrics, NodeId, Raft};
use super::{Leaders, ReplicationError, ReplicationSettings};
use crate::storage::flusher::Flusher;
use crate::storage::{RaftStore, TopicLog};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Config, RaftLogReader, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries between snapshots.
const SNAPSHOT_EVERY: u64 = 20_000;
/// Entries kept below a snapshot, so a restarted replica catches up from the log.
const LOG_TAIL: u64 = 10_000;
/// Entries per AppendEntries (the network also caps them at ~1 MiB).
const MAX_PAYLOAD_ENTRIES: u64 = 256;
/// At most one leadership transfer attempt per shard in this period.
const TRANSFER_BACKOFF: Duration = Duration::from_secs(5);
/// How often the spread task looks at the shards.
const SPREAD_EVERY: Duration = Duration::from_millis(250);

/// One local shard instance.
pub(crate) struct Group {
    pub shard: u32,
    pub raft: Raft,
    /// A snapshot being received from the leader.
    pub incoming: Incoming,
}

/// Node names by Raft id.
pub(crate) type Names = Arc<HashMap<NodeId, String>>;

fn config(settings: &ReplicationSettings, shard: u32) -> Result<Arc<Config>, ReplicationError> {
    let config = Config {
        cluster_name: format!("starling-shard-{shard}"),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_min_ms,
        election_timeout_max: settings.election_max_ms,
        enable_pre_vote: Some(true),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: LOG_TAIL,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ReplicationError::Settings(e.to_string()))
}

/// Starts the instance of `shard`, whose voters are `voters`; initializes the group if this
/// node is one of them and has no Raft state for it yet.
pub(crate) async fn start_group(
    settings: &ReplicationSettings,
    shard: u32,
    voters: &[String],
    log: Arc<dyn TopicLog>,
    store: &RaftStore,
    flusher: Flusher,
    net: Arc<dyn RaftNet>,
) -> Result<Group, ReplicationError> {
    let me = placement::node_id(&settings.me);
    let shard_store = store.shard(shard)?;
    let mut log_store = LogStore::new(shard, shard_store.clone(), flusher);
    let raft_err = |e: &dyn std::fmt::Display| ReplicationError::Raft {
        shard,
        detail: e.to_string(),
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
    let sm =
        StateMachine::open(shard, settings.shards, log, shard_store).map_err(|e| raft_err(&e))?;
    let network = NetFactory { shard, net };
    let raft = Raft::new(me, config(settings, shard)?, network, log_store, sm)
        .await
        .map_err(|e| raft_err(&e))?;
    // Every voter with no Raft state initializes the group with the same voters (openraft
    // allows that with identical configurations): the first start of a cluster forms every
    // shard even while a shard's preferred voter is down.
    if empty && voters.contains(&settings.me) {
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|n| (placement::node_id(n), BasicNode { addr: n.clone() }))
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
    })
}

/// The leader of a shard as `m` says, by name.
pub(crate) fn leader_name(m: &Metrics, names: &Names) -> Option<String> {
    m.current_leader.and_then(|id| names.get(&id).cloned())
}

/// Keeps `leaders` current with `group`'s view of its leader, until the instance stops.
pub(crate) async fn track_leader(
    group: Arc<Group>,
    names: Names,
    leaders: watch::Sender<Arc<Leaders>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut metrics = group.raft.metrics();
    loop {
        let leader = leader_name(&metrics.borrow_watched(), &names);
        leaders.send_if_modified(|all| {
            let slot = usize::try_from(group.shard).ok();
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
            // A shutdown stops every instance; anything else is a failure of this one.
            let failed = !stopping.load(std::sync::atomic::Ordering::Acquire);
            tracing::warn!(shard = group.shard, failed, "shard instance stopped");
            leaders.send_modify(|all| {
                let mut next = Leaders::clone(all);
                if let Some(s) = usize::try_from(group.shard)
                    .ok()
                    .and_then(|i| next.by_shard.get_mut(i))
                {
                    *s = None;
                }
                next.failed |= failed;
                *all = Arc::new(next);
            });
            return;
        }
    }
}

/// Adds each of `learners` that `m`'s membership lacks (without waiting for it to catch up).
async fn add_learners(group: &Group, m: &Metrics, learners: &Learners) {
    let membership = m.membership_config.membership();
    let known: std::collections::HashSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    for (id, name) in learners.iter().filter(|(id, _)| !known.contains(id)) {
        let node = BasicNode { addr: name.clone() };
        match group.raft.add_learner(*id, node, false).await {
            Ok(_) => tracing::info!(shard = group.shard, learner = %name, "learner added"),
            Err(e) => {
                tracing::warn!(shard = group.shard, learner = %name, error = %e, "cannot add a learner")
            }
        }
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

/// The configured nodes that are not among a shard's voters: its learners.
pub(crate) type Learners = Vec<(NodeId, String)>;

/// For each shard this node leads: adds every configured node that is not a member yet as a
/// learner, and moves leadership to the shard's preferred voter once that one is caught up
/// (at most one attempt per shard per [`TRANSFER_BACKOFF`]).
pub(crate) async fn spread_leadership(groups: Vec<(Arc<Group>, NodeId, Learners)>) {
    let mut last_try: HashMap<u32, Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(SPREAD_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (group, preferred, learners) in &groups {
            let m = group.raft.metrics().borrow_watched().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            add_learners(group, &m, learners).await;
            if m.id == *preferred {
                continue;
            }
            if caught_up(&m, &[*preferred]).is_none() {
                continue;
            }
            if last_try
                .get(&group.shard)
                .is_some_and(|t| t.elapsed() < TRANSFER_BACKOFF)
            {
                continue;
            }
            last_try.insert(group.shard, Instant::now());
            tracing::info!(
                shard = group.shard,
                to = preferred,
                "moving leadership to the preferred voter"
            );
            if let Err(e) = group.raft.trigger().transfer_leader(*preferred).await {
                tracing::warn!(shard = group.shard, error = %e, "leadership transfer failed");
            }
        }
    }
}
