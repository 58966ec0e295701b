//! Topics: one [`actor::TopicActor`] per active topic sequences, persists and fans out; the
//! [`supervisor::TopicSupervisor`] spawns them on demand and restarts a crashed one from its
//! log. Delivery logic only; no transport types here.

pub(crate) mod actor;
mod audience;
mod consumers;
mod dead_letters;
pub mod error;
pub(crate) mod follower;
pub mod handle;
pub mod history;
mod relay;
mod remote;
pub(crate) mod restart;
pub mod service;
pub mod supervisor;
mod writer;

use crate::consumer::Joined;
use crate::delivery::envelope::Delivery;
use crate::delivery::{SessionPort, SubId, Subscriber};
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::consumer::{AckReport, AckRequest, ConsumerInfo};
use crate::protocol::frames::{Position, ReqId};
use crate::protocol::resume::ResumePlan;
use bytes::Bytes;
use error::TopicError;
use ractor::RpcReplyPort;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// State of a topic that outlives a crash of its actor.
pub struct TopicShared {
    /// Every subscription, live or catching up: told to resubscribe if the actor restarts.
    pub subscribers: Mutex<HashMap<SubId, Arc<dyn SessionPort>>>,
    /// The durable head, for long polls.
    pub head: watch::Sender<u64>,
}

impl TopicShared {
    pub fn new() -> Arc<TopicShared> {
        Arc::new(TopicShared {
            subscribers: Mutex::new(HashMap::new()),
            head: watch::Sender::new(0),
        })
    }

    pub fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<SubId, Arc<dyn SessionPort>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reply to a publish, sent once the message is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishAck {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub id: String,
    pub duplicate: bool,
}

pub type PublishReply = oneshot::Sender<Result<PublishAck, TopicError>>;

/// What a subscriber learns when it subscribes.
#[derive(Clone, Debug)]
pub struct SubscribeInfo {
    pub epoch: Arc<str>,
    pub first: u64,
    /// The durable head: replay reads up to here, then asks to go live.
    pub head: u64,
    pub plan: ResumePlan,
    /// Where replay reads from.
    pub history: history::History,
}

/// The answer to "may I go live at `next`?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoLive {
    Live,
    /// More became durable meanwhile; replay up to `head` first.
    Behind {
        head: u64,
    },
}

/// What `GET /v1/topics/{topic}` shows.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub epoch: Arc<str>,
    pub first: u64,
    pub head: u64,
    pub subscribers: usize,
    /// False while nothing was ever published (the topic does not exist yet).
    pub exists: bool,
    /// Where retained messages are read from.
    pub history: history::History,
    /// The node that owns the topic.
    pub owner: String,
}

/// Where a topic stands, as its owner answers a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    pub epoch: String,
    pub first: u64,
    pub head: u64,
    /// False while nothing was ever published.
    pub exists: bool,
}

/// What a topic actor is on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sequences, persists and fans out to this node and every follower node.
    Owner,
    /// Follows the owner node named here.
    Follower(String),
}

/// Messages of a topic actor.
pub(crate) enum TopicMsg {
    Publish {
        data: Bytes,
        id: Option<String>,
        reply: PublishReply,
    },
    Subscribe {
        sub: Subscriber,
        position: Position,
        reply: RpcReplyPort<Result<SubscribeInfo, TopicError>>,
    },
    GoLive {
        sub: SubId,
        next: u64,
        reply: RpcReplyPort<GoLive>,
    },
    /// Drop a subscription; `reply` (if any) is answered once it is gone.
    Unsubscribe {
        sub: SubId,
        reply: Option<RpcReplyPort<()>>,
    },
    Info(RpcReplyPort<TopicInfo>),
    /// Appends every publish staged since the last commit, as one batch (the actor sends
    /// this to itself when the first publish is staged, so it comes after every publish
    /// already queued).
    Commit,
    /// The entry with every publish up to `upto` is committed and applied here (or not).
    Durable {
        upto: u64,
        result: Result<(), writer::WriteError>,
    },
    /// A retention entry was applied: `first` may have moved.
    Retained,
    /// Periodic retention.
    Tick,
    /// A connection joins consumer `name` (created at `after`, or the head, if new; an
    /// existing one keeps its settings). The topic actor announces the subscription in the member's queue (before any
    /// delivery) when `announce` is set, echoing `req`.
    ConsumerJoin {
        name: String,
        member: Subscriber,
        options: ConsumerOptions,
        after: Option<u64>,
        announce: bool,
        req: Option<ReqId>,
        reply: RpcReplyPort<Result<Joined, TopicError>>,
    },
    /// A member leaves; `reply` (if any) is answered once it is gone.
    ConsumerLeave {
        name: String,
        member: SubId,
        reply: Option<RpcReplyPort<()>>,
    },
    /// Acks or nacks; `reply` (if any) is answered once the new position is durable.
    ConsumerAck {
        name: String,
        ack: AckRequest,
        reply: Option<RpcReplyPort<Result<AckReport, TopicError>>>,
    },
    /// A pull: lease up to `limit` messages for `ack_wait`.
    ConsumerLease {
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<Delivery>, TopicError>>,
    },
    ConsumerInfo {
        name: String,
        reply: RpcReplyPort<Option<ConsumerInfo>>,
    },
    /// Changes the settings of the existing consumer `name` (`PUT .../consumers/{name}`).
    ConsumerConfigure {
        name: String,
        options: ConsumerOptions,
        reply: RpcReplyPort<Result<ConsumerInfo, TopicError>>,
    },
    /// Consumer deadlines and redeliveries.
    ConsumerTick,
    /// (Owner) a dead letter of consumer `consumer` is durable in the dead-letter topic: it
    /// leaves the group's outbox.
    DeadLettered {
        consumer: String,
        offset: u64,
        epoch: Arc<str>,
    },
    /// (Owner) node `from` follows: every durable message is cast to it from now on.
    Follow {
        from: String,
        reply: RpcReplyPort<Result<Followed, TopicError>>,
    },
    /// (Owner) node `from` stopped following.
    Unfollow {
        from: String,
    },
    /// (Follower) durable messages from the owner, in offset order, as it rendered them.
    Deliver {
        epoch: String,
        first: u64,
        messages: Vec<crate::delivery::envelope::Envelope>,
    },
    /// (Follower) the owner stopped owning `epoch`.
    OwnerGone {
        epoch: String,
    },
    /// (Follower) frames from the owner for member `member` (of consumer `name`) on this
    /// node.
    MemberFrames {
        name: String,
        member: SubId,
        frames: Vec<crate::delivery::outbound::OutFrame>,
    },
    /// (Follower) the owner let go of consumer member `member`.
    MemberGone {
        member: SubId,
    },
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

// Local only: never sent to another node (see `cluster::router`).
impl ractor::Message for TopicMsg {}
