//! Sessions: one [`actor::SessionActor`] per client connection (a WebSocket, an SSE stream,
//! a long poll), supervised by [`supervisor::SessionSupervisor`]. A session owns its
//! subscriptions and its bounded [`crate::delivery::outbound::Outbound`] queue; transports are thin adapters
//! that turn frames and requests into [`SessionMsg`]s and drain the queue.

pub mod actor;
pub mod poll;
mod replay;
mod subscribe;
pub mod supervisor;

use crate::delivery::outbound::OutFrame;
use crate::delivery::{SessionPort, SubId};
use crate::protocol::consumer::AckRequest;
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::frames::{Position, ReqId};
use crate::protocol::{ApiError, TopicName};
use bytes::Bytes;
use ractor::{ActorRef, RpcReplyPort};

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

/// Counts a batch the transport is about to write: deliveries by transport and, for live
/// ones, publish-to-deliver latency. Once per batch, so the metric handles are looked up
/// once rather than per message.
pub fn record_deliveries(transport: Transport, frames: &[OutFrame]) {
    let mut delivered = 0;
    let latency = metrics::histogram!("starling_publish_to_deliver_seconds");
    for frame in frames {
        if let OutFrame::Message(d) = frame {
            delivered += 1;
            if let Some(t) = d.received {
                latency.record(t.elapsed().as_secs_f64());
            }
        }
    }
    if delivered > 0 {
        metrics::counter!("starling_messages_delivered_total", "transport" => transport.label())
            .increment(delivered);
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

/// A session is told to subscribe again through its actor.
impl SessionPort for ActorRef<SessionMsg> {
    fn resubscribe(&self, topic: &TopicName, sub: SubId) {
        let _ = self.cast(SessionMsg::Resubscribe {
            topic: topic.clone(),
            sub,
        });
    }
}
