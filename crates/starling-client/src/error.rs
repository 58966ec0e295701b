//! What can go wrong talking to a node.

/// A failed request or connection. The `Display` texts are short and stable: the chaos
/// history records them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer within the request's time limit.
    #[error("timeout")]
    Timeout,
    /// The node could not be reached, or the connection broke mid-request.
    #[error("transport: {0}")]
    Transport(String),
    /// The node answered with an error status and the protocol's error body.
    #[error("HTTP {status}: {code}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The node closed the WebSocket (code 0: without a code).
    #[error("close {code}")]
    ClosedBy { code: u16, reason: String },
    /// The connection or the stream ended without a close frame.
    #[error("connection closed")]
    Ended,
    /// The WebSocket failed.
    #[error("{0}")]
    Ws(String),
    /// A `type:"error"` frame answered a WebSocket request.
    #[error("error: {code}")]
    Refused { code: String, message: String },
    /// An answer that does not follow the protocol.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn transport(e: reqwest::Error) -> Error {
        match e.is_timeout() {
            true => Error::Timeout,
            false => Error::Transport(e.to_string()),
        }
    }
}
