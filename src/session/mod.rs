//! Sessions: one [`actor::SessionActor`] per client connection (a WebSocket, an SSE stream,
//! a long poll), supervised by [`supervisor::SessionSupervisor`]. A session owns its
//! subscriptions and its bounded [`outbound::Outbound`] queue; transports are thin adapters
//! that turn frames and requests into [`SessionMsg`]s and drain the queue.

pub mod actor;
pub mod outbound;
pub mod poll;
mod replay;
mod subscribe;
pub mod supervisor;

use crate::consumer::options::ConsumerOptions;
use crate::consumer::AckRequest;
use crate::protocol::frames::{Position, ReqId};
use crate::protocol::{ApiError, TopicName};
use crate::topic::SubId;
use bytes::Bytes;
use ractor::RpcReplyPort;

/// Which transport a session serves (a metrics label, and how its frames are rendered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Sse,
    Poll,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Messages of a session actor.
pub enum SessionMsg {
    /// Subscribe; the outcome goes to `reply` if given, else to the outbound queue.
    Subscribe {
        topic: TopicName,
        position: Position,
        consumer: Option<String>,
        options: ConsumerOptions,
        req: Option<ReqId>,
        reply: Option<RpcReplyPort<Result<(), ApiError>>>,
    },
    Unsubscribe {
        topic: TopicName,
        req: Option<ReqId>,
    },
    Publish {
        topic: TopicName,
        data: Bytes,
        id: Option<String>,
        req: Option<ReqId>,
    },
    /// A consumer ack or nack over this connection; errors go to the outbound queue.
    Ack {
        topic: TopicName,
        consumer: String,
        ack: AckRequest,
        req: Option<ReqId>,
    },
    Ping {
        req: Option<ReqId>,
    },
    /// A long poll (the whole life of a poll session).
    Poll(
        poll::PollRequest,
        RpcReplyPort<Result<poll::PollResponse, ApiError>>,
    ),
    /// The topic actor restarted: resume subscription `sub` from its cursor.
    Resubscribe {
        topic: TopicName,
        sub: SubId,
    },
    /// Replay of subscription `sub` could not read the log.
    ReplayFailed {
        topic: TopicName,
        sub: SubId,
    },
}

// Local only: never sent to another node (see `cluster::router`).
impl ractor::Message for SessionMsg {}
