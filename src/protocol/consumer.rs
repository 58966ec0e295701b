//! Consumer wire types: the settings a subscription, poll or `PUT` names, acks, and what a
//! consumer reports. Checking settings against the configured bounds is `consumer::options`.

/// What a subscription, poll or `PUT` asked for; `None` leaves a setting as it is (or takes
/// the configured default for a new group).
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ConsumerOptions {
    pub ack_wait_ms: Option<u64>,
    pub max_deliver: Option<u32>,
    pub max_inflight: Option<usize>,
    pub backoff_ms: Option<Vec<u64>>,
}

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
