//! CORS on the wire: preflights on every `/v1` route, `Access-Control-Allow-Origin` on
//! every response to an allowed page (SSE and errors included), nothing for any other page,
//! and the served browser client.

use crate::harness::TestNode;
use reqwest::header::HeaderMap;
use reqwest::Method;

const PAGE: &str = "http://localhost:5173";
const EVIL: &str = "https://evil.example";
/// Listed exactly: the only kind of origin that may send cookies.
const APP: &str = "https://app.example.com";

fn node() -> TestNode {
    TestNode::start(&format!(
        "[http]\nallowed_origins = [\"http://localhost:*\", \"{APP}\"]\n"
    ))
}

async fn request(node: &TestNode, method: Method, path: &str, origin: &str) -> (u16, HeaderMap) {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("{}{path}", node.http()))
        .header("origin", origin);
    if method == Method::OPTIONS {
        req = req.header("access-control-request-method", "POST").header(
            "access-control-request-headers",
            "content-type, authorization",
        );
    } else if method == Method::POST {
        req = req
            .header("content-type", "application/json")
            .body(r#"{"data":{"n":1}}"#);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.headers().clone())
}

fn allowed_origin(h: &HeaderMap) -> Option<&str> {
    h.get("access-control-allow-origin")?.to_str().ok()
}

#[tokio::test]
async fn an_allowed_page_gets_preflights_answered_on_every_v1_route() {
    let node = node();
    for path in [
        "/v1/topics/chat/messages",
        "/v1/topics/chat/events",
        "/v1/events?topic=chat",
        "/v1/topics/chat/consumers/c1/ack",
        "/v1/topics/chat/consumers/c1",
        "/v1/topics/chat",
        "/v1/ws",
        "/v1/cluster",
    ] {
        let (status, h) = request(&node, Method::OPTIONS, path, PAGE).await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(allowed_origin(&h), Some(PAGE), "{path}");
        assert_eq!(h.get("access-control-allow-credentials"), None, "{path}");
        let headers = h["access-control-allow-headers"].to_str().unwrap();
        for name in ["Authorization", "Content-Type", "Last-Event-ID"] {
            assert!(headers.contains(name), "{path}: {headers}");
        }
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(h.contains_key("access-control-max-age"), "{path}");
    }
    let (status, h) = request(&node, Method::OPTIONS, "/v1/topics/chat/messages", APP).await;
    assert_eq!((status, allowed_origin(&h)), (204, Some(APP)));
    assert_eq!(h["access-control-allow-credentials"], "true");
    let (status, h) = request(&node, Method::OPTIONS, "/v1/topics/chat/messages", EVIL).await;
    assert_eq!(status, 403);
    assert_eq!(allowed_origin(&h), None);
}

#[tokio::test]
async fn every_response_to_an_allowed_page_carries_its_origin_and_no_other_page_does() {
    let node = node();
    let cases = [
        (Method::POST, "/v1/topics/chat/messages", 201),
        (Method::GET, "/v1/topics/chat", 200),
        (
            Method::GET,
            "/v1/topics/chat/messages?after=0&timeout=0",
            200,
        ),
        (Method::GET, "/v1/topics/bad%20name", 400),
        (Method::GET, "/v1/nothing-here", 404),
        (Method::POST, "/v1/topics/%24dlq.chat/messages", 403),
    ];
    for (method, path, expected) in cases.clone() {
        let (status, h) = request(&node, method.clone(), path, PAGE).await;
        assert_eq!(status, expected, "{method} {path}");
        assert_eq!(allowed_origin(&h), Some(PAGE), "{method} {path}");
        assert_eq!(h.get("access-control-allow-credentials"), None);
        assert_eq!(h["vary"], "Origin");
    }
    // An SSE stream: the headers come before the first event.
    let res = reqwest::Client::new()
        .get(format!("{}/v1/topics/chat/events?after=0", node.http()))
        .header("origin", PAGE)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    assert_eq!(allowed_origin(res.headers()), Some(PAGE));
    drop(res);
    // Another site's page may read nothing, not even what anyone may GET.
    for path in [
        "/v1/topics/chat",
        "/v1/topics/chat/messages?after=0&timeout=0",
    ] {
        let (status, h) = request(&node, Method::GET, path, EVIL).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(allowed_origin(&h), None, "{path}");
    }
}

#[tokio::test]
async fn every_node_serves_the_browser_client_to_any_page() {
    let node = node();
    let get = |origin: &'static str, tag: Option<String>| {
        let mut req = reqwest::Client::new()
            .get(format!("{}/v1/client.js", node.http()))
            .header("origin", origin);
        if let Some(tag) = tag {
            req = req.header("if-none-match", tag);
        }
        async move { req.send().await.expect("client.js") }
    };
    let res = get(EVIL, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(allowed_origin(res.headers()), Some("*"));
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let tag = res.headers()["etag"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    assert!(body.contains("export class Starling"), "not the client");
    assert_eq!(get(PAGE, Some(tag)).await.status(), 304);
    let types = reqwest::get(format!("{}/v1/client.d.ts", node.http()))
        .await
        .expect("client.d.ts");
    assert_eq!(types.status(), 200);
    assert!(types.text().await.unwrap().contains("Starling"));
}
