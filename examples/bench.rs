//! Load generator for a running node or cluster: the figures of the single-node and cluster
//! issues.
//!
//! ```text
//! cargo run --release -- node n1 &                      # the node under test
//! cargo run --release --example bench -- http-publish   # publishes/s over HTTP
//! cargo run --release --example bench -- ws-publish     # publishes/s over WebSocket
//! cargo run --release --example bench -- fanout         # deliveries/s to 1,000 WS subscribers
//! cargo run --release --example bench -- latency        # publish-to-deliver p50/p99 at a fixed rate
//! cargo run --release --example bench -- connections --pid $(pgrep -f 'starling node')
//! cargo run --release --example bench -- consumer --consumers 8 # acked consumer deliveries/s
//! cargo run --release --example bench -- failover --url http://127.0.0.1:8081 --topic t
//! #   (then kill -9 or kill -STOP the owner of t: prints how long publishes stalled)
//! # cross-node, on a `starling up` cluster: publish on n1, subscribe on n2 and n3
//! cargo run --release --example bench -- fanout --url http://127.0.0.1:8080 \
//!     --sub-url http://127.0.0.1:8081 --sub-url http://127.0.0.1:8082
//! ```
//! Every scenario talks to the node through its real endpoints. Latency is measured in the
//! client (publish time carried in the message), open loop: publishes go out on a fixed
//! schedule whether or not earlier ones were delivered.

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    HttpPublish,
    WsPublish,
    Fanout,
    Latency,
    Connections,
    Consumer,
    Failover,
}

#[derive(Parser, Debug)]
struct Args {
    scenario: Scenario,
    /// The node publishers (and, without --sub-url, subscribers) talk to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Nodes the subscribers connect to, round robin (fanout and latency): e.g. the other
    /// nodes of a cluster, to measure cross-node delivery. Repeatable; default: --url.
    #[arg(long = "sub-url")]
    sub_urls: Vec<String>,
    /// Topic to use (default: a fresh one per run); e.g. one owned by a chosen node.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Offered publishes per second (latency scenario).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Idle connections to open (connections scenario).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Server process id, to read its resident memory (connections scenario).
    #[arg(long)]
    pid: Option<u32>,
    /// Connections sharing one consumer (consumer scenario).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Backlog published before consuming (consumer scenario).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// The consumer's max_inflight (consumer scenario).
    #[arg(long, default_value_t = 100)]
    inflight: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(base: &str) -> String {
    format!("{}/v1/ws", base.replacen("http", "ws", 1))
}

/// Where subscriber `i` connects.
fn sub_url(a: &Args, i: usize) -> &str {
    match a.sub_urls.len() {
        0 => &a.url,
        n => &a.sub_urls[i % n],
    }
}

fn topic(a: &Args, prefix: &str) -> String {
    a.topic
        .clone()
        .unwrap_or_else(|| format!("{prefix}-{}", std::process::id()))
}

async fn connect(base: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url(base), None, true)
        .await
        .expect("ws connect");
    ws
}

async fn subscribe<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, topic: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let f = serde_json::json!({"type": "subscribe", "topic": topic, "req": 0});
    ws.send(Message::text(f.to_string())).await.expect("send");
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.contains("\"subscribed\"") {
                return;
            }
            panic!("subscribe failed: {t}");
        }
    }
}

fn progress(label: &str, done: &AtomicU64, start: Instant) {
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    eprint!(
        "\r{label}: {n} in {secs:.0}s ({:.0}/s)    ",
        n as f64 / secs
    );
}

async fn run_for(label: &str, counter: Arc<AtomicU64>, secs: u64) -> f64 {
    let start = Instant::now();
    let warm = counter.load(Ordering::Relaxed);
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        progress(label, &counter, start);
    }
    eprintln!();
    (counter.load(Ordering::Relaxed) - warm) as f64 / start.elapsed().as_secs_f64()
}

