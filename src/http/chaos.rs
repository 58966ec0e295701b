//! `POST /v1/chaos/partition`: fault injection for `starling chaos`. Only with
//! `[chaos] fault_injection = true`; otherwise 403 `forbidden`.

use super::reply;
use super::AppState;
use crate::protocol::{ApiError, ErrorCode};
use bytes::Bytes;
use serde::Deserialize;
use warp::reply::Response;

const USAGE: &str = "body must be {\"drop\":[\"<node id>\", ...]} ({\"drop\":[]} heals)";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    drop: Vec<String>,
}

/// The node ids to drop, from the request body.
fn parse_partition(body: &[u8]) -> Result<Vec<String>, ApiError> {
    reply::require_object(body, USAGE)?;
    let b: PartitionBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{USAGE}: {e}")))?;
    Ok(b.drop)
}

/// Makes this node drop all gossip and cluster traffic with the listed nodes, until the
/// next call. 200 `{"node":"n1","dropping":["n2","n3"]}`.
pub fn partition(state: AppState, body: Bytes) -> Response {
    let Some(faults) = &state.faults else {
        return reply::error(&ApiError::new(
            ErrorCode::Forbidden,
            "fault injection is off on this node; it is for `starling chaos` only: set \
             [chaos] fault_injection = true in the node's config and restart it",
        ));
    };
    let dropping = parse_partition(&body).and_then(|ids| {
        faults
            .set(&ids)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    });
    match dropping {
        Ok(dropping) => reply::json(
            200,
            serde_json::json!({"node": &*state.node_id, "dropping": dropping}).to_string(),
        ),
        Err(e) => reply::error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_bodies() {
        assert_eq!(
            parse_partition(br#"{"drop":["n2","n3"]}"#).unwrap(),
            ["n2", "n3"]
        );
        assert!(parse_partition(br#" {"drop":[]}"#).unwrap().is_empty());
        for bad in [
            &br#"{}"#[..],
            br#"{"drop":"n2"}"#,
            br#"{"drop":[2]}"#,
            br#"{"drop":[],"heal":true}"#,
            br#"[["n2"]]"#,
            b"{nope",
            b"",
        ] {
            let e = parse_partition(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("drop"), "{}", e.message);
        }
    }
}
