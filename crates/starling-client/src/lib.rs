//! A typed async client for Starling nodes, as the project's own commands use it
//! (`starling pub`/`sub`, `starling bench`, `starling chaos`, `starling up`).
//!
//! - [`Client`]: HTTP against one node — publish with an idempotency id, long poll, the SSE
//!   stream ([`Events`]), topic, consumer and cluster info, readiness.
//! - [`WsConn`]: one WebSocket — subscribe (stream or consumer, resumable), publish, ack,
//!   nack, ping, and the server's frames typed as [`Frame`].
//! - [`formation`]: whether a set of nodes has formed a cluster.
//!
//! The wire format is the project's client protocol (PROTOCOL.md); the types here read
//! what the project's tools need and ignore the rest.

#![forbid(unsafe_code)]

mod error;
pub mod formation;
mod http;
mod sse;
mod types;
mod ws;

pub use error::Error;
pub use http::{Client, Events, Poll};
pub use sse::{SseEvent, SseParser};
pub use types::{
    ClusterInfo, ConsumerInfo, Envelope, ErrorFrame, Frame, Member, PollReply, Published,
    Subscribed, TopicInfo,
};
pub use ws::{ws_url, Subscribe, Ws, WsConn};

/// A topic name as one URL path segment.
pub fn topic_path(topic: &str) -> String {
    percent_encoding::utf8_percent_encode(topic, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where a stream resumes: the last `(epoch, offset)` delivered or announced.
pub type Resume = Option<(String, u64)>;
