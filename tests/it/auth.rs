//! Authentication and permissions, black-box: tokens from the header, the query and the
//! cookie; each kind of failure a 401, a missing grant a 403; patterns with `*`, `>`,
//! `{sub}` and `$`; anonymous grants; PEM keys and a JWKS served by the test; WebSocket
//! refresh and the close at expiry; SSE streams ending at expiry; consumer acks and
//! settings; and malformed tokens that never take the node down.

use crate::harness::{enc, wait_for, TestNode, WsClient};
use futures_util::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-0123456789-0123456789";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// An HS256 token with `claims` (an `exp` an hour away unless given).
fn token(mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + 3600);
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
}

fn grants(sub: &str, publish: &[&str], subscribe: &[&str]) -> String {
    token(json!({"sub": sub, "starling": {"publish": publish, "subscribe": subscribe}}))
}

fn hmac_node(extra: &str) -> TestNode {
    TestNode::start(&format!("[auth]\nhmac_secret = \"{SECRET}\"\n{extra}"))
}

/// How a request carries its token.
enum Via<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
    Query(&'a str),
    Cookie(&'a str),
}

async fn call(
    node: &TestNode,
    method: &str,
    path: &str,
    via: Via<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut url = format!("{}{path}", node.http());
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    if let Via::Query(t) = via {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("token={t}"));
    }
    let mut req = client.request(method, url);
    match via {
        Via::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
        Via::Header(h) => req = req.header("authorization", h),
        Via::Cookie(t) => req = req.header("cookie", format!("theme=dark; starling_token={t}")),
        Via::None | Via::Query(_) => {}
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn publish(node: &TestNode, topic: &str, via: Via<'_>) -> (u16, Value) {
    let path = format!("/v1/topics/{}/messages", enc(topic));
    call(node, "POST", &path, via, Some(json!({"data": {"n": 1}}))).await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_token_comes_in_the_header_the_query_or_the_cookie_and_every_failure_is_a_401() {
    let node = hmac_node("[auth.anonymous]\nsubscribe = [\"public.>\"]\n");
    let alice = grants("alice", &["chat.>"], &["chat.>"]);
    for via in [Via::Bearer(&alice), Via::Query(&alice), Via::Cookie(&alice)] {
        assert_eq!(publish(&node, "chat.room", via).await.0, 201);
    }
    let expired = token(json!({"sub": "alice", "exp": now() - 600,
        "starling": {"publish": ["chat.>"]}}));
    let forged = {
        let key = EncodingKey::from_secret(b"not-the-secret-0123456789-0123456");
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now() + 60}),
            &key,
        )
        .unwrap()
    };
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDB9.";
    for (via, what) in [
        (Via::None, "no token"),
        (Via::Bearer(&expired), "expired"),
        (Via::Bearer(&forged), "another key"),
        (Via::Bearer(none), "alg none"),
        (Via::Bearer("garbage"), "garbage"),
        (Via::Header("Basic YWxpY2U6cHc="), "another scheme"),
        (Via::Query(&expired), "expired in the query"),
        (Via::Cookie("x.y.z"), "garbage cookie"),
    ] {
        let (status, body) = publish(&node, "chat.room", via).await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{what}: {body}"
        );
    }
    // A valid token without the grant.
    let (status, body) = publish(&node, "news", Via::Bearer(&alice)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    // Anonymous: the subscribe grant, and nothing else.
    let (status, body) = call(&node, "GET", "/v1/topics/public.news", Via::None, None).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // Beyond them, a client without a token is asked for one.
    assert_eq!(publish(&node, "public.news", Via::None).await.0, 401);
    let (status, _) = call(&node, "GET", "/v1/topics/chat.room", Via::None, None).await;
    assert_eq!(status, 401);
    // Open routes; and the ones for operators.
    for path in ["/healthz", "/readyz", "/v1/client.js"] {
        assert_eq!(
            call(&node, "GET", path, Via::None, None).await.0,
            200,
            "{path}"
        );
    }
    assert_eq!(
        call(&node, "GET", "/v1/cluster", Via::None, None).await.0,
        200
    );
    let admin = token(json!({"sub": "ops", "starling": {"admin": true}}));
    let metrics = |via| async { call(&node, "GET", "/metrics", via, None).await.0 };
    assert_eq!(metrics(Via::Bearer(&alice)).await, 403);
    let res = reqwest::Client::new()
        .get(format!("{}/metrics", node.http()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for reason in ["missing", "expired", "signature", "malformed", "forbidden"] {
        assert!(
            text.contains(&format!(
                "starling_auth_denied_total{{reason=\"{reason}\"}}"
            )),
            "no denial metric for {reason}"
        );
    }
}

#[tokio::test]
async fn patterns_grant_by_segment_subject_and_never_a_system_topic_through_a_wildcard() {
    let node = hmac_node("");
    let alice = token(json!({"sub": "alice", "starling": {
        "publish": ["user.{sub}", "room.*"],
        "subscribe": ["user.{sub}.>", ">"]}}));
    for (topic, status) in [
        ("user.alice", 201),
        ("user.bob", 403),
        ("room.a", 201),
        ("room.a.b", 403),
        ("room", 403),
    ] {
        assert_eq!(
            publish(&node, topic, Via::Bearer(&alice)).await.0,
            status,
            "{topic}"
        );
    }
    let info = |topic: &'static str, t: String| {
        let node = &node;
        async move {
            let path = format!("/v1/topics/{}", enc(topic));
            call(node, "GET", &path, Via::Bearer(&t), None).await.0
        }
    };
    assert_eq!(info("user.alice", alice.clone()).await, 200);
    // `>` covers every topic but a `$` one: dead letters need a grant that names them.
    assert_eq!(info("$dlq.room.a", alice.clone()).await, 403);
    let ops = token(json!({"sub": "ops", "starling": {"subscribe": ["$dlq.>"]}}));
    assert_eq!(info("$dlq.room.a", ops).await, 404);
}

fn pem_token(alg: Algorithm, key: &str) -> String {
    let pem = std::fs::read(fixture(key)).expect("fixture");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("key");
    let claims = json!({"sub": "svc", "exp": now() + 60, "starling": {"publish": [">"]}});
    encode(&Header::new(alg), &claims, &key).expect("token")
}

#[tokio::test]
async fn public_keys_verify_their_own_algorithms_and_no_other() {
    let files: Vec<String> = ["rsa.pub", "ec.pub", "ed.pub"]
        .iter()
        .map(|f| format!("{:?}", fixture(f).display().to_string()))
        .collect();
    let node = TestNode::start(&format!(
        "[auth]\npublic_key_files = [{}]\n",
        files.join(", ")
    ));
    for (alg, key) in [
        (Algorithm::RS256, "rsa.key"),
        (Algorithm::ES256, "ec.key"),
        (Algorithm::EdDSA, "ed.key"),
    ] {
        let t = pem_token(alg, key);
        assert_eq!(
            publish(&node, "svc", Via::Bearer(&t)).await.0,
            201,
            "{alg:?}"
        );
    }
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    let public = std::fs::read(fixture("rsa.pub")).unwrap();
    let claims = json!({"exp": now() + 60, "starling": {"publish": [">"]}});
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let (status, body) = publish(&node, "svc", Via::Bearer(&confused)).await;
    assert_eq!(status, 401, "{body}");
}

/// A JWKS server whose key set the test changes; counts the fetches.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks_server() -> JwksServer {
    use warp::Filter;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let route = warp::path!("jwks").map(move || {
        f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let keys = k.lock().unwrap().clone();
        warp::reply::json(&json!({ "keys": keys }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(warp::serve(route).incoming(listener).run());
    JwksServer {
        url: format!("http://{addr}/jwks"),
        keys,
        fetches,
        task,
    }
}

/// Base64url without padding (RFC 7515), for a JWK's `k`.
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An HMAC key as a JWK, and a token it signs.
fn oct(kid: &str, secret: &str) -> (Value, String) {
    let k = base64url(secret.as_bytes());
    let jwk = json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": k});
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let claims = json!({"exp": now() + 60, "starling": {"publish": [">"]}});
    let t = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    (jwk, t)
}

#[tokio::test]
async fn a_jwks_is_fetched_again_for_a_new_key_id_but_not_for_every_made_up_one() {
    let jwks = jwks_server().await;
    let (k1, t1) = oct("k1", "first-secret-0123456789-0123456789");
    let (k2, t2) = oct("k2", "second-secret-0123456789-012345678");
    jwks.keys.lock().unwrap().push(k1);
    let node = TestNode::start(&format!(
        "[auth]\njwks_url = \"{}\"\njwks_refetch_min_ms = 300\n",
        jwks.url
    ));
    assert_eq!(publish(&node, "t", Via::Bearer(&t1)).await.0, 201);
    assert_eq!(publish(&node, "t", Via::Bearer(&t2)).await.0, 401);
    // The provider rotates in k2: the node picks it up (once its refetch bound allows).
    jwks.keys.lock().unwrap().push(k2);
    wait_for("the node to accept the rotated-in key", || async {
        (publish(&node, "t", Via::Bearer(&t2)).await.0 == 201).then_some(())
    })
    .await;
    // A burst of tokens with made-up key ids costs at most one fetch per bound.
    let before = jwks.fetches.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    for i in 0..30 {
        let (_, t) = oct(
            &format!("made-up-{i}"),
            "x-secret-0123456789-0123456789-012",
        );
        assert_eq!(publish(&node, "t", Via::Bearer(&t)).await.0, 401);
    }
    let fetched = jwks.fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    let bound = started.elapsed().as_millis() as usize / 300 + 1;
    assert!(
        fetched <= bound,
        "{fetched} fetches for 30 unknown key ids (bound {bound})"
    );
}

async fn ws_connect(node: &TestNode, token: Option<&str>) -> Result<WsClient, u16> {
    let mut url = node.ws_url();
    if let Some(t) = token {
        url = format!("{url}?token={t}");
    }
    let req = url.into_client_request().unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(WsClient { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test]
async fn a_websocket_needs_a_token_is_refused_frame_by_frame_and_refreshes_it() {
    let node = hmac_node("leeway_secs = 0\n");
    assert_eq!(ws_connect(&node, None).await.err(), Some(401));
    assert_eq!(ws_connect(&node, Some("garbage")).await.err(), Some(401));
    let short = token(json!({"sub": "alice", "exp": now() + 3,
        "starling": {"publish": ["chat"], "subscribe": ["chat"]}}));
    let mut ws = ws_connect(&node, Some(&short)).await.expect("connects");
    ws.send(json!({"type": "subscribe", "topic": "news", "req": 1}))
        .await;
    let e = ws.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["req"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    ws.send(json!({"type": "publish", "topic": "news", "data": 1, "req": 2}))
        .await;
    let e = ws.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["req"].as_i64()),
        (Some("forbidden"), Some(2))
    );
    // Still open, and the grant works.
    ws.send(json!({"type": "publish", "topic": "chat", "data": 1, "req": 3}))
        .await;
    assert_eq!(ws.recv_type("published").await["req"], 3);
    // A refresh for another subject is refused; for the same one it moves the expiry.
    let bob = token(json!({"sub": "bob", "starling": {"publish": [">"]}}));
    ws.send(json!({"type": "auth", "token": bob, "req": 4}))
        .await;
    assert_eq!(ws.recv_type("error").await["code"], "unauthorized");
    let exp = now() + 3600;
    let long = token(json!({"sub": "alice", "exp": exp, "starling": {"publish": ["chat"]}}));
    ws.send(json!({"type": "auth", "token": long, "req": 5}))
        .await;
    let authed = ws.recv_type("authed").await;
    assert_eq!(
        (authed["req"].as_i64(), authed["exp"].as_u64()),
        (Some(5), Some(exp))
    );
    // The refreshed token's grants apply: subscribing is no longer granted.
    ws.send(json!({"type": "subscribe", "topic": "chat", "req": 6}))
        .await;
    assert_eq!(ws.recv_type("error").await["code"], "forbidden");
    // Past the first token's expiry, the connection still answers.
    let first_exp = now() + 4;
    wait_for("the first token's expiry to pass", || async {
        (now() > first_exp).then_some(())
    })
    .await;
    ws.send(json!({"type": "ping", "req": 7})).await;
    assert_eq!(ws.recv_type("pong").await["req"], 7);

    // Without a refresh, the connection is closed with 4001 at expiry.
    let short = token(json!({"sub": "carol", "exp": now() + 2, "starling": {"subscribe": [">"]}}));
    let mut ws = ws_connect(&node, Some(&short)).await.expect("connects");
    assert_eq!(ws.closed().await, Some(4001));
}

#[tokio::test]
async fn an_sse_stream_ends_at_its_tokens_expiry_and_a_multi_topic_one_needs_every_grant() {
    let node = hmac_node("leeway_secs = 0\n");
    let t = token(json!({"sub": "d", "exp": now() + 2, "starling": {"subscribe": ["a", "b"]}}));
    let (status, body) = call(
        &node,
        "GET",
        "/v1/events?topic=a&topic=c",
        Via::Bearer(&t),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let res = reqwest::Client::new()
        .get(format!(
            "{}/v1/events?topic=a&topic=b&token={t}",
            node.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let ended = tokio::time::timeout(crate::harness::DEADLINE, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
}

#[tokio::test]
async fn acks_need_the_subscribe_grant_and_consumer_settings_an_admin() {
    let node = hmac_node("");
    let publisher = grants("p", &["jobs"], &[]);
    let worker = grants("w", &[], &["jobs"]);
    let admin = token(json!({"sub": "ops", "starling": {"admin": true}}));
    assert_eq!(publish(&node, "jobs", Via::Bearer(&publisher)).await.0, 201);
    let ack = "/v1/topics/jobs/consumers/c1/ack";
    let body = json!({"upto": 1});
    let (status, _) = call(
        &node,
        "POST",
        ack,
        Via::Bearer(&publisher),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let pull = "/v1/topics/jobs/messages?consumer=c1&after=0&timeout=0";
    let (status, reply) = call(&node, "GET", pull, Via::Bearer(&worker), None).await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = call(&node, "POST", ack, Via::Bearer(&worker), Some(body)).await;
    assert_eq!(status, 200);
    let settings = json!({"max_deliver": 3});
    let path = "/v1/topics/jobs/consumers/c1";
    let (status, _) = call(
        &node,
        "PUT",
        path,
        Via::Bearer(&worker),
        Some(settings.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, reply) = call(&node, "PUT", path, Via::Bearer(&admin), Some(settings)).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn malformed_tokens_and_headers_get_401_and_the_node_stays_up() {
    let node = hmac_node("");
    let valid = grants("a", &[">"], &[">"]);
    let (head, rest) = valid.split_once('.').unwrap();
    let mut cases: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "a.b".into(),
        format!("{head}."),
        format!("{head}.{rest}x"),
        format!("x{valid}"),
        valid.replace('.', ""),
        "e30.e30.e30".into(),
        "\u{7f}".into(),
        "=".repeat(4000),
    ];
    // Deterministic noise: printable junk and flipped characters of a valid token.
    let mut seed = 0x2545f4914f6cdd1du64;
    for _ in 0..60 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut t: Vec<u8> = valid.clone().into_bytes();
        let i = (seed as usize) % t.len();
        let flipped = b'!' + (seed >> 32) as u8 % 90;
        t[i] = if t[i] == flipped {
            flipped + 1
        } else {
            flipped
        };
        cases.push(String::from_utf8_lossy(&t).into_owned());
    }
    for (i, t) in cases.iter().enumerate() {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/topics/x/messages", node.http()))
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/json")
            .body(r#"{"data":1}"#)
            .send()
            .await;
        let Ok(res) = res else {
            continue; // a header reqwest itself refuses to send
        };
        let status = res.status().as_u16();
        // A flipped character may land where it changes nothing (base64 padding bits).
        assert!(
            status == 401 || (status == 201 && t != &valid),
            "case {i} ({t:?}): {status}"
        );
    }
    // A header that is not ASCII text.
    let mut raw = std::net::TcpStream::connect(node.addr).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"GET /v1/topics/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(
        publish(&node, "x", Via::Bearer(&valid)).await.0,
        201,
        "the node is up"
    );
}

#[tokio::test]
async fn the_command_line_client_sends_its_token() {
    let node = hmac_node("");
    let t = grants("cli", &["cli"], &[]);
    let run = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_starling"));
        cmd.args(["pub", "cli", r#"{"n":1}"#, "--url", &node.http()]);
        cmd.env_remove("STARLING_TOKEN");
        if let Some(t) = token {
            cmd.env("STARLING_TOKEN", t);
        }
        cmd.output().expect("starling pub")
    };
    let refused = run(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("401") && said.contains("unauthorized"),
        "{said}"
    );
    let ok = run(Some(&t));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"offset\":1"));
}

#[tokio::test]
async fn a_publish_id_belongs_to_its_publisher() {
    let node = hmac_node("");
    let alice = grants("alice", &["orders"], &["orders"]);
    let mallory = grants("mallory", &["orders"], &[]);
    let with_id = |t: String| {
        let node = &node;
        async move {
            let path = "/v1/topics/orders/messages";
            let body = json!({"data": {"from": "x"}, "id": "order-1"});
            call(node, "POST", path, Via::Bearer(&t), Some(body)).await
        }
    };
    // Mallory publishes Alice's id first: it does not make Alice's publish a duplicate.
    let (status, first) = with_id(mallory.clone()).await;
    assert_eq!(
        (status, first["offset"].as_u64()),
        (201, Some(1)),
        "{first}"
    );
    let (status, real) = with_id(alice.clone()).await;
    assert_eq!((status, real["offset"].as_u64()), (201, Some(2)), "{real}");
    assert_eq!(real["id"], "order-1");
    // Alice's own retry is, over HTTP and over a WebSocket alike.
    let (status, again) = with_id(alice.clone()).await;
    assert_eq!(
        (
            status,
            again["offset"].as_u64(),
            again["duplicate"].as_bool()
        ),
        (200, Some(2), Some(true))
    );
    let mut ws = ws_connect(&node, Some(&alice)).await.expect("connects");
    ws.send(json!({"type": "publish", "topic": "orders", "data": 1, "id": "order-1", "req": 1}))
        .await;
    let p = ws.recv_type("published").await;
    assert_eq!(
        (
            p["offset"].as_u64(),
            p["duplicate"].as_bool(),
            p["id"].as_str()
        ),
        (Some(2), Some(true), Some("order-1"))
    );
    // Subscribers see the id as each publisher gave it.
    ws.send(json!({"type": "subscribe", "topic": "orders", "after": 0, "req": 2}))
        .await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let m = ws.recv_type("message").await;
        ids.push(m["id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(ids, ["order-1", "order-1"]);
}
