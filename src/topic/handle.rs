//! [`TopicHandle`]: the one way other layers (sessions, HTTP handlers, the cluster's
//! inbound port) talk to a running topic actor. Each request is a typed method; the
//! messages themselves ([`TopicMsg`]) are built only inside `topic`.

use super::error::TopicError;
use super::{GoLive, PublishAck, Role, SubscribeInfo, TopicInfo, TopicMsg, TopicShared};
use crate::consumer::Joined;
use crate::delivery::envelope::Delivery;
use crate::delivery::{SubId, Subscriber};
use crate::protocol::consumer::{AckReport, AckRequest, ConsumerInfo, ConsumerOptions};
use crate::protocol::frames::{Position, ReqId};
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a call to a topic actor may take before the caller gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running topic actor and the state that survives it.
#[derive(Clone)]
pub struct TopicHandle {
    pub(super) actor: ActorRef<TopicMsg>,
    pub(super) shared: Arc<TopicShared>,
    pub(super) role: Role,
}

/// A connection joining a consumer group.
pub struct MemberJoin {
    pub name: String,
    pub member: Subscriber,
    pub options: ConsumerOptions,
    /// Where a new group starts (the head if `None`); an existing group keeps its place.
    pub after: Option<u64>,
    /// Whether the topic actor announces the subscription in the member's queue, before
    /// any delivery, echoing `req`.
    pub announce: bool,
    pub req: Option<ReqId>,
}

impl TopicHandle {
    /// The durable head, for long polls to wait on.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> TopicMsg,
    ) -> Result<T, TopicError> {
        match self.actor.call(msg, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            // The actor was gone before it got the message (it retired, e.g. its node
            // stopped leading the shard): nothing happened, look the topic up again.
            Err(_) => Err(TopicError::Moving),
            // It took the message and stopped (or hung) before answering: the outcome is
            // unknown.
            Ok(CallResult::SenderError) | Ok(CallResult::Timeout) => Err(TopicError::Restarting),
        }
    }

    /// Hands a message to the actor without waiting; false if it is gone.
    pub(super) fn cast(&self, msg: TopicMsg) -> bool {
        self.actor.cast(msg).is_ok()
    }

    /// Publishes on this actor (an owner). `None` if the actor stopped before it took the
    /// publish: nothing was appended, and the caller may look the topic up again.
    pub(super) async fn publish(
        &self,
        data: Bytes,
        id: Option<String>,
    ) -> Option<Result<PublishAck, TopicError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if !self.cast(TopicMsg::Publish { data, id, reply }) {
            return None;
        }
        // A dropped reply: the actor failed with the publish in hand, so its outcome is
        // unknown; a retry with the same id is idempotent.
        Some(rx.await.unwrap_or(Err(TopicError::Restarting)))
    }

    /// Registers `sub` to catch up from `position`; on a failure the actor is told to let
    /// go of it, in case it registers it later.
    pub async fn subscribe(
        &self,
        sub: Subscriber,
        position: Position,
    ) -> Result<SubscribeInfo, TopicError> {
        let id = sub.id;
        let r = self
            .call(|reply| TopicMsg::Subscribe {
                sub,
                position,
                reply,
            })
            .await
            .and_then(|r| r);
        if r.is_err() {
            self.unsubscribe_now(id);
        }
        // A subscription that an actor took and then stopped with is gone with it: trying
        // again (under a new id) is safe.
        r.map_err(|e| match e {
            TopicError::Restarting => TopicError::Moving,
            other => other,
        })
    }

    /// Asks to make `sub` live once its replay reached `next`.
    pub async fn go_live(&self, sub: SubId, next: u64) -> Result<GoLive, TopicError> {
        self.call(|reply| TopicMsg::GoLive { sub, next, reply })
            .await
    }

    /// Drops a subscription and waits until the actor let go of it.
    pub async fn unsubscribe(&self, sub: SubId) {
        let _ = self
            .call(|reply| TopicMsg::Unsubscribe {
                sub,
                reply: Some(reply),
            })
            .await;
    }

    /// Drops a subscription without waiting.
    pub fn unsubscribe_now(&self, sub: SubId) {
        self.cast(TopicMsg::Unsubscribe { sub, reply: None });
    }

    pub async fn info(&self) -> Result<TopicInfo, TopicError> {
        self.call(TopicMsg::Info).await
    }

    /// Joins a consumer group; on a failure the actor is told to let go of the member.
    pub async fn join(&self, j: MemberJoin) -> Result<Joined, TopicError> {
        let (name, id) = (j.name.clone(), j.member.id);
        let r = self
            .call(|reply| TopicMsg::ConsumerJoin {
                name: j.name,
                member: j.member,
                options: j.options,
                after: j.after,
                announce: j.announce,
                req: j.req,
                reply,
            })
            .await
            .and_then(|r| r);
        if r.is_err() {
            self.leave_now(name, id);
        }
        r
    }

    /// Member `member` leaves consumer `name`; waits until it is gone.
    pub async fn leave(&self, name: String, member: SubId) {
        let _ = self
            .call(|reply| TopicMsg::ConsumerLeave {
                name,
                member,
                reply: Some(reply),
            })
            .await;
    }

    /// Member `member` leaves consumer `name`, without waiting.
    pub fn leave_now(&self, name: String, member: SubId) {
        self.cast(TopicMsg::ConsumerLeave {
            name,
            member,
            reply: None,
        });
    }

    /// Acks or nacks; answered once the new position is durable.
    pub async fn ack(&self, name: String, ack: AckRequest) -> Result<AckReport, TopicError> {
        self.call(|reply| TopicMsg::ConsumerAck {
            name,
            ack,
            reply: Some(reply),
        })
        .await?
    }

    /// A pull: leases up to `limit` messages of consumer `name`.
    pub async fn lease(
        &self,
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, TopicError> {
        self.call(|reply| TopicMsg::ConsumerLease {
            name,
            options,
            after,
            limit,
            reply,
        })
        .await?
    }

    /// Consumer `name`'s info, `None` if it does not exist.
    pub async fn consumer_info(&self, name: String) -> Result<Option<ConsumerInfo>, TopicError> {
        self.call(|reply| TopicMsg::ConsumerInfo { name, reply })
            .await
    }

    /// Changes the settings of consumer `name`; answers its info once durable.
    pub async fn configure(
        &self,
        name: String,
        options: ConsumerOptions,
    ) -> Result<ConsumerInfo, TopicError> {
        self.call(|reply| TopicMsg::ConsumerConfigure {
            name,
            options,
            reply,
        })
        .await?
    }

    /// (Owner) node `from` follows; answered with where the topic stands.
    pub(super) async fn follow(&self, from: String) -> Result<super::Followed, TopicError> {
        self.call(|reply| TopicMsg::Follow { from, reply }).await?
    }
}
