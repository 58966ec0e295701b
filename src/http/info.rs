//! Topic info, cluster view, health, readiness and metrics.

use super::reply;
use super::AppState;
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
                "owner": &*state.node_id,
                "subscribers": info.subscribers,
            })
            .to_string(),
        ),
        Ok(None) => reply::error(&ApiError::new(
            ErrorCode::NotFound,
            format!("topic {topic} does not exist"),
        )),
        Err(e) => reply::error(&e),
    }
}

pub fn cluster(state: AppState) -> Response {
    let members = vec![serde_json::json!({
        "id": &*state.node_id,
        "http_addr": state.http_addr.to_string(),
        "status": "up",
    })];
    reply::json(
        200,
        serde_json::json!({"node": &*state.node_id, "members": members}).to_string(),
    )
}

pub fn healthz() -> Response {
    reply::json(200, r#"{"status":"ok"}"#.to_string())
}

pub fn readyz(state: AppState) -> Response {
    if state.sessions.shutdown().is_triggered() {
        return reply::error(&ApiError::unavailable("node is shutting down"));
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