async fn http_publish(a: &Args) {
    let done = Arc::new(AtomicU64::new(0));
    let body = serde_json::json!({"data": "x".repeat(a.size)}).to_string();
    let t = topic(a, "bench-http");
    for _ in 0..a.publishers {
        let (done, body, url) = (
            done.clone(),
            body.clone(),
            format!("{}/v1/topics/{t}/messages", a.url),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let r = client.post(&url).body(body.clone()).send().await;
                if matches!(r, Ok(ref r) if r.status().as_u16() == 201) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let rate = run_for("acked publishes", done, a.duration_secs).await;
    println!(
        "http-publish: {rate:.0} acked publishes/s ({} publishers, {} B)",
        a.publishers, a.size
    );
}

/// Each connection keeps `window` publishes in flight.
async fn ws_publisher(base: String, t: String, size: usize, window: usize, done: Arc<AtomicU64>) {
    let ws = connect(&base).await;
    let (mut tx, mut rx) = ws.split();
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(window);
    for _ in 0..window {
        let _ = credit_tx.try_send(());
    }
    let data = "x".repeat(size);
    tokio::spawn(async move {
        let mut req = 0u64;
        while credit_rx.recv().await.is_some() {
            req += 1;
            let f = serde_json::json!({"type": "publish", "topic": t, "data": data, "req": req});
            if tx.send(Message::text(f.to_string())).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = rx.next().await {
        if let Message::Text(t) = m {
            if t.contains("\"published\"") {
                done.fetch_add(1, Ordering::Relaxed);
                let _ = credit_tx.send(()).await;
            }
        }
    }
}

async fn ws_publish(a: &Args) {
    let done = Arc::new(AtomicU64::new(0));
    let t = topic(a, "bench-ws");
    for _ in 0..a.publishers {
        tokio::spawn(ws_publisher(
            a.url.clone(),
            t.clone(),
            a.size,
            16,
            done.clone(),
        ));
    }
    let rate = run_for("acked publishes", done, a.duration_secs).await;
    println!(
        "ws-publish: {rate:.0} acked publishes/s ({} connections x 16 in flight, {} B)",
        a.publishers, a.size
    );
}

async fn subscribers(a: &Args, t: &str, n: usize) -> Arc<AtomicU64> {
    let delivered = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let mut ws = connect(sub_url(a, i)).await;
        subscribe(&mut ws, t).await;
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Text(_)) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if i % 100 == 99 {
            eprint!("\rsubscribers connected: {}   ", i + 1);
        }
    }
    eprintln!();
    delivered
}

async fn fanout(a: &Args) {
    let t = topic(a, "bench-fanout");
    let delivered = subscribers(a, &t, a.subscribers).await;
    let published = Arc::new(AtomicU64::new(0));
    for _ in 0..a.publishers.min(4) {
        tokio::spawn(ws_publisher(
            a.url.clone(),
            t.clone(),
            a.size,
            16,
            published.clone(),
        ));
    }
    let rate = run_for("deliveries", delivered, a.duration_secs).await;
    println!(
        "fanout: {rate:.0} deliveries/s to {} WS subscribers ({} publishes acked, {} B)",
        a.subscribers,
        published.load(Ordering::Relaxed),
        a.size
    );
}

async fn latency(a: &Args) {
    let t = topic(a, "bench-latency");
    let origin = Instant::now();
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let n = a.subscribers.min(100);
    for i in 0..n {
        let mut ws = connect(sub_url(a, i)).await;
        subscribe(&mut ws, &t).await;
        let hist = hist.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(txt))) = ws.next().await {
                let v: serde_json::Value = serde_json::from_str(&txt).unwrap_or_default();
                if let Some(sent) = v["data"]["t"].as_u64() {
                    let us = (origin.elapsed().as_micros() as u64)
                        .saturating_sub(sent)
                        .max(1);
                    let _ = hist.lock().map(|mut h| h.record(us));
                }
            }
        });
    }
    let ws = connect(&a.url).await;
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    let pad = "x".repeat(a.size);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(a.duration_secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let f = serde_json::json!({"type": "publish", "topic": t, "data": {"t": origin.elapsed().as_micros() as u64, "pad": pad}});
        tx.send(Message::text(f.to_string()))
            .await
            .expect("publish");
        sent += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let h = hist.lock().expect("histogram");
    println!(
        "latency: {} msg/s offered x {n} subscribers, {} publishes, {} deliveries: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        a.rate,
        sent,
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

/// Publishes every 5 ms (each with its own id) for the duration; kill or hang the topic's
/// owner meanwhile. Reports every window in which publishes failed or the epoch changed:
/// the time between the last publish acked before it and the first one acked after it.
async fn failover(a: &Args) {
    let t = topic(a, "bench-failover");
    let url = format!("{}/v1/topics/{t}/messages", a.url);
    let client = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(a.duration_secs);
    let (mut last_ok, mut epoch, mut failed) = (Instant::now(), String::new(), 0u32);
    eprintln!(
        "publishing to {t} every 5 ms for {} s: kill the owner now",
        a.duration_secs
    );
    let mut k = 0u64;
    while Instant::now() < end {
        k += 1;
        let body = serde_json::json!({"data": k, "id": format!("f-{}-{k}", std::process::id())});
        let r = client.post(&url).body(body.to_string()).send().await;
        let v: Option<serde_json::Value> = match r {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        match v {
            Some(v) => {
                let e = v["epoch"].as_str().unwrap_or_default().to_string();
                if (failed > 0 || (!epoch.is_empty() && e != epoch)) && !epoch.is_empty() {
                    println!(
                        "failover: {:.0} ms without an accepted publish ({failed} failed), epoch {} -> {e}, offset {}",
                        last_ok.elapsed().as_secs_f64() * 1000.0,
                        epoch,
                        v["offset"]
                    );
                }
                (last_ok, epoch, failed) = (Instant::now(), e, 0);
            }
            None => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Opens idle connections, each subscribed to its own topic, from 127.0.0.x sources.
async fn connections(a: &Args) {
    let pid = a
        .pid
        .expect("--pid <server pid> is needed to read its memory");
    let addr: std::net::SocketAddr = a
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("--url http://IP:PORT");
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let src = std::net::Ipv4Addr::new(127, 0, (1 + i / 20_000) as u8, 1 + (i % 250) as u8);
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind((src, 0).into()).expect("bind source address");
        let stream = sock.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut ws, _) = tokio_tungstenite::client_async(ws_url(&a.url), stream)
            .await
            .expect("handshake");
        subscribe(&mut ws, &format!("idle-{}", i % 100)).await;
        conns.push(ws);
        if i % 500 == 499 {
            eprint!("\rconnections: {}   ", i + 1);
        }
    }
    eprintln!();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "connections: {} idle WS connections (each subscribed): server RSS {} KiB -> {} KiB, {:.1} KiB per connection",
        a.connections,
        before,
        after,
        (after.saturating_sub(before)) as f64 / a.connections as f64
    );
    drop(conns);
}

/// Publishes `n` messages to `t` over 16 pipelined WS connections.
async fn prefill(a: &Args, t: &str, n: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(ws_publisher(
                a.url.clone(),
                t.to_string(),
                a.size,
                16,
                done.clone(),
            ))
        })
        .collect();
    let start = Instant::now();
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress("backlog published", &done, start);
    }
    eprintln!();
    tasks.iter().for_each(|t| t.abort());
}

