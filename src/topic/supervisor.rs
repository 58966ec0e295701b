//! The topic supervisor: spawns a topic actor the first time a topic is used — an owner
//! ([`TopicActor`]) or a follower ([`FollowerActor`]), as placement says — and restarts one
//! that failed, from its log, as the [`RestartPolicy`] allows: at once, after a backoff
//! (a `Restart` it sends itself), or not until a cool-down has passed. A restart loses no
//! acknowledged message (the log has them) and no subscription (every subscriber is told
//! to resume from its cursor when the topic restarts).
//!
//! Who owns a topic is the leader of its shard (the replication layer decides, through
//! Raft). When the leader of a shard moves, every running actor whose role changed is
//! stopped (an owner is waited for, so a node never has two writers of a topic); its
//! subscribers resume on a fresh actor of the right role. Stops run in tasks of their own,
//! all at once; messages about a topic being stopped wait for its `Stopped`, and every
//! other topic is served meanwhile.
//!
//! Lookups go through a read-mostly [`TopicRegistry`]; only a miss costs a message to the
//! supervisor, which is the one writer of the registry.

use super::actor::{tell_resubscribe, TopicActor, TopicArgs, TopicContext};
use super::follower::{FollowerActor, FollowerArgs};
use super::handle::TopicHandle;
use super::restart::{Decision, RestartPolicy, Restarts};
use super::{Role, TopicMsg, TopicShared};
use crate::cluster::client::Cluster;
use crate::cluster::view::View;
use crate::protocol::TopicName;
use crate::shutdown::Shutdown;
use crate::topic::error::TopicError;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Topic name to running actor, readable by anyone.
#[derive(Clone, Default)]
pub struct TopicRegistry(Arc<RwLock<HashMap<TopicName, TopicHandle>>>);

impl TopicRegistry {
    pub fn get(&self, topic: &TopicName) -> Option<TopicHandle> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    fn insert(&self, topic: TopicName, handle: TopicHandle) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic, handle);
    }

    fn remove(&self, topic: &TopicName) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub enum SupervisorMsg {
    /// The running actor of a topic, spawned if needed.
    Get(TopicName, RpcReplyPort<Result<TopicHandle, TopicError>>),
    /// An idle topic actor asks to be retired.
    Retire(TopicName, ActorId),
    /// Membership changed: stop every actor whose role changed, or every actor if a member
    /// joined (or came back).
    Rebalance { joined: bool },
    /// The backoff of a failed topic has passed: start it again.
    Restart(TopicName),
    /// A stop that ran off the mailbox finished: the topic may be handed out.
    Stopped(TopicName),
}

pub struct TopicSupervisor;

/// How long retiring an idle topic actor may take.
const RETIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SupervisorState {
    ctx: TopicContext,
    registry: TopicRegistry,
    by_actor: HashMap<ActorId, TopicName>,
    policy: RestartPolicy,
    /// Recent restarts of the topics that failed.
    restarts: HashMap<TopicName, Restarts>,
    /// Topics not running because they failed: waiting out a backoff, or given up.
    held: HashMap<TopicName, Held>,
    /// Topics whose actor is being stopped off the mailbox: how many such
    /// tasks run, and the messages about the topic that wait until all of them are done.
    stopping: HashMap<TopicName, Stopping>,
}

/// The stop tasks of one topic, and what waits for them.
#[derive(Default)]
struct Stopping {
    tasks: usize,
    parked: Vec<SupervisorMsg>,
}

enum Held {
    /// Restarts when its `Restart` arrives; its subscribers are told then.
    Backoff(Arc<TopicShared>),
    /// Failed too often: refused until then.
    GaveUp { until: Instant },
}

impl TopicSupervisor {
    /// Finds or spawns the actor of `topic`.
    pub async fn handle(
        sup: &ActorRef<SupervisorMsg>,
        registry: &TopicRegistry,
        topic: &TopicName,
    ) -> Result<TopicHandle, TopicError> {
        if let Some(h) = registry.get(topic) {
            return Ok(h);
        }
        match sup
            .call(|r| SupervisorMsg::Get(topic.clone(), r), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(TopicError::unavailable("node is shutting down")),
        }
    }
}

