//! `GET /v1/topics/{topic}/messages`: long and short polls, each served by a poll session.

use super::reply::{self, consumer_options, parse_consumer, query_get, query_pairs, query_u64};
use super::AppState;
use crate::delivery::outbound::Outbound;
use crate::protocol::frames::{parse_epoch, Position};
use crate::protocol::{ApiError, TopicName};
use crate::session::poll::{PollRequest, PollResponse};
use crate::session::supervisor::StopOnDrop;
use crate::session::{SessionMsg, Transport};
use ractor::rpc::CallResult;
use std::time::Duration;
use warp::reply::Response;

const DEFAULT_LIMIT: u64 = 100;
const DEFAULT_TIMEOUT_SECS: u64 = 30;

pub async fn poll(topic: String, state: AppState, query: String) -> Response {
    match run(topic, &state, &query).await {
        Ok(r) => r,
        Err(e) => reply::error(&e),
    }
}

fn parse(topic: String, state: &AppState, query: &str) -> Result<PollRequest, ApiError> {
    let topic = TopicName::parse(&topic)?;
    let q = query_pairs(query);
    let consumer = match query_get(&q, "consumer") {
        Some(name) => Some((parse_consumer(name)?, consumer_options(&q)?)),
        None => None,
    };
    let limits = &state.config.limits;
    let limit = query_u64(&q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > limits.max_poll_limit as u64 {
        return Err(ApiError::bad_request(format!(
            "`limit` must be 1..={}",
            limits.max_poll_limit
        )));
    }
    let timeout = query_u64(&q, "timeout")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if timeout > limits.max_poll_timeout_secs {
        return Err(ApiError::bad_request(format!(
            "`timeout` must be at most {} seconds",
            limits.max_poll_timeout_secs
        )));
    }
    Ok(PollRequest {
        topic,
        position: Position {
            after: query_u64(&q, "after")?,
            epoch: parse_epoch(query_get(&q, "epoch").map(str::to_string))?,
        },
        limit: limit as usize,
        timeout: Duration::from_secs(timeout),
        consumer,
    })
}

async fn run(topic: String, state: &AppState, query: &str) -> Result<Response, ApiError> {
    let req = parse(topic, state, query)?;
    let outbound = Outbound::new(state.config.limits.max_outbound_queue_bytes);
    let session = StopOnDrop(state.sessions.start(Transport::Poll, outbound).await?);
    let result = session.0.call(|r| SessionMsg::Poll(req, r), None).await;
    drop(session);
    match result {
        Ok(CallResult::Success(r)) => Ok(reply::json(200, render(&r?))),
        _ => Err(ApiError::internal()),
    }
}

fn render(r: &PollResponse) -> String {
    let mut out = String::with_capacity(
        64 + r
            .messages
            .iter()
            .map(|m| m.envelope.len() + 1)
            .sum::<usize>(),
    );
    out.push_str("{\"messages\":[");
    for (i, m) in r.messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(std::str::from_utf8(&m.envelope).unwrap_or("null"));
    }
    let tail = serde_json::json!({
        "next": r.next,
        "epoch": &*r.epoch,
        "recovered": r.recovered,
        "first": r.first,
        "head": r.head,
    });
    let mut tail = tail.to_string();
    if let Some(reason) = r.reset {
        tail.insert_str(
            tail.len() - 1,
            &format!(",\"reason\":\"{}\"", reason.as_str()),
        );
    }
    out.push_str("],");
    out.push_str(&tail[1..]);
    out
}
