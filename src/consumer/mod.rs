//! Consumers: acked, retried, at-least-once delivery. The window (position, in-flight
//! messages, redelivery schedule) is a pure state machine in [`window`]; a [`group::Group`]
//! adds the connections sharing one consumer; the topic actor owns the groups.

pub mod group;
pub mod options;
pub mod stored;
pub mod window;

/// What a member learns when it joins.
#[derive(Clone, Debug)]
pub struct Joined {
    pub epoch: std::sync::Arc<str>,
    pub ack_floor: u64,
    pub first: u64,
    pub head: u64,
}
