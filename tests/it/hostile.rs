//! Hostile and careless clients: silent and slow sockets, half-sent bodies, connection
//! floods, readers that stop reading, WebSockets that never answer pings, requests hyper
//! cannot parse, and cross-site pages. Each test talks to a real node over raw sockets.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `request` on a fresh connection and reads the reply until the server closes it.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may answer and close before it has read all of an oversized request.
    let _ = s.write_all(request);
    read_reply(&mut s)
}

/// Reads one reply (head and `content-length` body, or until EOF).
fn read_reply(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                return reply_parts(head, body);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let text = String::from_utf8_lossy(&buf).to_string();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                return reply_parts(head, body);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Status, head and body of a reply.
fn reply_parts(head: &str, body: &str) -> (u16, String, String) {
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Asserts that the node's counter `name{label}` reached `at_least`.
async fn assert_counted(node: &TestNode, name: &str, label: &str, at_least: f64) {
    let value = node.metric(name, label).await;
    assert!(
        value >= at_least,
        "{name}{{{label}}} is {value}, expected at least {at_least}"
    );
}

fn error_code(body: &str) -> String {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Whether the server has closed `s` (EOF or reset), without waiting.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

const SLOW_LIMITS: &str = "[http]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nmax_pending_connections = 8\nmax_connections = 200\n";

#[tokio::test]
async fn silent_and_trickling_sockets_are_dropped_and_normal_clients_are_served() {
    let node = TestNode::start(SLOW_LIMITS);
    // Far more silent sockets than may wait for a first request head, and some that send a
    // header byte now and then.
    let mut silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    // One that made a request, read the reply, and went silent on the kept-alive connection.
    let mut kept = TcpStream::connect(node.addr).unwrap();
    kept.set_read_timeout(Some(DEADLINE)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut kept).0, 200);
    let mut trickle: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    // A normal client is served meanwhile: health, a publish, a poll.
    let (status, _) = get_json(&node, "/healthz").await;
    assert_eq!(status, 200);
    let offset = publish_ok(&node, "busy", json!("still here")).await;
    let (status, body) = get_json(&node, "/v1/topics/busy/messages?after=0&timeout=0").await;
    assert_eq!((status, body["next"].as_u64()), (200, Some(offset)));
    // Every slow socket is closed by the server.
    wait_for(
        "the server to close every silent and trickling socket",
        || {
            for s in &mut trickle {
                let _ = s.write_all(b"a");
            }
            let open = silent
                .iter_mut()
                .chain(trickle.iter_mut())
                .chain(std::iter::once(&mut kept))
                .map(closed_by_server)
                .filter(|closed| !closed)
                .count();
            async move { (open == 0).then_some(()) }
        },
    )
    .await;
    assert_counted(
        &node,
        "starling_http_timeouts_total",
        "kind=\"header\"",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_half_sent_body_is_answered_408_and_the_connection_freed() {
    let node = TestNode::start(SLOW_LIMITS);
    let (status, _head, body) = raw_exchange(
        node.addr,
        b"POST /v1/topics/t/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"data\":",
    );
    assert_eq!(status, 408, "{body}");
    assert_eq!(error_code(&body), "bad_request");
    assert_counted(&node, "starling_http_timeouts_total", "kind=\"body\"", 1.0).await;
}

#[tokio::test]
async fn connections_past_the_maximum_are_refused_with_503_and_counted() {
    let node = TestNode::start("[http]\nmax_connections = 4\nmax_pending_connections = 4\n");
    // Four SSE streams hold every connection the node allows.
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(SseClient::connect(&node, "/v1/topics/full/events", None).await);
    }
    let (status, _head, body) =
        raw_exchange(node.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "unavailable");
    // One leaves: the node serves again, and says how many it refused.
    streams.pop();
    let refused = wait_for("a free connection slot", || async {
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .ok()?;
        let text = c
            .get(format!("{}/metrics", node.http()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("starling_http_refused_total{reason=\"max_connections\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    })
    .await;
    assert!(refused >= 1.0);
}

#[tokio::test]
async fn a_slow_sse_reader_is_reset_at_the_socket() {
    let node =
        TestNode::start("[limits]\nmax_message_bytes = 65536\nmax_outbound_queue_bytes = 140000\n");
    let mut stream = non_reader(
        &node,
        &["GET /v1/topics/big/events HTTP/1.1\r\nHost: x\r\n\r\n"],
    );
    flood_until_slow_consumer(&node, "big").await;
    // The server reset the connection: what it had not sent was discarded, not kept
    // in a socket that stays open.
    assert_eq!(read_to_end(&mut stream), Err(ErrorKind::ConnectionReset));
}

/// Reads raw WebSocket frames until a close frame; returns its code (None: EOF first).
fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse whole server frames (never masked) from the front of `buf`.
        while buf.len() >= 2 {
            let opcode = buf[0] & 0x0f;
            let (len, start) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < start + len {
                break;
            }
            if opcode == 0x8 {
                return (len >= 2).then(|| u16::from_be_bytes([buf[start], buf[start + 1]]));
            }
            buf.drain(..start + len);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_websocket_that_never_answers_pings_gets_a_close_frame() {
    let node =
        TestNode::start("[heartbeat]\nws_ping_interval_ms = 200\nws_pong_timeout_ms = 300\n");
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    // Skip the 101 head; the frames follow.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(read_close_code(&mut s), Some(4009));
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_json_error_body() {
    let node = TestNode::start("");
    let (status, _, body) = raw_exchange(node.addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "bad_request");
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    // Far past what hyper buffers for a head (about 400 KB, and up to twice that when one
    // read brings much of it), so it can never parse.
    big.extend(std::iter::repeat_n(b'a', 2_000_000));
    big.extend_from_slice(b"\r\n\r\n");
    let (status, _, body) = raw_exchange(node.addr, &big);
    assert_eq!(status, 431);
    assert_eq!(error_code(&body), "bad_request");
    // The node goes on serving.
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}

async fn post_with_origin(node: &TestNode, origin: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/topics/site/messages", node.http()))
        .header("content-type", "text/plain")
        .body(r#"{"data":"x"}"#);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let res = req.send().await.expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn ws_status_with_origin(node: &TestNode, origin: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = node.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test]
async fn cross_site_posts_and_websockets_are_refused_unless_allowed() {
    let node = TestNode::start("");
    let (status, body) = post_with_origin(&node, Some("https://evil.example")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(post_with_origin(&node, Some("null")).await.0, 403);
    assert_eq!(
        ws_status_with_origin(&node, "https://evil.example").await,
        403
    );
    // curl and services send no Origin; a page served by the node itself is same-origin.
    assert_eq!(post_with_origin(&node, None).await.0, 201);
    assert_eq!(post_with_origin(&node, Some(&node.http())).await.0, 201);
    assert_eq!(ws_status_with_origin(&node, &node.http()).await, 101);
    // Nothing refused was published.
    let (_, info) = get_json(&node, "/v1/topics/site").await;
    assert_eq!(info["head"], 2);

    let open = TestNode::start("[http]\nallowed_origins = [\"http://localhost:*\"]\n");
    assert_eq!(
        post_with_origin(&open, Some("http://localhost:8000"))
            .await
            .0,
        201
    );
    assert_eq!(
        ws_status_with_origin(&open, "http://localhost:8000").await,
        101
    );
    assert_eq!(
        post_with_origin(&open, Some("http://localhost.evil.example"))
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn the_oldest_connections_without_a_request_head_make_room_for_new_ones() {
    // Heads may take a minute: only eviction can free these sockets within the test.
    let node = TestNode::start(
        "[http]\nheader_read_timeout_ms = 60000\nmax_pending_connections = 8\nmax_connections = 200\n",
    );
    let mut silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
    wait_for("the oldest silent sockets to be dropped", || {
        let closed = silent
            .iter_mut()
            .take(32)
            .map(closed_by_server)
            .filter(|c| *c)
            .count();
        async move { (closed == 32).then_some(()) }
    })
    .await;
    // The newest ones still wait for their head: nothing but eviction closed the others.
    let newest_open = silent
        .iter_mut()
        .skip(34)
        .map(closed_by_server)
        .filter(|c| !c)
        .count();
    assert!(
        newest_open >= 4,
        "only {newest_open} of the newest are still open"
    );
    assert_counted(
        &node,
        "starling_http_refused_total",
        "reason=\"pending_evicted\"",
        32.0,
    )
    .await;
}

#[tokio::test]
async fn a_long_poll_reader_that_stops_reading_is_dropped_by_the_write_timeout() {
    let node =
        TestNode::start("[http]\nwrite_timeout_ms = 1000\n[limits]\nmax_message_bytes = 65536\n");
    let payload = json!("x".repeat(60_000));
    for _ in 0..100 {
        publish_ok(&node, "bulk", payload.clone()).await;
    }
    // Pipelined poll replies (each up to the 1 MiB outbound bound; more than the kernel's
    // socket buffers together) to a client that never reads.
    let poll =
        "GET /v1/topics/bulk/messages?after=0&limit=100&timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = non_reader(&node, &[poll; 12]);
    wait_for("the stalled write to time out", || async {
        (node
            .count("starling_http_timeouts_total", "kind=\"write\"")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // The connection was reset, its unsent megabytes dropped.
    assert_eq!(read_to_end(&mut stream), Err(ErrorKind::ConnectionReset));
}

async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn cross_site_consumer_polls_are_refused_and_dns_rebinding_gets_no_pass() {
    let node = TestNode::start("");
    publish_ok(&node, "jobs", json!(1)).await;
    let c = reqwest::Client::new();
    let poll = format!(
        "{}/v1/topics/jobs/messages?consumer=w&after=0&timeout=0",
        node.http()
    );
    // An <img src> on another site: no Origin, but the browser says it is cross-site.
    assert_eq!(
        status_of(c.get(&poll).header("sec-fetch-site", "cross-site")).await,
        403
    );
    assert_eq!(
        status_of(c.get(&poll).header("origin", "https://evil.example")).await,
        403
    );
    // The key spelt with a percent-escape is the same key to the poll route.
    let escaped = poll.replace("consumer=", "consum%65r=");
    assert_eq!(
        status_of(c.get(&escaped).header("sec-fetch-site", "cross-site")).await,
        403
    );
    // Reading a stream is not refused here (CORS governs what a page may read).
    let read = format!("{}/v1/topics/jobs/messages?after=0&timeout=0", node.http());
    assert_eq!(
        status_of(c.get(&read).header("sec-fetch-site", "cross-site")).await,
        200
    );
    assert_eq!(status_of(c.get(&poll)).await, 200);
    // A page whose domain was rebound to the node's address sends a Host of its choosing.
    let port = node.addr.port();
    let rebound = c
        .post(format!("{}/v1/topics/jobs/messages", node.http()))
        .header("origin", format!("http://rebound.example:{port}"))
        .header("host", format!("rebound.example:{port}"))
        .body(r#"{"data":"x"}"#);
    assert_eq!(status_of(rebound).await, 403);
}

#[tokio::test]
async fn under_a_low_open_file_limit_silent_sockets_cannot_lock_out_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let text = format!(
        "data_dir = {:?}\n[http]\nheader_read_timeout_ms = 60000\n[[nodes]]\nid = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\n",
        dir.path().join("data").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_starling");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 200 && exec {bin} node n1 --config {}",
            config.display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let addr: SocketAddr = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("listening on http://")
                .nth(1)
                .map(|a| a.trim().to_string())
        })
        .expect("node address")
        .parse()
        .unwrap();
    // More silent sockets than the node has descriptors.
    let _silent: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    let url = format!("http://{addr}/healthz");
    wait_for("a normal client to be served", || async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let res = client.get(&url).send().await.ok()?;
        (res.status().as_u16() == 200).then_some(())
    })
    .await;
}

/// Kills the node when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
