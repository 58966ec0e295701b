//! Raft RPCs between the replicas of a shard, over the [`RaftNet`] port that the cluster
//! layer implements (over its ractor_cluster link; in tests, in memory).
//!
//! Requests and responses are bincode-encoded [`Addressed`] [`RaftRequest`]s and
//! [`RaftResponse`]s carrying openraft's own messages. A request names the replica it is
//! for: a node refuses one addressed to another incarnation of itself (a wiped node must
//! not answer for the replica it was, see [`super::identity`]). An AppendEntries request carries at most
//! [`MAX_APPEND_BYTES`] of entries (at least one entry): a longer one is cut and answered
//! with openraft's `PartialSuccess`, so the leader sends the rest next. A snapshot goes in
//! chunks of [`SNAPSHOT_CHUNK`] bytes, installed once the last one arrived.

use super::codec;
use super::types::{Raft, SnapshotMeta, TypeConfig, Vote};
use openraft::entry::RaftEntry as _;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Entries per AppendEntries request, by encoded size.
pub(crate) const MAX_APPEND_BYTES: usize = 1 << 20;
/// Snapshot bytes per request.
pub(crate) const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The transport the cluster layer provides.
#[async_trait::async_trait]
pub(crate) trait RaftNet: Send + Sync + 'static {
    /// Sends one encoded Raft RPC for `shard` to node `node` and waits up to `timeout`.
    async fn call(
        &self,
        node: &str,
        shard: u32,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError>;

    /// The fact `key` that node `node` announced, if this node has heard it.
    fn fact(&self, node: &str, key: &str) -> Option<String>;

    /// Announces a fact about this node to every other node.
    async fn announce(&self, key: &str, value: &str);
}

/// Why an RPC got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// No answer: the node is down, cut off or too slow.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The call failed in another way (its answer could not be read, ...).
    #[error("raft call failed: {0}")]
    Failed(String),
}

/// One piece of a snapshot.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total: u64,
    pub data: Vec<u8>,
}

/// A request and the replica (Raft id) it is for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Addressed {
    pub to: u64,
    pub request: RaftRequest,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot(SnapshotChunk),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum RaftResponse {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// `None` until the last chunk.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The receiver could not serve it (no such shard here, stopped, bad request).
    Refused(String),
}

/// Creates the clients of one shard's Raft.
pub(crate) struct NetFactory {
    pub shard: u32,
    pub net: Arc<dyn RaftNet>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Client {
        Client {
            shard: self.shard,
            target,
            node: node.addr.clone(),
            net: Arc::clone(&self.net),
        }
    }
}

/// One shard's client of one peer.
pub(crate) struct Client {
    shard: u32,
    /// The replica's Raft id.
    target: u64,
    node: String,
    net: Arc<dyn RaftNet>,
}

impl Client {
    async fn call(
        &self,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftResponse, RPCError<TypeConfig>> {
        let addressed = Addressed {
            to: self.target,
            request,
        };
        let bytes = codec::encode(&addressed)
            .map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let answer = match self.net.call(&self.node, self.shard, bytes, timeout).await {
            Ok(answer) => answer,
            Err(e @ NetError::Unreachable(_)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ NetError::Failed(_)) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        match codec::decode(&answer) {
            Ok(RaftResponse::Refused(why)) => Err(RPCError::Unreachable(Unreachable::from_string(
                format!("{} refused shard {}: {why}", self.node, self.shard),
            ))),
            Ok(response) => Ok(response),
            Err(e) => Err(RPCError::Network(NetworkError::from_string(format!(
                "undecodable answer from {}: {e}",
                self.node
            )))),
        }
    }
}

fn unexpected(response: RaftResponse) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "unexpected answer: {response:?}"
    )))
}

