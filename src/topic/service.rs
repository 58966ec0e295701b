//! [`Topics`]: what sessions and HTTP handlers use to reach topic actors, with one retry when
//! a topic actor was restarted under them.

use super::supervisor::{SupervisorMsg, TopicHandle, TopicRegistry, TopicSupervisor};
use super::{PublishAck, TopicInfo, TopicMsg};
use crate::protocol::{ApiError, TopicName};
use crate::storage::TopicLog;
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// How long a call to a topic actor may take before the caller gives up with `unavailable`.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Topics {
    supervisor: ActorRef<SupervisorMsg>,
    registry: TopicRegistry,
    log: Arc<dyn TopicLog>,
}

fn gone() -> ApiError {
    ApiError::unavailable("topic is restarting; try again")
}

impl Topics {
    pub fn new(
        supervisor: ActorRef<SupervisorMsg>,
        registry: TopicRegistry,
        log: Arc<dyn TopicLog>,
    ) -> Topics {
        Topics {
            supervisor,
            registry,
            log,
        }
    }

    pub fn log(&self) -> &Arc<dyn TopicLog> {
        &self.log
    }

    /// The running actor of `topic`, started if needed.
    pub async fn handle(&self, topic: &TopicName) -> Result<TopicHandle, ApiError> {
        TopicSupervisor::handle(&self.supervisor, &self.registry, topic).await
    }

    /// Publishes and waits until the message is durable as configured.
    pub async fn publish(
        &self,
        topic: &TopicName,
        data: Bytes,
        id: Option<String>,
    ) -> Result<PublishAck, ApiError> {
        for _ in 0..2 {
            let h = self.handle(topic).await?;
            let (reply, rx) = tokio::sync::oneshot::channel();
            let msg = TopicMsg::Publish {
                data: data.clone(),
                id: id.clone(),
                reply,
            };
            if h.actor.cast(msg).is_err() {
                // The actor stopped between lookup and send: nothing was appended.
                tokio::task::yield_now().await;
                continue;
            }
            return match rx.await {
                Ok(r) => r,
                // The actor failed with the message in hand: its outcome is unknown; the
                // client retries with the same id, which is idempotent.
                Err(_) => Err(gone()),
            };
        }
        Err(gone())
    }

    /// The topic's info, or `None` if it never existed. Starts no actor for unknown topics.
    pub async fn info(&self, topic: &TopicName) -> Result<Option<TopicInfo>, ApiError> {
        if let Some(h) = self.registry.get(topic) {
            if let Ok(CallResult::Success(info)) =
                h.actor.call(TopicMsg::Info, Some(CALL_TIMEOUT)).await
            {
                return Ok(info.exists.then_some(info));
            }
        }
        match self.log.meta(topic.as_str()) {
            Ok(None) => Ok(None),
            Ok(Some(_)) => {
                let h = self.handle(topic).await?;
                match h.actor.call(TopicMsg::Info, Some(CALL_TIMEOUT)).await {
                    Ok(CallResult::Success(info)) => Ok(Some(info)),
                    _ => Err(gone()),
                }
            }
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, "reading topic meta failed");
                Err(ApiError::internal())
            }
        }
    }

    /// Number of topic actors running.
    pub fn active(&self) -> usize {
        self.registry.len()
    }
}

/// Calls a topic actor with the standard timeout, mapping failures to `unavailable`.
pub async fn call_topic<T: Send + 'static>(
    actor: &ActorRef<TopicMsg>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> TopicMsg,
) -> Result<T, ApiError> {
    match actor.call(msg, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(gone()),
    }
}
