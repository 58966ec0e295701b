//! [`TopicError`]: how a request to a topic failed, in the topic layer's terms. It becomes
//! the protocol's [`ApiError`] only at the edges (HTTP replies, WebSocket error frames,
//! and a peer's `Reply::Error`); the topic layer and its callers decide on the variant,
//! never on an error's text.

use crate::protocol::{ApiError, ErrorCode};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is changing hands (or this node has not joined yet): nothing happened, and
    /// the request may be sent again, here or at the new owner.
    #[error("topic is moving between nodes; try again")]
    Moving,
    /// The topic's actor stopped before it answered: a publish it held has an unknown
    /// outcome (a retry with the same id is idempotent).
    #[error("topic is restarting; try again")]
    Restarting,
    /// Unavailable for a reason worth telling (shutting down, the owner unreachable,
    /// storage not flushing).
    #[error("{0}")]
    Unavailable(String),
    /// Refused in the protocol's terms: the request is at fault (a position beyond the
    /// head, unknown consumer, settings out of bounds), or the owner said so.
    #[error("{0}")]
    Rejected(ApiError),
    /// Storage failed; the details are logged where it happened.
    #[error("internal error")]
    Internal,
}

impl TopicError {
    pub fn unavailable(message: impl Into<String>) -> TopicError {
        TopicError::Unavailable(message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> TopicError {
        TopicError::Rejected(ApiError::bad_request(message))
    }

    /// An error a peer answered with, as its `Reply::Error` fields say.
    pub fn from_peer(code: ErrorCode, message: String, retry: bool) -> TopicError {
        match code {
            _ if retry => TopicError::Moving,
            ErrorCode::Unavailable => TopicError::Unavailable(message),
            ErrorCode::Internal => TopicError::Internal,
            code => TopicError::Rejected(ApiError::new(code, message)),
        }
    }

    /// Whether the request had no effect and may be sent again once membership settles.
    pub fn retry(&self) -> bool {
        matches!(self, TopicError::Moving)
    }
}

/// Checks from the protocol (topic names, resume positions, consumer settings) refuse in
/// its own terms.
impl From<ApiError> for TopicError {
    fn from(e: ApiError) -> TopicError {
        TopicError::Rejected(e)
    }
}

/// Consumer settings out of bounds or in conflict with the group's.
impl From<crate::consumer::options::SettingsError> for TopicError {
    fn from(e: crate::consumer::options::SettingsError) -> TopicError {
        TopicError::bad_request(e.to_string())
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> ApiError {
        match e {
            TopicError::Rejected(e) => e,
            TopicError::Internal => ApiError::internal(),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_the_protocol_and_back_from_a_peer() {
        for e in [
            TopicError::Moving,
            TopicError::Restarting,
            TopicError::unavailable("owner gone"),
        ] {
            assert_eq!(ApiError::from(e.clone()).code, ErrorCode::Unavailable);
        }
        let refused = TopicError::bad_request("no");
        assert_eq!(ApiError::from(refused.clone()).code, ErrorCode::BadRequest);
        assert_eq!(
            ApiError::from(TopicError::Internal).code,
            ErrorCode::Internal
        );
        // A peer's answer keeps its meaning: retry wins, then the code.
        let e = ApiError::from(TopicError::Moving);
        assert_eq!(
            TopicError::from_peer(e.code, e.message, true),
            TopicError::Moving
        );
        assert_eq!(
            TopicError::from_peer(ErrorCode::Unavailable, "x".into(), false),
            TopicError::unavailable("x")
        );
        let e = ApiError::from(refused.clone());
        assert_eq!(TopicError::from_peer(e.code, e.message, false), refused);
        assert!(TopicError::Moving.retry() && !TopicError::Restarting.retry());
    }
}
