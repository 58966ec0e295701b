//! What nodes say to each other, inside the router's two remotable messages: a request
//! ([`Call`] → [`Reply`]) or a one-way [`Cast`]. Encoded with bincode; topics travel as
//! names and are validated again on arrival.

use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::consumer::{AckReport, AckRequest, ConsumerInfo};
use crate::protocol::{ApiError, ErrorCode};
use crate::storage::StoredMessage;
use bincode::{Decode, Encode};

/// Why a node could not be reached or a message not decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot encode a cluster message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode a cluster message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// The largest message a node encodes or decodes: a corrupt length prefix must not make a
/// node allocate without bound.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

pub fn encode<T: Encode>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(bincode::encode_to_vec(value, config())?)
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, _) = bincode::decode_from_slice(bytes, config())?;
    Ok(value)
}

/// A stored message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WireMessage {
    pub offset: u64,
    pub id: String,
    pub time_ms: u64,
    pub data: Vec<u8>,
}

impl From<&StoredMessage> for WireMessage {
    fn from(m: &StoredMessage) -> Self {
        WireMessage {
            offset: m.offset,
            id: m.id.clone(),
            time_ms: m.time_ms,
            data: m.data.to_vec(),
        }
    }
}

impl From<WireMessage> for StoredMessage {
    fn from(m: WireMessage) -> Self {
        StoredMessage {
            offset: m.offset,
            id: m.id,
            time_ms: m.time_ms,
            data: m.data.into(),
        }
    }
}

/// A topic's state as its owner (or a copy's holder) sees it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WireMeta {
    pub epoch: String,
    pub first: u64,
    pub head: u64,
    /// False while nothing was ever published.
    pub exists: bool,
}

/// Requests to another node.
#[derive(Clone, Debug, Encode, Decode)]
pub enum Call {
    /// Publish on the owner (refused with `retry` if the receiver does not own the topic).
    Publish {
        topic: String,
        data: Vec<u8>,
        id: Option<String>,
    },
    /// Node `from` follows the topic: every durable message is cast to it from now on.
    Follow {
        topic: String,
        from: String,
    },
    /// Retained messages `from..=to` of the receiver's copy.
    Read {
        topic: String,
        from: u64,
        to: u64,
        max_count: u32,
        max_bytes: u32,
    },
    /// Topic info from the owner.
    Info {
        topic: String,
    },
    /// A Raft message for the receiver's replica of `shard` (encoded by the replication
    /// layer; the cluster only carries it).
    Raft {
        shard: u32,
        request: Vec<u8>,
    },
    /// A consumer member on another node joins.
    ConsumerJoin(JoinRequest),
    ConsumerAck {
        topic: String,
        name: String,
        ack: AckRequest,
    },
    ConsumerLease {
        topic: String,
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        limit: u32,
    },
    ConsumerInfo {
        topic: String,
        name: String,
    },
    /// Changes the settings of an existing consumer; answered with its info.
    ConsumerConfigure {
        topic: String,
        name: String,
        options: ConsumerOptions,
    },
}

/// Member `member` (a subscription on node `from`) joins consumer `name` of `topic`; its
/// frames are cast back to `from`.
#[derive(Clone, Debug, Encode, Decode)]
pub struct JoinRequest {
    pub topic: String,
    pub name: String,
    pub options: ConsumerOptions,
    pub after: Option<u64>,
    pub announce: bool,
    pub req: Option<String>,
    pub from: String,
    pub member: u64,
}

/// A frame for a consumer member on another node.
#[derive(Clone, Debug, Encode, Decode)]
pub enum WireFrame {
    Message {
        epoch: String,
        offset: u64,
        time_ms: u64,
        envelope: Vec<u8>,
    },
    Subscribed {
        epoch: String,
        first: u64,
        head: u64,
        start: u64,
        req: Option<String>,
        consumer: Option<String>,
    },
    Text(String),
}

/// A message's envelope as the topic's owner rendered it (a delivery to a follower node,
/// or a consumer delivery leased to a pull consumer on another node).
#[derive(Clone, Debug, Encode, Decode)]
pub struct WireEnvelope {
    pub offset: u64,
    pub time_ms: u64,
    pub envelope: Vec<u8>,
}

