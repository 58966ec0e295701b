//! Subscribing a session: a stream subscription (registered with the topic actor, announced,
//! then replayed up to the live head) or a consumer subscription (a member of the topic's
//! consumer group).

use super::actor::SessionState;
use super::replay::Replay;
use super::SessionMsg;
use crate::delivery::outbound::{OutFrame, Subscribed};
use crate::delivery::{SubId, Subscriber};
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::frames::Position;
use crate::protocol::{ApiError, TopicName};
use crate::topic::error::TopicError;
use crate::topic::handle::{MemberJoin, TopicHandle};
use crate::topic::service::ROUTE_PATIENCE;
use ractor::ActorRef;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

static NEXT_SUB: AtomicU64 = AtomicU64::new(1);

/// A subscription id unique across the cluster (a consumer member is known by it on the
/// topic's owner too): a random per-process base plus a counter.
fn next_sub_id() -> SubId {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0 & !0xffff_ffff);
    base | (NEXT_SUB.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
}

pub(super) enum SubKind {
    Stream { replay: JoinHandle<()> },
    Consumer { name: String },
}

impl SubKind {
    /// After `stop_replay`: a finished replay (a handle is awaited only once).
    pub fn finish_replay(&mut self) {
        if let SubKind::Stream { replay } = self {
            *replay = tokio::spawn(async {});
        }
    }
}

/// One subscription of a session.
pub(super) struct Sub {
    pub id: SubId,
    pub topic: TopicHandle,
    pub cursor: Arc<AtomicU64>,
    pub epoch: Arc<str>,
    pub kind: SubKind,
    /// Set while a resubscription keeps failing: when it first failed.
    pub retry_since: Option<std::time::Instant>,
}

impl Sub {
    /// Stops a stream subscription's replay and waits for it (it stops at its next await).
    pub async fn stop_replay(&mut self) {
        if let SubKind::Stream { replay } = &mut self.kind {
            replay.abort();
            let _ = replay.await;
        }
    }

    /// Leaves the topic and waits until the topic actor dropped the subscription, so that
    /// nothing follows a reply.
    pub async fn leave(mut self) {
        self.stop_replay().await;
        match self.kind {
            SubKind::Stream { .. } => self.topic.unsubscribe(self.id).await,
            SubKind::Consumer { name } => self.topic.leave(name, self.id).await,
        }
    }

    /// Leaves without waiting (from `Drop`).
    pub fn leave_now(&self) {
        match &self.kind {
            SubKind::Stream { replay } => {
                replay.abort();
                self.topic.unsubscribe_now(self.id);
            }
            SubKind::Consumer { name } => self.topic.leave_now(name.clone(), self.id),
        }
    }
}

impl SessionState {
    /// Checks that `topic` may be added to this session, starts its topic actor, and makes
    /// the new subscription's identity.
    async fn prepare(
        &self,
        myself: &ActorRef<SessionMsg>,
        topic: &TopicName,
    ) -> Result<(TopicHandle, Subscriber), ApiError> {
        self.check_room(topic)?;
        let handle = self.topics.handle(topic).await?;
        let subscriber = Subscriber {
            id: next_sub_id(),
            outbound: self.outbound.clone(),
            cursor: Arc::new(AtomicU64::new(0)),
            session: Arc::new(myself.clone()),
        };
        Ok((handle, subscriber))
    }

    fn check_room(&self, topic: &TopicName) -> Result<(), ApiError> {
        if self.subs.contains_key(topic) {
            return Err(ApiError::bad_request(format!(
                "already subscribed to {topic}"
            )));
        }
        if self.subs.len() >= self.limits.max_subscriptions_per_connection {
            return Err(ApiError::bad_request(format!(
                "a connection may hold at most {} subscriptions",
                self.limits.max_subscriptions_per_connection
            )));
        }
        Ok(())
    }

    /// Registers with the topic actor, announces the subscription (a `resumed` one only if
    /// it lost its position), and starts its replay.
    pub(super) async fn subscribe_stream(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        topic: TopicName,
        position: Position,
        req: Option<&RawValue>,
        resumed: bool,
    ) -> Result<(), ApiError> {
        let mut moving = Moving::new();
        let (handle, id, cursor, info) = loop {
            let (handle, subscriber) = self.prepare(myself, &topic).await?;
            let (id, cursor) = (subscriber.id, subscriber.cursor.clone());
            match handle.subscribe(subscriber, position.clone()).await {
                Ok(info) => break (handle, id, cursor, info),
                Err(e) => moving.again(e).await?,
            }
        };
        if !resumed || !info.plan.recovered() {
            let frame = Subscribed {
                topic: topic.clone(),
                req: req.map(|r| r.to_owned()),
                epoch: info.epoch.clone(),
                first: info.first,
                head: info.head,
                plan: info.plan,
                consumer: None,
            };
            let _ = self.outbound.push(OutFrame::Subscribed(Box::new(frame)));
        }
        let replay = Replay {
            topic: topic.clone(),
            sub: id,
            epoch: info.epoch.clone(),
            topic_handle: handle.clone(),
            history: info.history.clone(),
            outbound: self.outbound.clone(),
            cursor: cursor.clone(),
            session: myself.clone(),
            batch_bytes: self.limits.max_outbound_queue_bytes / 4,
        };
        let task = tokio::spawn(replay.run(info.plan.start, info.head));
        let sub = Sub {
            id,
            topic: handle,
            cursor,
            epoch: info.epoch,
            kind: SubKind::Stream { replay: task },
            retry_since: None,
        };
        self.subs.insert(topic, sub);
        Ok(())
    }

    /// Joins consumer `name` of `topic` (created after `after`, or at the head, if new).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn subscribe_consumer(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        topic: TopicName,
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        req: Option<&RawValue>,
        resumed: bool,
    ) -> Result<(), ApiError> {
        let mut moving = Moving::new();
        let (handle, id, cursor, joined) = loop {
            let (handle, member) = self.prepare(myself, &topic).await?;
            let (id, cursor) = (member.id, member.cursor.clone());
            // The topic actor announces the subscription itself, so that it precedes every
            // delivery.
            let join = MemberJoin {
                name: name.clone(),
                member,
                options: options.clone(),
                after,
                announce: !resumed,
                req: req.map(|r| r.to_owned()),
            };
            match handle.join(join).await {
                Ok(joined) => break (handle, id, cursor, joined),
                Err(e) => moving.again(e).await?,
            }
        };
        let sub = Sub {
            id,
            topic: handle,
            cursor,
            epoch: joined.epoch,
            kind: SubKind::Consumer { name },
            retry_since: None,
        };
        self.subs.insert(topic, sub);
        Ok(())
    }
}

/// Retries of a subscription whose topic actor retired meanwhile (its node stopped leading
/// the topic's shard: it answers `Moving`): the topic is looked up again, as
/// `Topics::handle` does, for up to [`ROUTE_PATIENCE`], pausing 20 ms, doubling to 400 ms.
struct Moving {
    deadline: tokio::time::Instant,
    pause: std::time::Duration,
}

impl Moving {
    fn new() -> Moving {
        Moving {
            deadline: tokio::time::Instant::now() + ROUTE_PATIENCE,
            pause: std::time::Duration::from_millis(20),
        }
    }

    /// After `e`: Ok once it is time to try again, or `e` as the answer.
    async fn again(&mut self, e: TopicError) -> Result<(), ApiError> {
        if !matches!(e, TopicError::Moving)
            || tokio::time::Instant::now() + self.pause >= self.deadline
        {
            return Err(e.into());
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(std::time::Duration::from_millis(400));
        Ok(())
    }
}
