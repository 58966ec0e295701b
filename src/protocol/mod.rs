//! Wire types of the client protocol (`PROTOCOL.md`): topic names, error codes, WebSocket
//! frames, publish data checks and SSE event ids; and the hash every build agrees on
//! ([`placement`]). Pure code: no sockets, no actors.

pub mod consumer;
pub mod data;
pub mod error;
pub mod frames;
pub mod placement;
pub mod publish_id;
pub mod resume;
pub mod sse_id;
pub mod topic;

pub use error::{ApiError, ErrorCode};
pub use topic::TopicName;