/// Reads `n` deliveries on `ws` (acking each as consumer `name` when given); returns the time.
async fn drain<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    t: &str,
    name: Option<&str>,
    done: &AtomicU64,
    n: u64,
) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = Instant::now();
    while done.load(Ordering::Relaxed) < n {
        let Ok(Some(Ok(Message::Text(txt)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            break;
        };
        let v: serde_json::Value = serde_json::from_str(&txt).unwrap_or_default();
        if v["type"] != "message" {
            continue;
        }
        done.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = name {
            let ack = serde_json::json!({"type": "ack", "topic": t, "consumer": name, "offset": v["offset"]});
            if ws.send(Message::text(ack.to_string())).await.is_err() {
                break;
            }
        }
    }
    start.elapsed()
}

async fn consumer_run(a: &Args, t: &str, name: &str, conns: usize, inflight: usize, n: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut ws = connect(&a.url).await;
        let f = serde_json::json!({"type": "subscribe", "topic": t, "consumer": name, "after": 0, "max_inflight": inflight, "req": 0});
        ws.send(Message::text(f.to_string()))
            .await
            .expect("subscribe");
        let (done, t, name) = (done.clone(), t.to_string(), name.to_string());
        tasks.push(tokio::spawn(async move {
            drain(&mut ws, &t, Some(&name), &done, n).await
        }));
    }
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = done.load(Ordering::Relaxed);
        if now >= n || last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let took = start.elapsed();
    tasks.iter().for_each(|t| t.abort());
    done.load(Ordering::Relaxed).min(n) as f64 / took.as_secs_f64()
}

/// Drains a backlog three ways: stream replay, acked consumer with `--consumers`
/// connections, and a consumer with max_inflight 1 (one ack round trip per message).
async fn consumer(a: &Args) {
    let t = topic(a, "bench-consumer");
    prefill(a, &t, a.messages).await;
    let mut ws = connect(&a.url).await;
    let f = serde_json::json!({"type": "subscribe", "topic": t, "after": 0, "req": 0});
    ws.send(Message::text(f.to_string()))
        .await
        .expect("subscribe");
    let done = AtomicU64::new(0);
    let took = drain(&mut ws, &t, None, &done, a.messages).await;
    let stream = done.load(Ordering::Relaxed) as f64 / took.as_secs_f64();
    let acked = consumer_run(a, &t, "bench", a.consumers, a.inflight, a.messages).await;
    let n1 = a.messages.min(2000);
    let one = consumer_run(a, &t, "bench-one", 1, 1, n1).await;
    println!(
        "consumer: stream replay {stream:.0} deliveries/s; acked consumer ({} connections, max_inflight {}) {acked:.0} deliveries/s; max_inflight 1: {one:.0}/s = {:.3} ms per deliver+ack round trip",
        a.consumers,
        a.inflight,
        1000.0 / one
    );
}

fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::main]
async fn main() {
    raise_fd_limit();
    let a = Args::parse();
    match a.scenario {
        Scenario::HttpPublish => http_publish(&a).await,
        Scenario::WsPublish => ws_publish(&a).await,
        Scenario::Fanout => fanout(&a).await,
        Scenario::Latency => latency(&a).await,
        Scenario::Connections => connections(&a).await,
        Scenario::Consumer => consumer(&a).await,
        Scenario::Failover => failover(&a).await,
    }
}
