//! The `Origin` check: a browser page on another site must not publish, ack or open a
//! WebSocket to a node (cross-site POSTs with `text/plain` need no CORS preflight, and
//! browsers apply no CORS to WebSockets). Requests without `Origin` (curl, services) and
//! pages served by the node itself are not affected.

use super::AppState;
use std::sync::Arc;
use warp::http::Method;
use warp::{Filter, Rejection};

/// The configured `[http] allowed_origins`.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginPolicy {
    patterns: Arc<[String]>,
}

/// A request whose `Origin` is not allowed (403 `forbidden`).
#[derive(Debug)]
pub(crate) struct ForbiddenOrigin(pub(crate) String);

impl warp::reject::Reject for ForbiddenOrigin {}

impl OriginPolicy {
    pub(crate) fn new(patterns: &[String]) -> OriginPolicy {
        OriginPolicy {
            patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request from `origin` to a node reached as `host` (the `Host` header) may
    /// change state.
    pub(crate) fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        let authority = origin.split_once("://").map(|(_, a)| a);
        if authority.is_some() && authority == host.map(|h| h.to_ascii_lowercase()).as_deref() {
            return true;
        }
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), origin.as_bytes()))
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Refuses a state-changing request (any method but GET, HEAD and OPTIONS) or a WebSocket
/// upgrade whose `Origin` is not allowed.
pub(crate) fn guard(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let policy = state.origins.clone();
    warp::method()
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("upgrade"))
        .and_then(
            move |method: Method,
                  origin: Option<String>,
                  host: Option<String>,
                  upgrade: Option<String>| {
                let policy = policy.clone();
                async move {
                    let reads = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
                    match origin {
                        Some(o) if (!reads || upgrade.is_some()) && !policy.allows(&o, host.as_deref()) => {
                            metrics::counter!("starling_http_refused_total", "reason" => "origin")
                                .increment(1);
                            tracing::debug!(origin = %o, %method, "request from a disallowed origin refused");
                            Err(warp::reject::custom(ForbiddenOrigin(o)))
                        }
                        _ => Ok(()),
                    }
                }
            },
        )
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn nothing_cross_site_is_allowed_by_default() {
        let p = policy(&[]);
        assert!(!p.allows("https://evil.example", Some("127.0.0.1:8080")));
        assert!(!p.allows("null", Some("127.0.0.1:8080")));
        // A page served by the node itself is same-origin.
        assert!(p.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!p.allows("http://127.0.0.1:8081", Some("127.0.0.1:8080")));
        assert!(!p.allows("http://127.0.0.1:8080", None));
    }

    #[test]
    fn patterns_match_whole_origins() {
        let p = policy(&["http://localhost:*", "https://*.example.com", "null"]);
        assert!(p.allows("http://localhost:8000", None));
        assert!(p.allows("HTTP://LOCALHOST:3000", None));
        assert!(p.allows("null", None));
        assert!(p.allows("https://app.example.com", None));
        assert!(!p.allows("http://localhost.evil.com:8000", None));
        assert!(!p.allows("https://example.com.evil.org", None));
        assert!(!p.allows("https://app.example.com:8443", None));
        assert!(!p.allows("http://app.example.com", None));
        assert!(policy(&["*"]).allows("https://anything.example", None));
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(!glob(b"a*b*c", b"aXbYbZ"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"", b"x"));
    }
}