/// How many of `entries` fit in [`MAX_APPEND_BYTES`] (at least one).
fn fitting<T: serde::Serialize>(entries: &[T]) -> usize {
    let mut total = 0;
    for (i, entry) in entries.iter().enumerate() {
        total += codec::encode(entry).map_or(0, |b| b.len());
        if total > MAX_APPEND_BYTES && i > 0 {
            return i;
        }
    }
    entries.len()
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let keep = fitting(&rpc.entries);
        let cut = keep < rpc.entries.len();
        if cut {
            rpc.entries.truncate(keep);
        }
        let last_sent = rpc.entries.last().map(|e| e.log_id());
        match self
            .call(RaftRequest::Append(rpc), option.hard_ttl())
            .await?
        {
            RaftResponse::Append(AppendEntriesResponse::Success) if cut => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            RaftResponse::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await? {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRequest::PreVote(rpc), option.hard_ttl())
            .await?
        {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: super::types::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let total = data.len() as u64;
        let send = async {
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK).min(data.len());
                let chunk = SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    total,
                    data: data.get(offset..end).unwrap_or_default().to_vec(),
                };
                match self
                    .call(RaftRequest::Snapshot(chunk), option.hard_ttl())
                    .await?
                {
                    RaftResponse::Snapshot(Some(r)) => return Ok(r),
                    RaftResponse::Snapshot(None) if end < data.len() => offset = end,
                    other => return Err(StreamingError::from(unexpected(other))),
                }
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRequest::TransferLeader(req), option.hard_ttl())
            .await?
        {
            RaftResponse::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

/// A snapshot being received: its meta and the bytes so far.
pub(crate) type Incoming = Mutex<Option<(SnapshotMeta, Vec<u8>)>>;

/// Serves one request for a shard's `raft`; `incoming` holds a snapshot being received.
/// `stopping`: this node is handing its leadership away, so it refuses to take any back.
pub(crate) async fn serve(
    raft: &Raft,
    incoming: &Incoming,
    request: &[u8],
    stopping: bool,
) -> RaftResponse {
    let Addressed { to, request } = match codec::decode(request) {
        Ok(r) => r,
        Err(e) => return RaftResponse::Refused(format!("undecodable request: {e}")),
    };
    if to != *raft.node_id() {
        return RaftResponse::Refused(format!(
            "replica {to} is gone: this node is replica {} now",
            raft.node_id()
        ));
    }
    if stopping && matches!(request, RaftRequest::TransferLeader(_)) {
        return RaftResponse::Refused("this node is stopping".into());
    }
    let refused = |e: &dyn std::fmt::Display| RaftResponse::Refused(e.to_string());
    match request {
        RaftRequest::Append(rpc) => raft
            .append_entries(rpc)
            .await
            .map_or_else(|e| refused(&e), RaftResponse::Append),
        RaftRequest::Vote(rpc) => raft
            .vote(rpc)
            .await
            .map_or_else(|e| refused(&e), RaftResponse::Vote),
        RaftRequest::PreVote(rpc) => raft
            .pre_vote(rpc)
            .await
            .map_or_else(|e| refused(&e), RaftResponse::Vote),
        RaftRequest::TransferLeader(rpc) => raft
            .handle_transfer_leader(rpc)
            .await
            .map_or_else(|e| refused(&e), RaftResponse::TransferLeader),
        RaftRequest::Snapshot(chunk) => {
            let mut slot = incoming.lock().await;
            if chunk.offset == 0 {
                *slot = Some((chunk.meta.clone(), Vec::with_capacity(chunk.data.len())));
            }
            let Some((meta, buf)) = slot.as_mut() else {
                return RaftResponse::Refused("snapshot chunk without its start".into());
            };
            if *meta != chunk.meta || buf.len() as u64 != chunk.offset {
                *slot = None;
                return RaftResponse::Refused("snapshot chunk out of sequence".into());
            }
            buf.extend_from_slice(&chunk.data);
            if (buf.len() as u64) < chunk.total {
                return RaftResponse::Snapshot(None);
            }
            let Some((meta, data)) = slot.take() else {
                return RaftResponse::Refused("snapshot lost".into());
            };
            let snapshot = super::types::Snapshot {
                meta,
                snapshot: data,
            };
            raft.install_full_snapshot(chunk.vote, snapshot)
                .await
                .map_or_else(|e| refused(&e), |r| RaftResponse::Snapshot(Some(r)))
        }
    }
}
