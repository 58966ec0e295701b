//! Replication: every topic lives in one of a fixed number of shards, and each shard is a
//! Raft group (openraft, pinned) whose voters are `factor` configured nodes by rendezvous.
//! The shard leader's topic actors decide offsets, ids and times and [`Replication::propose`]
//! the storage writes as [`Op`]s; every replica applies them in log order to its own
//! [`TopicLog`], so a publish acknowledged after `propose` is stored on a majority.
//!
//! Tasks, per node: for each local shard, openraft's own tasks (core, state machine worker,
//! one replication task per follower while leading; openraft randomises each instance's
//! first tick, so the groups' heartbeats do not beat in phase) and one leader-tracking task
//! feeding [`Replication::leaders`] and one upkeep task that, while this node leads the
//! shard, replaces the replicas of wiped nodes ([`rejoin`]) and hands the shard back to its
//! preferred voter once that one is caught up ([`shards::upkeep`]); per node, one task that
//! records the peers it has seen announce an identity ([`identity`]).
//!
//! Identity: a replica's Raft id is its node's name and an incarnation
//! ([`identity`]); a node with an empty data directory that finds the cluster formed comes
//! back as a new incarnation, never as the replica whose votes and log it lost.
//!
//! Durability: the Raft log and meta live in the node's sled database beside the topics
//! ([`crate::storage::raft_store`]); appends and votes are acknowledged to openraft only
//! after the node's one [`Flusher`] flushed them (group commit across shards), so an entry
//! counts towards a commit only once it is on disk. Applied ops and the applied position are
//! flushed later, in order; a crash re-applies entries, which the ops tolerate.

pub(crate) mod cluster_net;
mod codec;
mod copies;
mod heal;
pub(crate) mod identity;
mod log_store;
pub(crate) mod network;
mod ops;
pub(crate) mod owners;
mod placement;
mod recover;
mod rejoin;
mod shards;
mod state_machine;
#[cfg(test)]
mod tests;
mod types;

pub(crate) use copies::{RecoverError, Recovered};
pub(crate) use network::RaftNet;
pub(crate) use ops::Op;
pub(crate) use recover::Refusal;
pub(crate) use types::Applied;

use crate::storage::flusher::Flusher;
use crate::storage::{RaftStore, SledLog, StorageError, TopicLog};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::Instant as _;
use openraft::{ReadPolicy, ServerState};
use placement::Names;
use shards::Group;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

/// How long a proposal waits for a quorum.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `stop` waits for leadership to move.
const STOP_TRANSFER_WAIT: Duration = Duration::from_secs(1);

/// What replication needs to know about the cluster.
#[derive(Clone, Debug)]
pub(crate) struct ReplicationSettings {
    /// This node's name, e.g. "n1".
    pub me: String,
    /// Every configured node name, in config order.
    pub nodes: Vec<String>,
    pub shards: u32,
    pub factor: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl ReplicationSettings {
    /// Whether this node is the only configured node: nobody else ever holds its shards,
    /// so their logs are kept in memory ([`log_store::LogStore::in_memory`], once a log on
    /// disk from before was replayed) and their leaders never change while it runs.
    pub fn alone(&self) -> bool {
        self.nodes == [self.me.as_str()]
    }
}

/// The leader of every shard as this node knows it (`None`: unknown, or not a voter here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Leaders {
    pub by_shard: Vec<Option<String>>,
    /// Shards whose instance on this node stopped while the node runs (a fatal storage
    /// error): the node cannot serve them until it restarts (or, for a damaged copy, until
    /// the copy is dropped and the instance started again).
    pub failed: BTreeSet<u32>,
}

/// This node's replica of one shard, as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct ShardReport {
    pub shard: u32,
    /// The replica's Raft id (the node's name and incarnation, see [`identity`]).
    pub replica: u64,
    /// Whether the replica is one of the shard's voters (else a learner, or not yet a
    /// member: a new replica waiting for the leader to add it).
    pub voter: bool,
    /// The voters' Raft ids, as this replica knows the membership.
    pub voters: Vec<u64>,
    pub leader: Option<String>,
    /// The node placement prefers as the shard's leader (leadership moves back to it).
    pub preferred: Option<String>,
    /// The index of the last entry applied here.
    pub applied: Option<u64>,
}

