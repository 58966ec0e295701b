//! Delivery: what topics and consumer groups hand to client connections, below both
//! `topic` and `session`. A connection's byte-bounded [`outbound::Outbound`] queue and its
//! frames, the message envelope serialized once per message ([`envelope::Delivery`]), and
//! the narrow port a session offers to the topics it subscribes to ([`Subscriber`]: queue
//! frames, or ask it to subscribe again). Nothing here knows actors or transports.

pub mod envelope;
pub mod outbound;

use crate::protocol::TopicName;
use outbound::Outbound;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Identifies one subscription of one session, unique within the cluster (a random
/// per-process base; see `session::supervisor`).
pub type SubId = u64;

/// What a topic may ask of the session behind a subscription, besides queueing frames.
pub trait SessionPort: Send + Sync {
    /// The topic actor serving subscription `sub` of `topic` went away (restarted, retired,
    /// changed role): subscribe again from the subscription's cursor.
    fn resubscribe(&self, topic: &TopicName, sub: SubId);
}

/// A subscription as a topic sees it: where to queue frames, how far it got, and the
/// session to tell when it must subscribe again.
#[derive(Clone)]
pub struct Subscriber {
    pub id: SubId,
    pub outbound: Arc<Outbound>,
    /// Last offset pushed to this subscriber (by the topic actor when live, by the
    /// session's replay before that).
    pub cursor: Arc<AtomicU64>,
    pub session: Arc<dyn SessionPort>,
}
