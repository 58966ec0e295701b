//! CORS: pages on the `[http] allowed_origins` may use every `/v1` route from another
//! origin (EventSource, `fetch` with a JSON body, cookies and `Authorization`).
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) on a `/v1` path is answered
//! here, before any route: 204 with the allowed methods and headers for an allowed origin,
//! 403 `forbidden` (and no CORS headers, so the browser refuses) for any other. Every other
//! response (SSE streams and errors included) carries `Access-Control-Allow-Origin` echoing
//! an allowed request origin, with credentials allowed for an origin listed exactly. (The
//! one exception: a connection refused at `max_connections` gets a bare 503 before its
//! request is read.) Whether the request itself may run
//! is [`super::origin::guard`]'s decision; this module only tells the browser what it may read.

use super::origin::OriginPolicy;
use super::AppState;
use std::convert::Infallible;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// How long a browser may cache a preflight answer (Chromium caps it at 2 h).
const MAX_AGE_S: &str = "600";
const ALLOW_METHODS: &str = "GET, POST, PUT, OPTIONS";
/// `Content-Type` for JSON bodies, `Authorization` for tokens, `Last-Event-ID` for a client
/// that resumes an SSE stream with `fetch`.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";

/// The headers of a preflight answer for a page from `origin`, or `None` if that origin
/// may not use the node.
pub(crate) fn preflight_headers(policy: &OriginPolicy, origin: &str) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    allow(policy, Some(origin), &mut h);
    if !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return None;
    }
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
        (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_S),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    Some(h)
}

/// Adds the CORS headers a response to a page from `origin` carries: the origin echoed if
/// it is allowed, credentials (cookies) allowed only for an origin listed exactly (see
/// [`OriginPolicy::trusts`]), and `Vary: Origin` always, because the answer depends on it.
pub(crate) fn allow(policy: &OriginPolicy, origin: Option<&str>, h: &mut HeaderMap) {
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin.filter(|o| policy.allows(o)) else {
        return;
    };
    let Ok(value) = HeaderValue::from_str(origin) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if policy.trusts(origin) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// The request's `Origin`, if it has a readable one.
fn origin() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>("origin")
        .or(warp::any().map(|| None))
        .unify()
}

/// Answers a preflight on a `/v1` path; anything else is passed on.
pub(crate) fn preflight(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let policy = state.origins.clone();
    warp::options()
        .and(warp::path::full())
        .and(origin())
        .and(warp::header::optional::<String>(
            "access-control-request-method",
        ))
        .and_then(
            move |path: warp::path::FullPath, origin: Option<String>, method: Option<String>| {
                let policy = policy.clone();
                async move {
                    let on_v1 = path.as_str() == "/v1" || path.as_str().starts_with("/v1/");
                    let (Some(origin), Some(_), true) = (origin, method, on_v1) else {
                        return Err(warp::reject::not_found());
                    };
                    Ok(match preflight_headers(&policy, &origin) {
                        Some(headers) => {
                            let mut res = Response::new(String::new().into());
                            *res.status_mut() = warp::http::StatusCode::NO_CONTENT;
                            *res.headers_mut() = headers;
                            res
                        }
                        None => {
                            metrics::counter!("starling_http_refused_total", "reason" => "origin")
                                .increment(1);
                            tracing::debug!(%origin, "preflight from a disallowed origin refused");
                            let e = super::origin::ForbiddenOrigin(origin);
                            let mut res = super::reply::error(&crate::protocol::ApiError::new(
                                crate::protocol::ErrorCode::Forbidden,
                                e.to_string(),
                            ));
                            allow(&policy, None, res.headers_mut());
                            res
                        }
                    })
                }
            },
        )
}

/// `routes` with the CORS headers added to every response.
pub(crate) fn decorate<F>(
    state: &AppState,
    routes: F,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let policy = state.origins.clone();
    origin()
        .and(routes)
        .map(move |origin: Option<String>, mut res: Response| {
            allow(&policy, origin.as_deref(), res.headers_mut());
            res
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OriginPolicy {
        let own = "127.0.0.1:8080".parse().unwrap();
        let listed = ["http://localhost:*", "https://app.example.com", "null"];
        OriginPolicy::new(&listed.map(String::from), own)
    }

    #[test]
    fn an_allowed_origin_is_echoed_and_only_an_exact_one_gets_credentials() {
        for (origin, credentials) in [
            ("https://app.example.com", true),
            ("http://127.0.0.1:8080", true),
            ("http://localhost:5173", false),
            ("null", false),
        ] {
            let mut h = HeaderMap::new();
            allow(&policy(), Some(origin), &mut h);
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
            assert_eq!(
                h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
                credentials,
                "{origin}"
            );
            assert_eq!(h[header::VARY], "Origin");
        }
    }

    #[test]
    fn another_origin_gets_no_cors_headers() {
        for origin in [
            Some("https://evil.example"),
            Some("http://app.example.com"),
            None,
        ] {
            let mut h = HeaderMap::new();
            allow(&policy(), origin, &mut h);
            assert!(
                !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                "{origin:?}"
            );
            assert_eq!(h[header::VARY], "Origin");
        }
        assert!(preflight_headers(&policy(), "https://evil.example").is_none());
    }

    #[test]
    fn a_preflight_allows_the_headers_the_protocol_uses() {
        let h = preflight_headers(&policy(), "http://localhost:3000").unwrap();
        let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        for name in ["Authorization", "Content-Type", "Last-Event-ID"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
        for m in ["GET", "POST", "PUT"] {
            assert!(methods.contains(m), "{methods}");
        }
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], MAX_AGE_S);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
    }
}
