//! Responses: JSON bodies, the protocol's error body, and warp rejections mapped to it.

use crate::protocol::{ApiError, ErrorCode};
use std::convert::Infallible;
use warp::http::{header, Response, StatusCode};
use warp::reply::Response as WarpResponse;

/// A JSON response with `status`.
pub fn json(status: u16, body: String) -> WarpResponse {
    let mut res = Response::new(body.into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// The protocol's error response.
pub fn error(e: &ApiError) -> WarpResponse {
    json(e.code.http_status(), e.to_http_body())
}

/// Maps what warp rejected (no route, bad method, body too big...) to the error body.
pub async fn rejection(r: warp::Rejection) -> Result<WarpResponse, Infallible> {
    let (status, e) = if let Some(super::auth::Refused(e)) = r.find() {
        (e.code.http_status(), e.clone())
    } else if r.is_not_found() {
        (404, ApiError::new(ErrorCode::NotFound, "no such route"))
    } else if let Some(e) = r.find::<super::origin::ForbiddenOrigin>() {
        (403, ApiError::new(ErrorCode::Forbidden, e.to_string()))
    } else if let Some(e) = r.find::<super::body::BodyError>() {
        let status = match e {
            super::body::BodyError::Timeout => 408,
            super::body::BodyError::Broken => 400,
        };
        (status, ApiError::bad_request(e.to_string()))
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (413, ApiError::too_large("request body is too large"))
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            411,
            ApiError::bad_request("a Content-Length header is required"),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            405,
            ApiError::bad_request("method not allowed on this route"),
        )
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (415, ApiError::bad_request("unsupported content type"))
    } else if r.find::<super::ws_upgrade::NotUpgrade>().is_some() {
        (
            400,
            ApiError::bad_request("expected a WebSocket upgrade (Connection: upgrade)"),
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        (400, ApiError::bad_request(e.to_string()))
    } else if r.find::<warp::reject::MissingHeader>().is_some()
        || r.find::<warp::reject::InvalidQuery>().is_some()
    {
        (400, ApiError::bad_request("bad request"))
    } else {
        tracing::debug!(rejection = ?r, "unhandled rejection");
        (400, ApiError::bad_request("bad request"))
    };
    Ok(json(status, e.to_http_body()))
}

/// Refuses a body that is not a JSON object (serde would read an array into a struct
/// field by field), with `usage` as the message.
pub fn require_object(body: &[u8], usage: &str) -> Result<(), ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(usage));
    }
    Ok(())
}

/// Parses a query string into pairs (repeated keys kept).
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// The last value of `key`.
pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `key` as a u64, with an error naming it.
pub fn query_u64(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    match query_get(pairs, key) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("`{key}` must be a non-negative integer"))),
    }
}

/// A consumer name from a query or path, checked.
pub fn parse_consumer(name: &str) -> Result<String, ApiError> {
    if !crate::protocol::frames::valid_consumer_name(name) {
        return Err(ApiError::bad_request(
            "consumer names are 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(name.to_string())
}

/// Consumer settings from a query (`ack_wait_ms`, `max_deliver`, `max_inflight`,
/// `backoff_ms=100,500`).
pub fn consumer_options(
    pairs: &[(String, String)],
) -> Result<crate::protocol::consumer::ConsumerOptions, ApiError> {
    let positive = |key: &str| -> Result<Option<u64>, ApiError> { query_u64(pairs, key) };
    Ok(crate::protocol::consumer::ConsumerOptions {
        ack_wait_ms: positive("ack_wait_ms")?,
        max_deliver: positive("max_deliver")?.map(|v| v.min(u64::from(u32::MAX)) as u32),
        max_inflight: positive("max_inflight")?.map(|v| v as usize),
        backoff_ms: match query_get(pairs, "backoff_ms") {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|d| d.trim().parse::<u64>())
                    .collect::<Result<Vec<u64>, _>>()
                    .map_err(|_| {
                        ApiError::bad_request(
                            "`backoff_ms` must be comma-separated non-negative integers",
                        )
                    })?,
            ),
        },
    })
}
