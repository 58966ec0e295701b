//! `bench connections`: N idle WebSocket connections, each subscribed, from source addresses
//! 127.0.0.2, 127.0.0.3, … (each address has its own ephemeral ports, so they do not run
//! out); the server's resident memory per connection from `/proc/<pid>/status`.

use super::args::{ConnectionsArgs, Target};
use super::clients::{self, topic_names, ws_url};
use super::report::{count, Report};
use super::spawn::OwnNode;
use super::BenchError;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use starling_client::{Subscribe, WsConn};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Connections opened at a time.
const CONNECT_PARALLEL: usize = 64;

pub async fn run(a: &ConnectionsArgs) -> Result<Report, BenchError> {
    let (url, pid, node) = match (&a.url, a.pid) {
        (Some(url), Some(pid)) => (url.trim_end_matches('/').to_string(), pid, None),
        (Some(_), None) => {
            return Err(BenchError::Setup(
                "--pid <node pid> is needed with --url, to read the node's memory".into(),
            ))
        }
        (None, _) if a.target == Target::Nats => {
            return Err(BenchError::Setup(
                "--target nats needs --url ws://HOST:PORT and --pid".into(),
            ))
        }
        (None, _) => {
            let node = OwnNode::start("connections", "").await?;
            eprintln!("node started on {}", node.url);
            (node.url.clone(), node.pid()?, Some(node))
        }
    };
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .parse()
        .map_err(|_| BenchError::Setup(format!("--url must be http://IP:PORT, not {url}")))?;
    let spread = addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) && a.sources > 0;
    let topics = topic_names(None, "bench-idle", a.topics.max(1));
    // Let the node settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;

    let opened = AtomicU64::new(0);
    let conns: Vec<clients::Ws> = futures_util::stream::iter(0..a.connections)
        .map(|i| {
            let src = spread.then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % a.sources as usize) as u8));
            let (url, topic, opened) = (&url, &topics[i % topics.len()], &opened);
            async move {
                let mut ws = open(addr, src, url, a.target).await?;
                match a.target {
                    Target::Starling => {
                        let mut conn = WsConn::from(ws);
                        clients::subscribe(&mut conn, &Subscribe::topic(topic)).await?;
                        ws = conn.into_inner();
                    }
                    Target::Nats => {
                        let mut parser = super::nats_proto::Parser::default();
                        super::nats::handshake(&mut ws, &mut parser, std::slice::from_ref(topic))
                            .await?
                    }
                }
                let n = opened.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(500) || n as usize == a.connections {
                    eprint!("\rconnections: {n}   ");
                }
                Ok::<_, BenchError>(ws)
            }
        })
        .buffer_unordered(CONNECT_PARALLEL)
        .try_collect()
        .await?;
    eprintln!();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let per_conn = after.saturating_sub(before) as f64 / conns.len().max(1) as f64;

    let mut r = Report::new(
        "connections",
        json!({
            "target": a.target.name(),
            "url": url,
            "connections": a.connections,
            "sources": if spread { a.sources } else { 0 },
            "topics": topics.len(),
            "own_node": node.is_some(),
        }),
    );
    r.results = json!({
        "connections": conns.len(),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": per_conn,
    });
    r.row(
        "idle WS connections (each subscribed)",
        count(conns.len() as f64),
    );
    r.row(
        "server RSS",
        format!(
            "{} KiB -> {} KiB",
            count(before as f64),
            count(after as f64)
        ),
    );
    r.row("per connection", format!("{per_conn:.1} KiB"));
    drop(conns);
    if let Some(node) = node {
        node.stop().await;
    }
    Ok(r)
}

/// A WebSocket to `addr` from source address `src` (any when `None`).
async fn open(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    url: &str,
    target: Target,
) -> Result<clients::Ws, BenchError> {
    let fail = |e: String| BenchError::Connect {
        url: url.to_string(),
        reason: e,
    };
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| fail(e.to_string()))?;
    if let Some(src) = src {
        sock.bind((src, 0).into())
            .map_err(|e| fail(format!("bind {src}: {e}")))?;
    }
    let stream = tokio::time::timeout(clients::SETUP_TIMEOUT, sock.connect(addr))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let ws_url = match target {
        Target::Starling => ws_url(url),
        Target::Nats => super::nats::ws_url(url),
    };
    let (ws, _) = tokio_tungstenite::client_async(ws_url, stream)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(ws)
}

/// The process's resident memory, KiB.
fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(BenchError::io(format!("cannot read {path}")))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError::Setup(format!("no VmRSS in {path}")))
}