impl Actor for TopicSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (TopicContext, TopicRegistry, RestartPolicy);

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        (ctx, registry, policy): Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            registry,
            by_actor: HashMap::new(),
            policy,
            restarts: HashMap::new(),
            held: HashMap::new(),
            stopping: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Get(topic, reply) => {
                if let Some(s) = state.stopping.get_mut(&topic) {
                    s.parked.push(SupervisorMsg::Get(topic, reply));
                    return Ok(());
                }
                let result = match state.registry.get(&topic) {
                    Some(h) => Ok(h),
                    None => match state.refusal(&topic) {
                        Some(e) => Err(e),
                        None => {
                            state
                                .spawn(myself.get_cell(), topic, TopicShared::new())
                                .await
                        }
                    },
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Rebalance { joined } => state.rebalance(&myself, joined),
            SupervisorMsg::Retire(topic, id) => {
                let Some(h) = state
                    .registry
                    .get(&topic)
                    .filter(|h| h.actor.get_id() == id)
                else {
                    return Ok(());
                };
                // Out of the registry first, then stopped (and waited for, off the mailbox)
                // before this supervisor hands out the topic again: never two writers for
                // one topic.
                state.registry.remove(&topic);
                state.by_actor.remove(&id);
                state.stop_off_mailbox(&myself, topic, Some(h.actor), "idle");
            }
            SupervisorMsg::Restart(topic) => {
                // Never alongside a stop of the same topic's actor.
                if let Some(s) = state.stopping.get_mut(&topic) {
                    s.parked.push(SupervisorMsg::Restart(topic));
                    return Ok(());
                }
                let Some(Held::Backoff(shared)) = state.held.remove(&topic) else {
                    return Ok(());
                };
                state.restart(myself.get_cell(), topic, shared).await;
            }
            SupervisorMsg::Stopped(topic) => {
                let done = state.stopping.get_mut(&topic).is_some_and(|s| {
                    s.tasks = s.tasks.saturating_sub(1);
                    s.tasks == 0
                });
                if done {
                    for parked in state.stopping.remove(&topic).unwrap_or_default().parked {
                        myself.cast(parked)?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(topic) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let shared = state
                    .registry
                    .get(&topic)
                    .map(|h| h.shared)
                    .unwrap_or_else(TopicShared::new);
                state.registry.remove(&topic);
                state.failed(&myself, topic, shared, &err.to_string()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(topic) = state.by_actor.remove(&cell.get_id()) {
                    state.registry.remove(&topic);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        sup: ActorCell,
        topic: TopicName,
        shared: Arc<TopicShared>,
    ) -> Result<TopicHandle, TopicError> {
        let role = self.role(&topic)?;
        let spawned = match &role {
            Role::Owner => {
                let args = TopicArgs {
                    topic: topic.clone(),
                    ctx: self.ctx.clone(),
                    shared: shared.clone(),
                };
                Actor::spawn_linked(None, TopicActor, args, sup).await
            }
            Role::Follower(owner) => {
                let args = FollowerArgs {
                    topic: topic.clone(),
                    owner: owner.clone(),
                    ctx: self.ctx.clone(),
                    shared: shared.clone(),
                };
                Actor::spawn_linked(None, FollowerActor, args, sup).await
            }
        };
        match spawned {
            Ok((actor, _)) => {
                let handle = TopicHandle {
                    actor,
                    shared,
                    role,
                };
                self.by_actor.insert(handle.actor.get_id(), topic.clone());
                self.registry.insert(topic, handle.clone());
                Ok(handle)
            }
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, "cannot start topic actor");
                Err(TopicError::unavailable("topic is unavailable; try again"))
            }
        }
    }

    /// Why `topic`, which has no actor, may not be started now (see [`RestartPolicy`]).
    fn refusal(&mut self, topic: &TopicName) -> Option<TopicError> {
        let now = Instant::now();
        match self.held.get(topic)? {
            Held::Backoff(_) => Some(TopicError::unavailable(format!(
                "topic {topic} is restarting after a failure; try again shortly"
            ))),
            Held::GaveUp { until } if *until > now => Some(TopicError::unavailable(format!(
                "topic {topic} failed {} times within {} s and is stopped; try again in {} s",
                self.policy.max_restarts + 1,
                self.policy.window.as_secs(),
                until.saturating_duration_since(now).as_secs().max(1),
            ))),
            Held::GaveUp { .. } => {
                self.held.remove(topic);
                None
            }
        }
    }

    /// A topic actor failed: restart it now or after a backoff, or give up on it, as the
    /// [`RestartPolicy`] decides.
    async fn failed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        topic: TopicName,
        shared: Arc<TopicShared>,
        error: &str,
    ) {
        let now = Instant::now();
        let policy = self.policy;
        self.restarts.retain(|_, r| !r.is_stale(&policy, now));
        let decision = self
            .restarts
            .entry(topic.clone())
            .or_default()
            .failed(&policy, now);
        match decision {
            Decision::Restart { after, attempt } => {
                metrics::counter!("starling_topic_restarts_total").increment(1);
                tracing::error!(topic = %topic, error, attempt, backoff_ms = after.as_millis() as u64, "topic actor failed; restarting from its log");
                if after.is_zero() && !self.stopping.contains_key(&topic) {
                    self.restart(myself.get_cell(), topic, shared).await;
                } else {
                    // A restart waits for its backoff, and for any stop of the
                    // topic's actor still running (the Restart message is parked then).
                    self.held.insert(topic.clone(), Held::Backoff(shared));
                    myself.send_after(after, move || SupervisorMsg::Restart(topic));
                }
            }
            Decision::GiveUp { until } => {
                metrics::counter!("starling_topic_restarts_given_up_total").increment(1);
                tracing::error!(topic = %topic, error, max_restarts = policy.max_restarts, window_s = policy.window.as_secs(), cool_down_s = policy.cool_down.as_secs(), "topic actor keeps failing; stopped until a later use after the cool-down");
                self.restarts.remove(&topic);
                self.held.insert(topic.clone(), Held::GaveUp { until });
                // Its subscribers learn it from their resubscription, which is refused.
                tell_resubscribe(&topic, &shared);
            }
        }
    }

    async fn restart(&mut self, sup: ActorCell, topic: TopicName, shared: Arc<TopicShared>) {
        tell_resubscribe(&topic, &shared);
        if let Err(e) = self.spawn(sup, topic.clone(), shared).await {
            tracing::error!(topic = %topic, error = %e, "topic actor could not restart");
        }
    }
}

// Local only: never sent to another node (see `cluster::router`).
impl ractor::Message for SupervisorMsg {}

impl SupervisorState {
    /// What this node should run for `topic` now.
    fn role(&self, topic: &TopicName) -> Result<Role, TopicError> {
        match self.ctx.cluster.owner(topic.as_str()) {
            // No leader known (an election, or this node is starting): callers retry.
            None => Err(TopicError::Moving),
            Some(owner) if owner == self.ctx.cluster.me() => Ok(Role::Owner),
            Some(owner) => Ok(Role::Follower(owner)),
        }
    }

    /// Stops `owner` (if any, for `reason`) in a task of its own, so that the mailbox keeps
    /// serving other topics meanwhile. Until it is done, messages about `topic` wait (see
    /// [`SupervisorMsg::Stopped`]): a node never has two writers of a topic.
    fn stop_off_mailbox(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        topic: TopicName,
        owner: Option<ActorRef<TopicMsg>>,
        reason: &'static str,
    ) {
        self.stopping.entry(topic.clone()).or_default().tasks += 1;
        let sup = myself.clone();
        tokio::spawn(async move {
            if let Some(actor) = owner {
                stop_for_sure(&actor, reason).await;
                tracing::debug!(topic = %topic, reason, "topic actor stopped");
            }
            let _ = sup.cast(SupervisorMsg::Stopped(topic));
        });
    }

    /// Stops every actor whose role changed (the shard's leader moved), all at once. When a
    /// member joined (or came back), every follower is restarted too: an owner that lost
    /// the connection to this node meanwhile has dropped it as a follower.
    fn rebalance(&mut self, myself: &ActorRef<SupervisorMsg>, joined: bool) {
        let running: Vec<(TopicName, TopicHandle)> = self
            .registry
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect();
        let mut moved = 0;
        for (topic, h) in running {
            let follower = matches!(h.role, Role::Follower(_));
            if (joined && follower) || self.role(&topic).ok() != Some(h.role.clone()) {
                self.registry.remove(&topic);
                self.by_actor.remove(&h.actor.get_id());
                // A follower too is stopped before the topic is handed out again: its
                // `Unfollow` must reach the owner before the new follower's `Follow`.
                self.stop_off_mailbox(myself, topic, Some(h.actor), "placement changed");
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "topics moved after a leadership or membership change"
            );
        }
    }
}

/// Stops an actor and waits for it; one that does not stop in time (stuck waiting for its shard) is
/// killed, so that a node never runs two actors of one topic.
async fn stop_for_sure(actor: &ActorRef<TopicMsg>, reason: &str) {
    if actor
        .stop_and_wait(Some(reason.into()), Some(RETIRE_TIMEOUT))
        .await
        .is_err()
    {
        tracing::warn!(reason, "topic actor did not stop in time; killing it");
        let _ = actor.kill_and_wait(Some(RETIRE_TIMEOUT)).await;
    }
}

/// Asks the supervisor to rebalance after every membership or ownership change, until
/// shutdown. Joins are detected here, view by view, so that a member that went down and
/// came back between two rebalances is not missed.
pub fn follow_membership(
    sup: ActorRef<SupervisorMsg>,
    cluster: &Cluster,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut view = cluster.watch();
    let up = |v: &View| v.up().map(str::to_string).collect::<BTreeSet<String>>();
    let mut last = up(&view.borrow());
    let mut owners = cluster.owner_changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(changed) = async { match owners.as_mut() {
                    Some(o) => Some(o.changed().await),
                    None => std::future::pending().await,
                } } => {
                    if changed.is_err() {
                        owners = None;
                        continue;
                    }
                    if sup.cast(SupervisorMsg::Rebalance { joined: false }).is_err() {
                        return;
                    }
                }
                changed = view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = up(&view.borrow_and_update());
                    let joined = now.difference(&last).next().is_some();
                    last = now;
                    if sup.cast(SupervisorMsg::Rebalance { joined }).is_err() {
                        return;
                    }
                }
                _ = shutdown.wait() => return,
            }
        }
    })
}
