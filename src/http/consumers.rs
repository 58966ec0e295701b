//! `POST /v1/topics/{topic}/consumers/{name}/ack`, `GET /v1/topics/{topic}/consumers/{name}`
//! and `PUT /v1/topics/{topic}/consumers/{name}` (change a group's settings).

use super::reply::{self, parse_consumer};
use super::AppState;
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::consumer::{AckRequest, ConsumerInfo};
use crate::protocol::{ApiError, ErrorCode, TopicName};
use bytes::Bytes;
use serde::Deserialize;
use warp::reply::Response;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    offsets: Option<Vec<u64>>,
    upto: Option<u64>,
    nack: Option<Vec<u64>>,
    delay_ms: Option<u64>,
}

fn parse_ack(body: &[u8]) -> Result<AckRequest, ApiError> {
    let usage = "body must be {\"offsets\":[...]}, {\"upto\":N} or {\"nack\":[...],\"delay_ms\":N}";
    reply::require_object(body, usage)?;
    let b: AckBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{usage}: {e}")))?;
    match (b.offsets, b.upto, b.nack) {
        (Some(o), None, None) if b.delay_ms.is_none() => Ok(AckRequest::Offsets(o)),
        (None, Some(u), None) if b.delay_ms.is_none() => Ok(AckRequest::Upto(u)),
        (None, None, Some(n)) => Ok(AckRequest::Nack {
            offsets: n,
            delay_ms: b.delay_ms.unwrap_or(0),
        }),
        _ => Err(ApiError::bad_request(usage)),
    }
}

/// The body of `PUT .../consumers/{name}`: the settings to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    ack_wait_ms: Option<u64>,
    max_deliver: Option<u32>,
    max_inflight: Option<usize>,
    backoff_ms: Option<Vec<u64>>,
}

fn parse_settings(body: &[u8]) -> Result<ConsumerOptions, ApiError> {
    let usage = "body must be a JSON object with any of \"ack_wait_ms\", \"max_deliver\", \
                 \"max_inflight\" (numbers) and \"backoff_ms\" (a list of numbers)";
    reply::require_object(body, usage)?;
    let b: SettingsBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{usage}: {e}")))?;
    let options = ConsumerOptions {
        ack_wait_ms: b.ack_wait_ms,
        max_deliver: b.max_deliver,
        max_inflight: b.max_inflight,
        backoff_ms: b.backoff_ms,
    };
    if options.is_empty() {
        return Err(ApiError::bad_request(usage));
    }
    Ok(options)
}

fn not_found(topic: &TopicName, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("consumer {name} of {topic} does not exist"),
    )
}

/// The consumer info as both `GET` and `PUT` answer it.
fn info_reply(topic: &TopicName, name: &str, info: &ConsumerInfo) -> Response {
    let body = serde_json::json!({
        "topic": topic.as_str(),
        "consumer": name,
        "ack_floor": info.ack_floor,
        "next": info.next,
        "pending": info.pending,
        "in_flight": info.in_flight,
        "redelivered": info.redelivered,
        "dead_lettered": info.dead_lettered,
        "trimmed": info.trimmed,
        "members": info.members,
        "ack_wait_ms": info.ack_wait_ms,
        "max_deliver": info.max_deliver,
        "max_inflight": info.max_inflight,
        "backoff_ms": info.backoff_ms,
    });
    reply::json(200, body.to_string())
}

pub async fn ack(topic: String, name: String, state: AppState, body: Bytes) -> Response {
    let run = async {
        let topic = TopicName::parse(&topic)?;
        let name = parse_consumer(&name)?;
        let ack = parse_ack(&body)?;
        let nack = matches!(ack, AckRequest::Nack { .. });
        let handle = state.topics.handle(&topic).await?;
        let report = handle.ack(name.clone(), ack).await?;
        let key = if nack { "nacked" } else { "acked" };
        let mut body = serde_json::json!({"topic": topic.as_str(), "consumer": name});
        body[key] = report.done.into();
        body["already"] = report.already.into();
        Ok::<_, ApiError>(reply::json(200, body.to_string()))
    };
    run.await.unwrap_or_else(|e| reply::error(&e))
}

pub async fn info(topic: String, name: String, state: AppState) -> Response {
    let run = async {
        let topic = TopicName::parse(&topic)?;
        let name = parse_consumer(&name)?;
        if state.topics.info(&topic).await?.is_none() {
            return Err(not_found(&topic, &name));
        }
        let handle = state.topics.handle(&topic).await?;
        let info = handle
            .consumer_info(name.clone())
            .await?
            .ok_or_else(|| not_found(&topic, &name))?;
        Ok(info_reply(&topic, &name, &info))
    };
    run.await.unwrap_or_else(|e| reply::error(&e))
}

/// Changes the settings of an existing consumer group, at the topic's owner (through this
/// node's follower if another node owns it); answers the new info once it is durable.
pub async fn configure(topic: String, name: String, state: AppState, body: Bytes) -> Response {
    let run = async {
        let topic = TopicName::parse(&topic)?;
        let name = parse_consumer(&name)?;
        let options = parse_settings(&body)?;
        if state.topics.info(&topic).await?.is_none() {
            return Err(not_found(&topic, &name));
        }
        let handle = state.topics.handle(&topic).await?;
        let info = handle.configure(name.clone(), options).await?;
        Ok(info_reply(&topic, &name, &info))
    };
    run.await.unwrap_or_else(|e| reply::error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_bodies() {
        assert_eq!(
            parse_ack(br#"{"offsets":[1,2]}"#).unwrap(),
            AckRequest::Offsets(vec![1, 2])
        );
        assert_eq!(parse_ack(br#"{"upto":5}"#).unwrap(), AckRequest::Upto(5));
        assert_eq!(
            parse_ack(br#"{"nack":[3],"delay_ms":100}"#).unwrap(),
            AckRequest::Nack {
                offsets: vec![3],
                delay_ms: 100
            }
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"offsets":[1],"upto":2}"#,
            br#"{"upto":-1}"#,
            br#"[1]"#,
            br#"{"offsets":[1],"delay_ms":5}"#,
            b"nope",
        ] {
            assert!(parse_ack(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn settings_bodies() {
        let o = parse_settings(br#"{"ack_wait_ms":500,"backoff_ms":[1,2]}"#).unwrap();
        assert_eq!(
            o,
            ConsumerOptions {
                ack_wait_ms: Some(500),
                backoff_ms: Some(vec![1, 2]),
                ..Default::default()
            }
        );
        let o = parse_settings(br#"{"max_deliver":2,"max_inflight":7}"#).unwrap();
        assert_eq!((o.max_deliver, o.max_inflight), (Some(2), Some(7)));
        for bad in [
            &br#"{}"#[..],
            br#"{"ack_wait":5}"#,
            br#"{"max_deliver":-1}"#,
            br#"{"backoff_ms":5}"#,
            br#"[1]"#,
            b"nope",
        ] {
            let e = parse_settings(bad).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
