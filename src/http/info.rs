//! Topic info, cluster view, health, readiness and metrics.

use super::reply;
use super::AppState;
use crate::cluster::view::MemberStatus;
use crate::protocol::{ApiError, ErrorCode, TopicName};
use warp::http::header;
use warp::reply::Response;

pub async fn topic(topic: String, state: AppState) -> Response {
    let topic = match TopicName::parse(&topic) {
        Ok(t) => t,
        Err(e) => return reply::error(&e),
    };
    match state.topics.info(&topic).await {
        Ok(Some(info)) => reply::json(
            200,
            serde_json::json!({
                "topic": topic.as_str(),
                "epoch": &*info.epoch,
                "first": info.first,
                "head": info.head,
                "owner": info.owner,
                "subscribers": info.subscribers,
            })
            .to_string(),
        ),
        Ok(None) => reply::error(&ApiError::new(
            ErrorCode::NotFound,
            format!("topic {topic} does not exist"),
        )),
        Err(e) => reply::error(&e.into()),
    }
}

/// `GET /v1/cluster`: this node's id, whether it has joined, every member it knows, and
/// this node's replica of every shard.
pub fn cluster(state: AppState) -> Response {
    let view = state.view.borrow().clone();
    let members: Vec<_> = view
        .members
        .values()
        .map(|m| {
            let status = if m.id == view.me && !view.ready {
                MemberStatus::Joining
            } else {
                m.status
            };
            serde_json::json!({
                "id": m.id,
                "http_addr": m.http_addr.map(|a| a.to_string()),
                "gossip_addr": m.gossip_addr.to_string(),
                "cluster_addr": m.cluster_addr.map(|a| a.to_string()),
                "status": status,
                "self": m.id == view.me,
            })
        })
        .collect();
    reply::json(
        200,
        serde_json::json!({
            "node": view.me,
            "ready": view.ready,
            "members": members,
            "shards": state.topics.shards(),
        })
        .to_string(),
    )
}

pub fn healthz() -> Response {
    reply::json(200, r#"{"status":"ok"}"#.to_string())
}

pub fn readyz(state: AppState) -> Response {
    if state.sessions.shutdown().is_triggered() {
        return reply::error(&ApiError::unavailable("node is shutting down"));
    }
    if !state.view.borrow().ready {
        return reply::error(&ApiError::unavailable("node is joining the cluster"));
    }
    if !state.topics.leaders_known() {
        return reply::error(&ApiError::unavailable(
            "the node's shards are electing their leaders",
        ));
    }
    reply::json(200, r#"{"status":"ready"}"#.to_string())
}

pub fn metrics(state: AppState) -> Response {
    metrics::gauge!("starling_topics_active").set(state.topics.active() as f64);
    let mut res = Response::new(state.metrics.render().into());
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}
