//! Consumers: acked, retried, at-least-once delivery. The window (position, in-flight
//! messages, redelivery schedule) is a pure state machine in [`window`]; a [`group::Group`]
//! adds the connections sharing one consumer; the topic actor owns the groups.

pub mod group;
pub mod options;
pub mod stored;
pub mod window;

/// An ack, cumulative ack or nack from a client.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum AckRequest {
    Offsets(Vec<u64>),
    Upto(u64),
    Nack { offsets: Vec<u64>, delay_ms: u64 },
}

/// What an ack request did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct AckReport {
    /// Offsets newly acked (or nacked).
    pub done: usize,
    /// Offsets that were already acked or dead-lettered (ignored).
    pub already: usize,
}

/// What `GET /v1/topics/{topic}/consumers/{name}` (and `PUT`) shows.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ConsumerInfo {
    pub ack_floor: u64,
    pub next: u64,
    pub pending: usize,
    pub in_flight: usize,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub trimmed: u64,
    pub members: usize,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_inflight: usize,
    pub backoff_ms: Vec<u64>,
}

/// What a member learns when it joins.
#[derive(Clone, Debug)]
pub struct Joined {
    pub epoch: std::sync::Arc<str>,
    pub ack_floor: u64,
    pub first: u64,
    pub head: u64,
}