/// Why replication could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicationError {
    #[error("replication settings: {0}")]
    Settings(String),
    #[error("nodes {0} and {1} hash to the same Raft id: rename one")]
    IdCollision(String, String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("shard {shard}: {detail}")]
    Raft { shard: u32, detail: String },
    #[error("shard {shard}: a record of this node's copy is damaged (the log names it) and the shard has too few other voters to catch it up from: restore the data directory from a backup")]
    OnlyCopyDamaged { shard: u32 },
}

/// Why a proposal (or a leadership check) did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    /// This node does not lead the shard; `leader` is who does, if known.
    #[error("not the shard leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    /// No quorum answered in time, or the outcome is unknown: retry.
    #[error("shard unavailable: {0}")]
    Unavailable(String),
    /// The shard's Raft stopped (storage failure, shutdown).
    #[error("replication failed: {0}")]
    Fatal(String),
}

/// The Raft trees of the node's store, to pass to [`Replication::start`].
pub(crate) fn raft_store(log: &SledLog) -> Result<RaftStore, StorageError> {
    log.raft_store()
}

struct Inner {
    settings: ReplicationSettings,
    voters: Vec<Vec<String>>,
    names: Arc<Names>,
    /// This node's instance of every shard; one is replaced when its copy is dropped.
    groups: HashMap<u32, RwLock<Arc<Group>>>,
    /// What starting an instance again takes.
    parts: heal::Parts,
    /// The node's incarnation (a shard may have its own, see [`heal`]).
    incarnation: u32,
    leaders: watch::Receiver<Arc<Leaders>>,
    leaders_tx: watch::Sender<Arc<Leaders>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Held while a shard's instance is being replaced (rare: one at a time).
    replacing: tokio::sync::Mutex<()>,
    /// Set by `stop`: leadership is being handed away and must not come back.
    stopping: Arc<AtomicBool>,
    /// Every shard has had a known leader since start (see `leaders_known`).
    formed: AtomicBool,
}

/// The node's shard groups; cheap to clone.
#[derive(Clone)]
pub(crate) struct Replication {
    inner: Arc<Inner>,
}

impl Replication {
    /// Starts one Raft instance per shard: a voter where placement picks this node, else a
    /// learner.
    pub async fn start(
        settings: ReplicationSettings,
        log: Arc<dyn TopicLog>,
        store: RaftStore,
        flusher: Flusher,
        net: Arc<dyn RaftNet>,
    ) -> Result<Replication, ReplicationError> {
        if settings.shards == 0 || settings.factor == 0 {
            return Err(ReplicationError::Settings(
                "shards and factor must be at least 1".into(),
            ));
        }
        if !settings.nodes.contains(&settings.me) {
            return Err(ReplicationError::Settings(format!(
                "{} is not a configured node",
                settings.me
            )));
        }
        let created = store.shard_count(settings.shards)?;
        if created != settings.shards {
            return Err(ReplicationError::Settings(format!(
                "this node's data was created with {created} shards, [replication] shards says {}: the shard count is fixed when a cluster's data is created",
                settings.shards
            )));
        }
        let names = Arc::new(
            Names::new(&settings.nodes).map_err(|(a, b)| ReplicationError::IdCollision(a, b))?,
        );
        identity::upgrade(&settings, &store).await?;
        let seen = identity::seen(&store).await?;
        // Aborted if starting fails or is abandoned (a shutdown during the wait for peers).
        let peers_task = AbortOnDropHandle::new(tokio::spawn(identity::remember_peers(
            settings.clone(),
            store.clone(),
            Arc::clone(&net),
            seen,
        )));
        let incarnation = identity::resolve(&settings, &store, net.as_ref()).await?;
        let voters: Vec<Vec<String>> = (0..settings.shards)
            .map(|s| placement::voters(s, &settings.nodes, settings.factor))
            .collect();
        let damage = store.damage().clone();
        let damaged = heal::shards_of(&damage.take(), settings.shards);
        let parts = heal::Parts {
            settings: settings.clone(),
            names: Arc::clone(&names),
            log,
            store,
            flusher,
            net,
        };
        // Every shard's own incarnation and generation are announced before any starts (one
        // may wait long): peers must not take this node for one that lost its replicas.
        for shard in 0..settings.shards {
            heal::announce_shard(&parts, shard).await?;
        }
        let mut groups = HashMap::new();
        // A voter of every shard it is picked for, a learner of the others.
        for (shard, shard_voters) in (0..settings.shards).zip(&voters) {
            let damaged = damaged.contains(&shard);
            let group =
                heal::start_shard(&parts, shard, shard_voters, incarnation, damaged).await?;
            groups.insert(shard, RwLock::new(Arc::new(group)));
        }
        let initial = Leaders {
            by_shard: vec![None; voters.len()],
            failed: BTreeSet::new(),
        };
        let (leaders_tx, leaders) = watch::channel(Arc::new(initial));
        let local = groups.len();
        let replication = Replication {
            inner: Arc::new(Inner {
                settings,
                voters,
                names,
                groups,
                parts,
                incarnation,
                leaders,
                leaders_tx,
                tasks: Mutex::new(Vec::new()),
                replacing: tokio::sync::Mutex::new(()),
                stopping: Arc::new(AtomicBool::new(false)),
                formed: AtomicBool::new(false),
            }),
        };
        let mut tasks: Vec<JoinHandle<()>> = replication
            .all_groups()
            .iter()
            .flat_map(|g| replication.group_tasks(g))
            .collect();
        tasks.push(peers_task.detach());
        let weak = Arc::downgrade(&replication.inner);
        tasks.push(tokio::spawn(Replication::keep_copies(weak, damage)));
        replication.keep_tasks(tasks);
        tracing::info!(
            me = replication.me(),
            shards = replication.shards(),
            local,
            "replication started"
        );
        Ok(replication)
    }

