//! The topic supervisor: spawns a topic actor the first time a topic is used, and restarts
//! one that failed, from its log. A restart loses no acknowledged message (the log has them)
//! and no subscription (every subscriber is told to resume from its cursor).
//!
//! Lookups go through a read-mostly [`TopicRegistry`]; only a miss costs a message to the
//! supervisor, which is the one writer of the registry.

use super::actor::{tell_resubscribe, TopicActor, TopicArgs, TopicContext};
use super::{TopicMsg, TopicShared};
use crate::protocol::{ApiError, TopicName};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A running topic actor and the state that survives it.
#[derive(Clone)]
pub struct TopicHandle {
    pub actor: ActorRef<TopicMsg>,
    pub shared: Arc<TopicShared>,
}

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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub enum SupervisorMsg {
    /// The running actor of a topic, spawned if needed.
    Get(TopicName, RpcReplyPort<Result<TopicHandle, ApiError>>),
    /// An idle topic actor asks to be retired.
    Retire(TopicName, ActorId),
}

pub struct TopicSupervisor;

/// How long retiring an idle topic actor may take.
const RETIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SupervisorState {
    ctx: TopicContext,
    registry: TopicRegistry,
    by_actor: HashMap<ActorId, TopicName>,
}

impl TopicSupervisor {
    /// Finds or spawns the actor of `topic`.
    pub async fn handle(
        sup: &ActorRef<SupervisorMsg>,
        registry: &TopicRegistry,
        topic: &TopicName,
    ) -> Result<TopicHandle, ApiError> {
        if let Some(h) = registry.get(topic) {
            return Ok(h);
        }
        match sup
            .call(|r| SupervisorMsg::Get(topic.clone(), r), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(ApiError::unavailable("node is shutting down")),
        }
    }
}

impl Actor for TopicSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (TopicContext, TopicRegistry);

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        (ctx, registry): Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            registry,
            by_actor: HashMap::new(),
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
                let result = match state.registry.get(&topic) {
                    Some(h) => Ok(h),
                    None => {
                        state
                            .spawn(myself.get_cell(), topic, TopicShared::new())
                            .await
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Retire(topic, id) => {
                let Some(h) = state
                    .registry
                    .get(&topic)
                    .filter(|h| h.actor.get_id() == id)
                else {
                    return Ok(());
                };
                // Out of the registry first, then stopped (and waited for) before this
                // supervisor hands out the topic again: never two writers for one topic.
                state.registry.remove(&topic);
                state.by_actor.remove(&id);
                let _ = h
                    .actor
                    .stop_and_wait(Some("idle".into()), Some(RETIRE_TIMEOUT))
                    .await;
                tracing::debug!(topic = %topic, "idle topic retired");
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
                metrics::counter!("starling_topic_restarts_total").increment(1);
                tracing::error!(topic = %topic, error = %err, "topic actor failed; restarting from its log");
                let shared = state
                    .registry
                    .get(&topic)
                    .map(|h| h.shared)
                    .unwrap_or_else(TopicShared::new);
                state.registry.remove(&topic);
                tell_resubscribe(&topic, &shared);
                if let Err(e) = state.spawn(myself.get_cell(), topic.clone(), shared).await {
                    tracing::error!(topic = %topic, error = %e, "topic actor could not restart");
                }
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
    ) -> Result<TopicHandle, ApiError> {
        let args = TopicArgs {
            topic: topic.clone(),
            ctx: self.ctx.clone(),
            shared: shared.clone(),
        };
        match Actor::spawn_linked(None, TopicActor, args, sup).await {
            Ok((actor, _)) => {
                let handle = TopicHandle { actor, shared };
                self.by_actor.insert(handle.actor.get_id(), topic.clone());
                self.registry.insert(topic, handle.clone());
                Ok(handle)
            }
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, "cannot start topic actor");
                Err(ApiError::unavailable("topic is unavailable; try again"))
            }
        }
    }
}

// Local only: never sent to another node (see `cluster::router`).
impl ractor::Message for SupervisorMsg {}
