//! `POST /v1/admin/shards/{shard}/recover`: an operator's command to recover a shard from
//! this node's copy when a majority of its voters lost their data (see the README and
//! `replication::recover`). With auth on it needs a token with `admin: true` (checked by
//! the route); with auth off it answers only clients on this machine (a loopback address):
//! anyone who can reach the port must not be able to start a shard anew. Do not route
//! `/v1/admin` through a reverse proxy without auth.

use super::reply;
use super::server::Peer;
use super::AppState;
use crate::protocol::{ApiError, ErrorCode};
use crate::replication::RecoverError;
use std::collections::HashMap;
use warp::reply::Response;

/// Recovers `shard` here (`?force=true`: even while voters that are not live are merely
/// unreachable). 200 with the shard's new generation, this node's replica and every topic
/// of the shard with its new epoch; 400 if it may not (see `replication::Refusal`), 404 for
/// no such shard, 403 for a client not on this machine (with auth off).
pub async fn recover(
    shard: u32,
    query: HashMap<String, String>,
    peer: Option<Peer>,
    state: AppState,
) -> Response {
    if !state.auth.enabled() && !peer.is_some_and(|Peer(a)| a.ip().is_loopback()) {
        return reply::error(&ApiError::new(
            ErrorCode::Forbidden,
            "the admin API answers only clients on this node's machine (a loopback address)",
        ));
    }
    let force = match query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return reply::error(&ApiError::bad_request(format!(
                "force must be true or false, not {other:?}"
            )))
        }
    };
    match state.topics.recover_shard(shard, force).await {
        Ok(recovered) => match serde_json::to_string(&recovered) {
            Ok(body) => reply::json(200, body),
            Err(_) => reply::error(&ApiError::internal()),
        },
        Err(RecoverError::Refused(e @ crate::replication::Refusal::NoSuchShard(_))) => {
            reply::error(&ApiError::new(ErrorCode::NotFound, e.to_string()))
        }
        Err(RecoverError::Refused(e)) => reply::error(&ApiError::bad_request(e.to_string())),
        Err(e @ RecoverError::Failed(_)) => reply::error(&ApiError::unavailable(e.to_string())),
    }
}
