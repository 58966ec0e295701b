//! The `Origin` check: a browser page on another site must not publish, ack, consume or
//! open a WebSocket to a node (cross-site POSTs with `text/plain` need no CORS preflight,
//! browsers apply no CORS to WebSockets, and a plain `<img src>` can GET a consumer poll).
//! Requests without `Origin` or `Sec-Fetch-Site` (curl, services) are not affected.
//!
//! The node's own origin is the address it listens on (`http://127.0.0.1:8080`, and
//! `http://localhost:8080` on loopback), never the request's `Host` header: a page that
//! rebinds its own domain to the node's address (DNS rebinding) sends a `Host` of its own
//! choosing.

use super::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::Method;
use warp::{Filter, Rejection};

/// The configured `[http] allowed_origins`, and the node's own origins.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginPolicy {
    patterns: Arc<[String]>,
}

/// A request from a page whose origin is not allowed (403 `forbidden`).
#[derive(Debug, thiserror::Error)]
#[error("origin {0} is not allowed ([http] allowed_origins)")]
pub(crate) struct ForbiddenOrigin(pub(crate) String);

impl warp::reject::Reject for ForbiddenOrigin {}

impl OriginPolicy {
    /// `patterns` from the config, plus the origins of a page served from `own` (the
    /// node's listening address).
    pub(crate) fn new(patterns: &[String], own: SocketAddr) -> OriginPolicy {
        let mut all: Vec<String> = patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
        if !own.ip().is_unspecified() {
            all.push(format!("http://{own}"));
        }
        if own.ip().is_loopback() {
            all.push(format!("http://localhost:{}", own.port()));
        }
        OriginPolicy {
            patterns: all.into(),
        }
    }

    /// Whether a page from `origin` may send credentials (cookies): only an origin listed
    /// exactly, or the node's own. A `*` pattern matches sites nobody vetted one by one,
    /// and `null` is sent by any site's sandboxed frames and `data:` pages.
    pub(crate) fn trusts(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        origin != "null"
            && self
                .patterns
                .iter()
                .any(|p| !p.contains('*') && *p == origin)
    }

    /// Whether a page from `origin` may change state.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
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

/// Refuses a request from a disallowed page: a state-changing method (any but GET, HEAD
/// and OPTIONS), a WebSocket upgrade, or a consumer poll or stream (it leases messages and
/// creates groups). Browsers send `Origin` with the first two and with CORS-mode GETs; a
/// no-cors GET (`<img src>`) has no `Origin`, but `Sec-Fetch-Site` says it is cross-site.
pub(crate) fn guard(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let policy = state.origins.clone();
    warp::method()
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-fetch-site"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and_then(
            move |method: Method,
                  origin: Option<String>,
                  upgrade: Option<String>,
                  fetch_site: Option<String>,
                  query: String| {
                let policy = policy.clone();
                async move {
                    let reads = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
                    // Parsed as the routes parse it (a percent-encoded key is the same key);
                    // only for requests from a browser page.
                    let from_page = origin.is_some() || fetch_site.is_some();
                    let consumes = from_page
                        && super::reply::query_get(&super::reply::query_pairs(&query), "consumer")
                            .is_some();
                    let guarded = !reads || upgrade.is_some() || consumes;
                    let refused = match (&origin, fetch_site.as_deref()) {
                        _ if !guarded => None,
                        (Some(o), _) if !policy.allows(o) => Some(o.clone()),
                        (None, Some("cross-site" | "same-site")) if consumes => {
                            Some(format!("(a {} page)", fetch_site.as_deref().unwrap_or("")))
                        }
                        _ => None,
                    };
                    match refused {
                        Some(o) => {
                            metrics::counter!("starling_http_refused_total", "reason" => "origin")
                                .increment(1);
                            tracing::debug!(origin = %o, %method, "request from a disallowed origin refused");
                            Err(warp::reject::custom(ForbiddenOrigin(o)))
                        }
                        None => Ok(()),
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
        let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        OriginPolicy::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), own)
    }

    #[test]
    fn nothing_cross_site_is_allowed_by_default() {
        let p = policy(&[]);
        assert!(!p.allows("https://evil.example"));
        assert!(!p.allows("null"));
        // A page served by the node itself, by its own address only: a rebound domain
        // (DNS rebinding) is another origin.
        assert!(p.allows("http://127.0.0.1:8080"));
        assert!(p.allows("http://localhost:8080"));
        assert!(!p.allows("http://evil.example:8080"));
        assert!(!p.allows("http://127.0.0.1:8081"));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(!OriginPolicy::new(&[], any).allows("http://0.0.0.0:8080"));
    }

    #[test]
    fn patterns_match_whole_origins() {
        let p = policy(&["http://localhost:*", "https://*.example.com", "null"]);
        assert!(p.allows("http://localhost:8000"));
        assert!(p.allows("HTTP://LOCALHOST:3000"));
        assert!(p.allows("null"));
        assert!(p.allows("https://app.example.com"));
        assert!(!p.allows("http://localhost.evil.com:8000"));
        assert!(!p.allows("https://example.com.evil.org"));
        assert!(!p.allows("https://app.example.com:8443"));
        assert!(!p.allows("http://app.example.com"));
        assert!(policy(&["*"]).allows("https://anything.example"));
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(!glob(b"a*b*c", b"aXbYbZ"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"", b"x"));
    }
}
