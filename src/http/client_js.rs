//! `GET /v1/client.js` and `GET /v1/client.d.ts`: the browser client (`web/client.js`) and
//! its TypeScript declarations, embedded in the binary so every node serves the version
//! that speaks its protocol.
//!
//! Both are public code, so any page may load them (`Access-Control-Allow-Origin: *`; the
//! requests the client then makes are subject to `[http] allowed_origins` like any other).
//! Browsers revalidate them on every load (`no-cache`) and get 304 while the `ETag`, a hash
//! of the file, matches.

use crate::protocol::placement::stable_hash;
use std::sync::OnceLock;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

const CLIENT_JS: &str = include_str!("../../web/client.js");
const CLIENT_DTS: &str = include_str!("../../web/client.d.ts");

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

static JS: Asset = Asset {
    body: CLIENT_JS,
    content_type: "text/javascript; charset=utf-8",
    etag: OnceLock::new(),
};
static DTS: Asset = Asset {
    body: CLIENT_DTS,
    content_type: "application/typescript; charset=utf-8",
    etag: OnceLock::new(),
};

impl Asset {
    fn etag(&self) -> &str {
        self.etag
            .get_or_init(|| format!("\"{:016x}\"", stable_hash(self.body.as_bytes())))
    }

    /// The file, or 304 if the browser's copy (`If-None-Match`) is this one.
    fn reply(&self, if_none_match: Option<String>) -> Response {
        let fresh = if_none_match.is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == self.etag())
        });
        let mut res = if fresh {
            let mut res = Response::new(String::new().into());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else {
            let mut res = Response::new(self.body.into());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            res
        };
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        if let Ok(tag) = HeaderValue::from_str(self.etag()) {
            h.insert(header::ETAG, tag);
        }
        res
    }
}

/// Both files' routes.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let file = |name: &'static str, asset: &'static Asset| {
        warp::path("v1")
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::get())
            .and(warp::header::optional::<String>("if-none-match"))
            .map(move |tag| asset.reply(tag))
    };
    file("client.js", &JS).or(file("client.d.ts", &DTS)).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_etag_gets_304_and_another_the_file() {
        let tag = JS.etag().to_string();
        let res = JS.reply(Some(format!("\"x\", W/{tag}")));
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let res = JS.reply(Some("\"stale\"".into()));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::ETAG], tag.as_str());
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_ne!(JS.etag(), DTS.etag());
    }
}