/// Answers, one per [`Call`] variant.
#[derive(Clone, Debug, Encode, Decode)]
pub enum Reply {
    Published {
        offset: u64,
        epoch: String,
        id: String,
        duplicate: bool,
    },
    Followed(WireMeta),
    Messages {
        epoch: String,
        first: u64,
        head: u64,
        messages: Vec<WireMessage>,
    },
    Info {
        meta: Option<WireMeta>,
        subscribers: u64,
    },
    /// The encoded answer to a [`Call::Raft`].
    Raft(Vec<u8>),
    Joined {
        epoch: String,
        ack_floor: u64,
        first: u64,
        head: u64,
    },
    Acked(AckReport),
    Leased {
        epoch: String,
        messages: Vec<WireEnvelope>,
    },
    ConsumerInfo(Option<ConsumerInfo>),
    /// The request failed; `retry`: it had no effect and may be sent again (to the new owner
    /// once membership settles).
    Error {
        code: String,
        message: String,
        retry: bool,
    },
}

/// One-way messages.
#[derive(Clone, Debug, Encode, Decode)]
pub enum Cast {
    /// Durable messages for the receiver's follower, in offset order, rendered once by
    /// the owner.
    Deliver {
        topic: String,
        epoch: String,
        first: u64,
        messages: Vec<WireEnvelope>,
    },
    /// The owner stopped owning (or restarted): followers start over.
    OwnerGone { topic: String, epoch: String },
    /// Node `from` no longer follows the topic.
    Unfollow { topic: String, from: String },
    /// Frames for member `member` of consumer `name` (on the receiving node), in order.
    MemberFrames {
        topic: String,
        name: String,
        member: u64,
        frames: Vec<WireFrame>,
    },
    /// The owner let go of member `member`: it should join again.
    MemberGone { topic: String, member: u64 },
    /// Member `member` left consumer `name`.
    ConsumerLeave {
        topic: String,
        name: String,
        member: u64,
    },
}

impl Reply {
    pub fn error(e: &ApiError, retry: bool) -> Reply {
        Reply::Error {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
            retry,
        }
    }
}

/// Maps a code name back to the protocol's code (unknown ones are internal errors).
pub fn error_code(name: &str) -> ErrorCode {
    [
        ErrorCode::BadRequest,
        ErrorCode::InvalidTopic,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
    ]
    .into_iter()
    .find(|c| c.as_str() == name)
    .unwrap_or(ErrorCode::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_casts_round_trip() {
        let call = Call::Read {
            topic: "t".into(),
            from: 1,
            to: 9,
            max_count: 3,
            max_bytes: 100,
        };
        let back: Call = decode(&encode(&call).unwrap()).unwrap();
        assert!(matches!(back, Call::Read { from: 1, to: 9, .. }));
        let cast = Cast::Deliver {
            topic: "t".into(),
            epoch: "e".into(),
            first: 1,
            messages: vec![WireEnvelope {
                offset: 1,
                time_ms: 5,
                envelope: b"{}".to_vec(),
            }],
        };
        let back: Cast = decode(&encode(&cast).unwrap()).unwrap();
        assert!(matches!(back, Cast::Deliver { messages, .. } if messages[0].envelope == b"{}"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Call>(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode::<Reply>(&[]).is_err());
        // A Publish whose data claims 2^60 bytes: refused, not allocated.
        let mut huge = encode(&Call::Publish {
            topic: "t".into(),
            data: vec![],
            id: None,
        })
        .unwrap();
        huge.truncate(3);
        huge.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(decode::<Call>(&huge).is_err());
    }

    #[test]
    fn error_codes_map_back() {
        for code in [
            ErrorCode::Unavailable,
            ErrorCode::NotFound,
            ErrorCode::TooLarge,
        ] {
            assert_eq!(error_code(code.as_str()), code);
        }
        assert_eq!(error_code("nonsense"), ErrorCode::Internal);
    }
}
