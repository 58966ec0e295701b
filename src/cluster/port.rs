//! The ports between the cluster and the layers above it. The cluster moves bytes between
//! nodes and knows nothing of topics: a node's upper layers serve what arrives through
//! [`Inbound`], and reach other nodes through a [`Transport`] (inside [`super::client::Cluster`]).
//! The real transport is ractor_cluster ([`super::router`]); tests use an in-memory twin
//! ([`super::sim`]).

use super::wire::{self, Call, Cast, Reply};
use crate::protocol::ApiError;
use async_trait::async_trait;
use std::time::Duration;

/// What a node serves for its peers (implemented by the topic layer).
#[async_trait]
pub trait Inbound: Send + Sync {
    /// Answers a request from another node.
    async fn call(&self, call: Call) -> Reply;
    /// Takes a one-way message from another node; those of one link arrive in send order.
    fn cast(&self, cast: Cast);
}

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node is not connected: nothing was sent.
    #[error("node {0} is not reachable")]
    NoRoute(String),
    /// Sent, but no usable answer (timeout, connection lost, undecodable): the outcome is
    /// unknown.
    #[error("node {node}: {detail}")]
    Failed { node: String, detail: String },
}

/// How a node reaches its peers: encoded calls and casts to a node by id.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends an encoded [`Call`] to `node` and waits up to `timeout` for the encoded reply.
    async fn call(
        &self,
        node: &str,
        call: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError>;
    /// Sends an encoded [`Cast`] to `node`; false if it is not reachable. At most once.
    fn cast(&self, node: &str, cast: Vec<u8>) -> bool;
}

/// Decodes a call, has `inbound` answer it, and encodes the answer (`None` if the answer
/// cannot be encoded: the caller's call then fails).
pub async fn serve_call(inbound: &dyn Inbound, bytes: &[u8]) -> Option<Vec<u8>> {
    let answer = match wire::decode::<Call>(bytes) {
        Ok(call) => inbound.call(call).await,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable cluster call");
            Reply::error(&ApiError::bad_request("undecodable request"), false)
        }
    };
    wire::encode(&answer)
        .inspect_err(|e| tracing::error!(error = %e, "cannot encode a cluster reply"))
        .ok()
}

/// Decodes a cast and hands it to `inbound`.
pub fn serve_cast(inbound: &dyn Inbound, bytes: &[u8]) {
    match wire::decode::<Cast>(bytes) {
        Ok(cast) => inbound.cast(cast),
        Err(e) => tracing::warn!(error = %e, "undecodable cluster cast"),
    }
}

/// Who owns each topic (implemented by the replication layer: the leader of the topic's
/// shard). The cluster only asks; it never decides ownership.
pub trait Owners: Send + Sync {
    /// The node that owns `topic` now, as far as this node knows (`None`: no leader known).
    fn owner(&self, topic: &str) -> Option<String>;
    /// Sees a new value whenever the owner of some topic may have changed.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}
