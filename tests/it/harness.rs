//! Test harness: start and stop real node processes, talk to them with real clients, and
//! wait for state with a polling helper (never a bare sleep).

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a polling wait looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A `starling node` child process with its own data directory.
pub struct TestNode {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: String,
    /// Node id and config file of a node started from a multi-node config.
    configured: Option<(String, PathBuf)>,
}

impl TestNode {
    /// Starts a node in a fresh directory; `extra` is TOML (sections) added to the config.
    pub fn start(extra: &str) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node = TestNode::spawn(&dir, extra);
        node._tmp = Some(tmp);
        node
    }

    fn spawn(dir: &Path, extra: &str) -> TestNode {
        let path = write_single_config(dir, extra);
        let (child, addr) = spawn_node("n1", &path, "warn");
        TestNode {
            child,
            addr,
            dir: dir.to_path_buf(),
            _tmp: None,
            extra: extra.to_string(),
            configured: None,
        }
    }

    /// Starts nodes `(id, config file)` of a multi-node config (see `cluster_harness`)
    /// together, and returns once each serves; `dir` is where the cluster keeps its files.
    pub fn start_configured(nodes: &[(&str, &Path)], dir: &Path) -> Vec<TestNode> {
        let mut launched: Vec<_> = nodes
            .iter()
            .map(|(id, config)| (launch_node(id, config, CLUSTER_LOG), id, config))
            .collect();
        let addrs: Vec<Option<SocketAddr>> = launched
            .iter()
            .map(|((_, rx), _, _)| rx.recv_timeout(DEADLINE).ok()?.parse().ok())
            .collect();
        if addrs.iter().any(Option::is_none) {
            // No node may outlive a failed start.
            for ((child, _), _, _) in &mut launched {
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("a node did not print its address: {addrs:?}");
        }
        launched
            .into_iter()
            .zip(addrs.into_iter().flatten())
            .map(|(((child, _), id, config), addr)| TestNode {
                child,
                addr,
                dir: dir.to_path_buf(),
                _tmp: None,
                extra: String::new(),
                configured: Some((id.to_string(), config.to_path_buf())),
            })
            .collect()
    }

    /// Restarts the node on the same data directory (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        let (child, addr) = match &self.configured {
            Some((id, config)) => spawn_node(id, config, CLUSTER_LOG),
            None => spawn_node("n1", &write_single_config(&self.dir, &self.extra), "warn"),
        };
        self.child = child;
        self.addr = addr;
    }

    /// `kill -STOP`: the process hangs with its sockets open.
    pub fn stop(&self) {
        unsafe {
            libc::kill(self.pid(), libc::SIGSTOP);
        }
    }

    /// `kill -CONT`: a stopped process runs again.
    pub fn cont(&self) {
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        unsafe {
            libc::kill(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of a Prometheus metric (summed over the series whose labels match
    /// `filter`). The series must exist: a misspelt name or label fails the test instead of
    /// reading as 0. For a counter that appears only when first counted, see
    /// [`TestNode::count`].
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        self.series(name, filter)
            .await
            .unwrap_or_else(|| panic!("/metrics has no series {name} matching {filter:?}"))
    }

    /// A counter that may not exist yet (it appears when first counted): 0 until it does.
    pub async fn count(&self, name: &str, filter: &str) -> f64 {
        self.series(name, filter).await.unwrap_or(0.0)
    }

    async fn series(&self, name: &str, filter: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.http()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let values: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

/// Log filter for nodes of a multi-node cluster: ractor_cluster warns about every session
/// that ends, which the cluster tests cause on purpose.
const CLUSTER_LOG: &str = "warn,ractor_cluster=error";

/// Writes the one-node config used by `TestNode::start`; returns its path.
fn write_single_config(dir: &Path, extra: &str) -> PathBuf {
    let config = format!(
        "data_dir = {:?}\n{extra}\n[[nodes]]\nid = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\n",
        dir.join("data").display().to_string()
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// Spawns `starling node <id> --config <config>` and reads the HTTP address it prints.
fn spawn_node(id: &str, config: &Path, log: &str) -> (Child, SocketAddr) {
    let (child, addr) = launch_node(id, config, log);
    (child, listening(&addr))
}

/// Spawns `starling node <id> --config <config>`; the receiver gets the HTTP address it
/// prints once it serves (a node on an empty data directory first waits to hear from a
/// majority of its cluster: start a new cluster's nodes together).
fn launch_node(id: &str, config: &Path, log: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["node", id, "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("NODE_LOG").unwrap_or_else(|_| log.to_string()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn starling");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    (child, rx)
}

/// Waits for the address a launched node prints.
fn listening(rx: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    rx.recv_timeout(DEADLINE)
        .expect("node did not print its address")
        .parse()
        .expect("address")
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a topic for a URL path.
pub fn enc(topic: &str) -> String {
    percent_encoding::utf8_percent_encode(topic, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// POSTs a raw body to the publish route; returns status and JSON body.
pub async fn publish_raw(node: &TestNode, topic: &str, body: String) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/topics/{}/messages", node.http(), enc(topic)))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish request");
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Publishes `data` (and an optional id); returns status and JSON body.
pub async fn publish(node: &TestNode, topic: &str, data: Value, id: Option<&str>) -> (u16, Value) {
    let mut body = serde_json::json!({ "data": data });
    if let Some(id) = id {
        body["id"] = Value::from(id);
    }
    publish_raw(node, topic, body.to_string()).await
}

/// Publishes and asserts 201; returns the offset.
pub async fn publish_ok(node: &TestNode, topic: &str, data: Value) -> u64 {
    let (status, body) = publish(node, topic, data, None).await;
    assert_eq!(status, 201, "publish failed: {body}");
    body["offset"].as_u64().expect("offset")
}

/// GETs a path; returns status and JSON body.
pub async fn get_json(node: &TestNode, path_and_query: &str) -> (u16, Value) {
    let res = reqwest::get(format!("{}{}", node.http(), path_and_query))
        .await
        .expect("get");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

/// A WebSocket client speaking the JSON protocol.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a WebSocket read gave.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Closed(Option<u16>),
}

impl WsClient {
    pub async fn connect(node: &TestNode) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
            .await
            .expect("ws connect");
        WsClient { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::text(t.to_string()))
            .await
            .expect("ws send");
    }

    /// Next JSON frame or the close, skipping pings and pongs.
    pub async fn next_event(&mut self) -> WsEvent {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a WebSocket frame");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return WsEvent::Json(serde_json::from_str(&t).expect("server sent bad JSON"))
                }
                Some(Ok(Message::Close(f))) => {
                    return WsEvent::Closed(f.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsEvent::Closed(None),
            }
        }
    }

    /// Next JSON frame; panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            WsEvent::Json(v) => v,
            WsEvent::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    /// Reads until a frame of `kind` arrives; returns it.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(
        &mut self,
        topic: &str,
        after: Option<u64>,
        epoch: Option<&str>,
    ) -> Value {
        let mut f = serde_json::json!({"type": "subscribe", "topic": topic, "req": 1});
        if let Some(a) = after {
            f["after"] = a.into();
        }
        if let Some(e) = epoch {
            f["epoch"] = e.into();
        }
        self.send(f).await;
        let v = self.recv().await;
        assert_eq!(v["type"], "subscribed", "{v}");
        v
    }

    /// Reads `n` message frames; returns their offsets.
    pub async fn offsets(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.recv().await;
            assert_eq!(v["type"], "message", "expected a message, got {v}");
            out.push(v["offset"].as_u64().expect("offset"));
        }
        out
    }

    /// Waits for the close; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let WsEvent::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// A streaming SSE client over reqwest.
pub struct SseClient {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub status: u16,
    /// Comment lines seen so far (keepalives).
    pub comments: usize,
}

impl SseClient {
    /// Opens `path` (e.g. `/v1/topics/t/events?after=0`) with an optional Last-Event-ID.
    pub async fn connect(node: &TestNode, path: &str, last_event_id: Option<&str>) -> SseClient {
        let mut req = reqwest::Client::new().get(format!("{}{}", node.http(), path));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("sse request");
        let status = res.status().as_u16();
        SseClient {
            stream: Box::pin(res.bytes_stream()),
            buf: String::new(),
            status,
            comments: 0,
        }
    }

    /// Parses one blank-line-terminated block: an event, or `None` for comments only
    /// (which are counted).
    fn parse_block(&mut self, block: &str) -> Option<SseEvent> {
        let mut ev = SseEvent {
            event: "message".into(),
            ..Default::default()
        };
        let mut data = Vec::new();
        let mut any = false;
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            any = true;
            match field {
                "id" => ev.id = Some(value.to_string()),
                "event" => ev.event = value.to_string(),
                "data" => data.push(value.to_string()),
                "retry" => ev.retry = value.parse().ok(),
                _ => {}
            }
        }
        ev.data = data.join("\n");
        any.then_some(ev)
    }

    /// The next event (including a `retry`-only one), or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                if let Some(ev) = self.parse_block(&block) {
                    return Some(ev);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("timed out waiting for an SSE event")
            {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next event that has data (skips `retry`-only events).
    pub async fn next_data(&mut self) -> SseEvent {
        loop {
            let ev = self
                .next()
                .await
                .expect("stream ended while an event was expected");
            if !ev.data.is_empty() {
                return ev;
            }
        }
    }
}

impl SseClient {
    /// Reads until at least `n` comment lines (keepalives) were seen in total; returns the
    /// events that arrived meanwhile. Panics after `DEADLINE`.
    pub async fn until_comments(&mut self, n: usize) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut events = Vec::new();
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                events.extend(self.parse_block(&block));
            }
            if self.comments >= n {
                return events;
            }
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("timed out waiting for an SSE comment")
            {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => panic!("stream ended while a comment was expected"),
            }
        }
    }
}

/// A raw client with a 4 KiB receive buffer that sends `requests` and then never reads.
pub fn non_reader(node: &TestNode, requests: &[&str]) -> std::net::TcpStream {
    use std::io::Write;
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("receive buffer");
    sock.connect(&node.addr.into()).expect("connect");
    let mut stream: std::net::TcpStream = sock.into();
    for r in requests {
        stream.write_all(r.as_bytes()).expect("write request");
    }
    stream
}

/// Publishes 60 KB messages to `topic` until the node has cut off a slow consumer;
/// returns how many it published.
pub async fn flood_until_slow_consumer(node: &TestNode, topic: &str) -> usize {
    let payload = serde_json::json!("x".repeat(60_000));
    let mut n = 0;
    wait_for("a subscriber to be cut off as a slow consumer", || {
        n += 1;
        let payload = payload.clone();
        async move {
            publish_ok(node, topic, payload).await;
            (node
                .count("starling_slow_consumer_disconnects_total", "")
                .await
                >= 1.0)
                .then_some(())
        }
    })
    .await;
    n
}

/// Reads until the server ends the connection: `Ok` for a clean close, else the error
/// (a reset is `ConnectionReset`).
pub fn read_to_end(stream: &mut std::net::TcpStream) -> Result<(), std::io::ErrorKind> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) => return Err(e.kind()),
        }
    }
}
