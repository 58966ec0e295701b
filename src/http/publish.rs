//! `POST /v1/topics/{topic}/messages`.

use super::reply;
use super::AppState;
use crate::auth::Identity;
use crate::protocol::data::normalize_data;
use crate::protocol::frames::parse_message_id;
use crate::protocol::publish_id::scoped;
use crate::protocol::{ApiError, TopicName};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use warp::reply::Response;

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(borrow, default, deserialize_with = "crate::protocol::frames::present")]
    data: Option<&'a RawValue>,
    id: Option<String>,
}

pub async fn publish(topic: String, identity: Identity, state: AppState, body: Bytes) -> Response {
    match run(topic, &identity, &state, &body).await {
        Ok(r) => r,
        Err(e) => reply::error(&e),
    }
}

async fn run(
    topic: String,
    identity: &Identity,
    state: &AppState,
    body: &[u8],
) -> Result<Response, ApiError> {
    let topic = TopicName::parse_publishable(&topic)?;
    const USAGE: &str = "body must be a JSON object {\"data\": ..., \"id\": ...}";
    reply::require_object(body, USAGE)?;
    let body: PublishBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{USAGE}: {e}")))?;
    let data = body
        .data
        .ok_or_else(|| ApiError::bad_request("`data` is required"))?;
    let max = state.config.limits.max_message_bytes;
    if data.get().len() > max {
        return Err(ApiError::too_large(format!(
            "message data is larger than {max} bytes"
        )));
    }
    let id = parse_message_id(body.id)?.map(|id| scoped(identity.subject(), id));
    let data = normalize_data(data)?;
    let ack = state.topics.publish(&topic, data, id).await?;
    let body = serde_json::json!({
        "topic": topic.as_str(),
        "offset": ack.offset,
        "epoch": &*ack.epoch,
        "id": ack.id,
        "duplicate": ack.duplicate,
    });
    Ok(reply::json(
        if ack.duplicate { 200 } else { 201 },
        body.to_string(),
    ))
}
