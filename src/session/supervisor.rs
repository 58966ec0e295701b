//! The session supervisor: parent of every session actor. A session that fails is logged
//! and counted, never restarted (its connection is gone with it: the client reconnects and
//! resumes by offset), and never affects another session.

use super::actor::{SessionActor, SessionArgs};
use super::{SessionMsg, Transport};
use crate::config::LimitsConfig;
use crate::delivery::outbound::Outbound;
use crate::protocol::ApiError;
use crate::shutdown::Shutdown;
use crate::topic::service::Topics;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;

pub struct SessionSupervisor;

impl Actor for SessionSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            metrics::counter!("starling_session_failures_total").increment(1);
            tracing::error!(session = %cell.get_id(), error = %err, "session failed; its connection is closed");
        }
        Ok(())
    }
}

/// Ends a session when dropped: a request handler that hyper drops (the client went away)
/// still ends its session, even one in the middle of a long poll (hence kill, not stop,
/// which would wait for the poll to finish).
pub struct StopOnDrop(pub ActorRef<SessionMsg>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Starts sessions under the supervisor.
#[derive(Clone)]
pub struct Sessions {
    supervisor: ActorRef<()>,
    topics: Topics,
    limits: LimitsConfig,
    shutdown: Shutdown,
}

impl Sessions {
    pub fn new(
        supervisor: ActorRef<()>,
        topics: Topics,
        limits: LimitsConfig,
        shutdown: Shutdown,
    ) -> Sessions {
        Sessions {
            supervisor,
            topics,
            limits,
            shutdown,
        }
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Starts a session for a new connection.
    pub async fn start(
        &self,
        transport: Transport,
        outbound: Arc<Outbound>,
    ) -> Result<ActorRef<SessionMsg>, ApiError> {
        if self.shutdown.is_triggered() {
            return Err(ApiError::unavailable("node is shutting down"));
        }
        let args = SessionArgs {
            transport,
            outbound,
            topics: self.topics.clone(),
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
        };
        match Actor::spawn_linked(None, SessionActor, args, self.supervisor.get_cell()).await {
            Ok((session, _)) => Ok(session),
            Err(e) => {
                tracing::error!(error = %e, "cannot start session");
                Err(ApiError::unavailable("cannot start a session; try again"))
            }
        }
    }
}