    /// This node's instance of every local shard.
    fn all_groups(&self) -> Vec<Arc<Group>> {
        let mut groups: Vec<Arc<Group>> = self
            .inner
            .groups
            .values()
            .map(|slot| Arc::clone(&read_lock(slot)))
            .collect();
        groups.sort_by_key(|g| g.shard);
        groups
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.inner.settings.me
    }

    /// How many shards topics are hashed into.
    pub fn shards(&self) -> u32 {
        self.inner.settings.shards
    }

    pub fn shard_of(&self, topic: &str) -> u32 {
        placement::shard_of(topic, self.inner.settings.shards)
    }

    pub fn voters(&self, shard: u32) -> &[String] {
        self.inner
            .voters
            .get(shard as usize)
            .map_or(&[], Vec::as_slice)
    }

    #[cfg(test)]
    pub fn is_voter(&self, shard: u32) -> bool {
        self.voters(shard).contains(&self.inner.settings.me)
    }

    fn name(&self, id: Option<u64>) -> Option<String> {
        id.and_then(|id| self.inner.names.of(id))
            .map(str::to_string)
    }

    fn group(&self, shard: u32) -> Result<Arc<Group>, ProposeError> {
        self.inner
            .groups
            .get(&shard)
            .map(|slot| Arc::clone(&read_lock(slot)))
            .ok_or(ProposeError::NotLeader { leader: None })
    }

    /// Proposes `ops` as one entry; resolves once committed by a majority AND applied on
    /// this node.
    pub async fn propose(&self, shard: u32, ops: Vec<Op>) -> Result<(), ProposeError> {
        self.submit(shard, ops).await?.await.map(drop)
    }

    /// Submits `ops` as one entry, after every entry submitted before (the returned future
    /// does not need to be awaited for the order to hold), and returns its outcome: resolved
    /// once it is committed by a majority and applied on this node, with what applying it
    /// did. So one proposer can keep several entries in flight.
    pub async fn submit(
        &self,
        shard: u32,
        ops: Vec<Op>,
    ) -> Result<
        impl std::future::Future<Output = Result<types::Applied, ProposeError>> + Send + 'static,
        ProposeError,
    > {
        let group = self.group(shard)?;
        let (responder, _log_id, rx) = openraft::impls::ProgressResponder::<
            types::TypeConfig,
            openraft::raft::ClientWriteResult<types::TypeConfig>,
        >::new();
        group
            .raft
            .client_write_ff(types::Entry { ops }, Some(responder))
            .await
            .map_err(|e| ProposeError::Fatal(e.to_string()))?;
        let this = self.clone();
        Ok(async move {
            match tokio::time::timeout(PROPOSE_TIMEOUT, rx).await {
                Ok(Ok(Ok(reply))) => Ok(reply.data),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => Err(ProposeError::NotLeader {
                    leader: this.name(f.leader_id).or_else(|| this.leader(shard)),
                }),
                Ok(Ok(Err(e))) => Err(ProposeError::Unavailable(e.to_string())),
                Ok(Err(_)) => Err(ProposeError::Fatal(format!("shard {shard} stopped"))),
                Err(_) => Err(ProposeError::Unavailable(format!(
                    "shard {shard}: no quorum within {PROPOSE_TIMEOUT:?}"
                ))),
            }
        })
    }

    /// The leader of `shard` as this node knows it (None if unknown or not a voter here).
    pub fn leader(&self, shard: u32) -> Option<String> {
        self.inner
            .leaders
            .borrow()
            .by_shard
            .get(shard as usize)
            .cloned()
            .flatten()
    }

    /// Whether this node leads `shard` but has heard from no majority of its voters for
    /// longer than an election takes: it cannot commit, and the others have likely elected
    /// another leader.
    pub fn quorum_lost(&self, shard: u32) -> bool {
        let Ok(group) = self.group(shard) else {
            return false;
        };
        if self.voters(shard).len() < 2 {
            return false;
        }
        let m = group.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return false;
        }
        let patience = Duration::from_millis(self.inner.settings.election_max_ms);
        match &m.last_quorum_acked {
            Some(at) => at.elapsed() > patience,
            None => false,
        }
    }

    /// This node's replica of every shard, in shard order.
    pub fn report(&self) -> Vec<ShardReport> {
        self.all_groups()
            .iter()
            .map(|g| {
                let m = g.raft.metrics().borrow_watched().clone();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                ShardReport {
                    shard: g.shard,
                    replica: m.id,
                    voter: voters.contains(&m.id),
                    voters,
                    leader: self.name(m.current_leader),
                    preferred: self.voters(g.shard).first().cloned(),
                    applied: m.last_applied.map(|l| l.index),
                }
            })
            .collect()
    }

    /// This node's replica of `shard` and its Raft term ((0, 0) if it holds none). A
    /// leader's changes when it lost and regained leadership, or its copy was replaced: what
    /// it knew may be stale.
    pub fn term(&self, shard: u32) -> (u64, u64) {
        self.group(shard).map_or((0, 0), |g| {
            let m = g.raft.metrics().borrow_watched().clone();
            (m.id, m.current_term)
        })
    }

    /// Readiness: since this node started, every shard it holds has had a live leader at
    /// once — this node leading it, or a leader that `up` says is up (a vote remembered from
    /// before a restart names a leader that may be gone) — and no shard instance has failed
    /// since. A later election does not make the node unready.
    pub fn leaders_known(&self, up: impl Fn(&str) -> bool) -> bool {
        if !self.inner.leaders.borrow().failed.is_empty() {
            return false;
        }
        if self.inner.formed.load(Ordering::Acquire) {
            return true;
        }
        let me = self.inner.settings.me.as_str();
        let live = self.all_groups().iter().all(|g| {
            let m = g.raft.metrics().borrow_watched().clone();
            match self.name(m.current_leader) {
                Some(leader) if leader == me => m.state == ServerState::Leader,
                Some(leader) => up(&leader),
                None => false,
            }
        });
        if live {
            self.inner.formed.store(true, Ordering::Release);
        }
        live
    }

    /// Changes whenever the leader of any local shard changes.
    pub fn leaders(&self) -> watch::Receiver<Arc<Leaders>> {
        self.inner.leaders.clone()
    }

    /// Ok once this node leads `shard` and has applied every entry committed before its
    /// term (its local storage is then current); Err(NotLeader) otherwise. Waits up to
    /// `timeout` while no leader is known or this node leads but is not yet current; answers
    /// at once when another node leads.
    pub async fn lead_ready(&self, shard: u32, timeout: Duration) -> Result<(), ProposeError> {
        let group = self.group(shard)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut metrics = group.raft.metrics();
        loop {
            let (state, leader) = {
                let m = metrics.borrow_watched();
                (m.state, m.current_leader)
            };
            let not_leader = || ProposeError::NotLeader {
                leader: self.name(leader),
            };
            if state == ServerState::Leader {
                let read = group.raft.ensure_linearizable(ReadPolicy::ReadIndex);
                return match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(_)) => self.applied_own_log(&group, deadline).await,
                    Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                        Err(ProposeError::NotLeader {
                            leader: self.name(f.leader_id),
                        })
                    }
                    Ok(Err(RaftError::APIError(e))) => {
                        Err(ProposeError::Unavailable(e.to_string()))
                    }
                    Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
                    Err(_) => Err(not_leader()),
                };
            }
            if leader.is_some() && leader != Some(*group.raft.node_id()) {
                return Err(not_leader());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ProposeError::Fatal(format!("shard {shard} stopped"))),
                Err(_) => return Err(not_leader()),
            }
        }
    }

    /// Waits until every entry in this leader's log is applied: an entry a previous owner
    /// proposed in this term may still be in flight, and a new owner must see it before it
    /// decides offsets.
    async fn applied_own_log(
        &self,
        group: &Group,
        deadline: tokio::time::Instant,
    ) -> Result<(), ProposeError> {
        let mut metrics = group.raft.metrics();
        let want = metrics.borrow_watched().last_log_index;
        loop {
            let (state, applied) = {
                let m = metrics.borrow_watched();
                (m.state, m.last_applied.map(|l| l.index))
            };
            if state != ServerState::Leader {
                return Err(ProposeError::NotLeader { leader: None });
            }
            if applied >= want {
                // Applied writes of a log kept in memory are durable only once flushed.
                return match group.in_memory {
                    true => self.flushed(group.shard, deadline).await,
                    false => Ok(()),
                };
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ProposeError::Fatal(format!(
                        "shard {} stopped",
                        group.shard
                    )))
                }
                Err(_) => {
                    return Err(ProposeError::Unavailable(format!(
                        "shard {}: entries in flight did not commit in time",
                        group.shard
                    )))
                }
            }
        }
    }

    /// Resolves once every write made so far is durable.
    async fn flushed(
        &self,
        shard: u32,
        deadline: tokio::time::Instant,
    ) -> Result<(), ProposeError> {
        match tokio::time::timeout_at(deadline, self.inner.parts.flusher.flushed()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProposeError::Fatal(format!("shard {shard}: {e}"))),
            Err(_) => Err(ProposeError::Unavailable(format!(
                "shard {shard}: applied entries were not flushed in time"
            ))),
        }
    }

    /// Serves an RPC that arrived from a peer for `shard`; returns the encoded response.
    pub async fn serve(&self, shard: u32, request: Vec<u8>) -> Vec<u8> {
        let response = match self.group(shard).ok() {
            Some(group) => {
                let stopping = self.inner.stopping.load(Ordering::Acquire);
                network::serve(&group.raft, &group.incoming, &request, stopping).await
            }
            None => network::RaftResponse::Refused(format!(
                "{} is not a voter of shard {shard}",
                self.inner.settings.me
            )),
        };
        codec::encode(&response).unwrap_or_else(|e| {
            tracing::error!(shard, error = %e, "raft response not encodable");
            Vec::new()
        })
    }

    /// Transfers leadership of every shard this node leads to the voter holding the most of
    /// its log (waits up to ~1 s in all), then shuts every Raft down.
    pub async fn stop(&self) {
        // Under the tasks' lock: a copy replaced meanwhile either has its tasks here, or
        // sees the node stopping and shuts its new instance down itself.
        let tasks: Vec<_> = match self.inner.tasks.lock() {
            Ok(mut tasks) => {
                self.inner.stopping.store(true, Ordering::Release);
                tasks.drain(..).collect()
            }
            Err(_) => {
                self.inner.stopping.store(true, Ordering::Release);
                Vec::new()
            }
        };
        for task in &tasks {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + STOP_TRANSFER_WAIT;
        let groups = self.all_groups();
        for group in &groups {
            let m = group.raft.metrics().borrow_watched().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            if let Some(to) = shards::most_caught_up(&m, &voters) {
                tracing::info!(shard = group.shard, to, "stopping: handing leadership over");
                if let Err(e) = group.raft.trigger().transfer_leader(to).await {
                    tracing::warn!(shard = group.shard, error = %e, "leadership transfer failed");
                }
            }
        }
        for group in &groups {
            let mut metrics = group.raft.metrics();
            loop {
                let leads = {
                    let m = metrics.borrow_watched();
                    m.current_leader == Some(m.id)
                };
                if !leads {
                    break;
                }
                match tokio::time::timeout_at(deadline, metrics.changed()).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }
        for group in &groups {
            if let Err(e) = group.raft.shutdown().await {
                tracing::warn!(shard = group.shard, error = %e, "raft shutdown");
            }
        }
        tracing::info!(me = self.inner.settings.me, "replication stopped");
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
