//! `--target nats`: the same load against a NATS server's WebSocket listener, for the
//! comparison in `bench/compare-nats.sh`. NATS over WebSocket is the plain NATS text
//! protocol inside WebSocket frames (`nats_proto`). Messages carry the same data as on
//! Starling (the send time and `--size` bytes of padding), so latency is measured the
//! same way and lands in the same histograms and report.
//!
//! What an "ack" is differs: for core NATS publishes (fan-out) it is the `PONG` to a `PING`
//! sent right after each publish (the server has read and routed the message; nothing is
//! stored); for JetStream (durable) it is the stream's PubAck (`{"stream":..,"seq":..}`)
//! sent to the publish's reply subject, which carries the send time.

use super::clients::{self, now_us, stamped_data, Live, Window, SETUP_TIMEOUT};
use super::nats_proto::{publish as pub_frame, Op, Parser};
use super::publish::{ready, Pace, Plan, Published};
use super::subscribe::Received;
use super::BenchError;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// The WebSocket URL of a NATS server given as `http://host:port` or `ws://host:port`.
pub fn ws_url(base: &str) -> String {
    match base.strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => base.to_string(),
    }
}

/// The subject durable publishes go to (the stream holds `bench.>`).
pub fn durable_subject(topic: &str) -> String {
    format!("bench.{topic}")
}

fn lost(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Protocol(format!("nats {what}: {e}"))
}

/// Opens a WebSocket to the NATS server at `base`.
pub async fn connect(base: &str) -> Result<clients::Ws, BenchError> {
    clients::dial(ws_url(base)).await
}

async fn send<S>(ws: &mut WebSocketStream<S>, bytes: Vec<u8>) -> Result<(), BenchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::binary(bytes))
        .await
        .map_err(|e| lost("send", e))
}

/// Sends `CONNECT` and one `SUB` per subject, then waits for the `PONG` to a `PING`: the
/// server has processed them all.
pub async fn handshake<S>(
    ws: &mut WebSocketStream<S>,
    parser: &mut Parser,
    subjects: &[String],
) -> Result<(), BenchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = String::from("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n");
    for (sid, s) in subjects.iter().enumerate() {
        out.push_str(&format!("SUB {s} {}\r\n", sid + 1));
    }
    out.push_str("PING\r\n");
    send(ws, out.into_bytes()).await?;
    let wait = async {
        loop {
            let mut ping = false;
            while let Some(op) = parser.next_op().map_err(|e| lost("handshake", e))? {
                match op {
                    Op::Pong => return Ok(()),
                    Op::Err(e) => return Err(lost("handshake", e)),
                    Op::Ping => ping = true,
                    _ => {}
                }
            }
            if ping {
                send(ws, b"PONG\r\n".to_vec()).await?;
            }
            match ws.next().await {
                Some(Ok(m)) => parser.push(&m.into_data()),
                Some(Err(e)) => return Err(lost("handshake", e)),
                None => return Err(lost("handshake", "connection closed")),
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, wait)
        .await
        .map_err(|_| lost("handshake", "timed out"))?
}

/// A subscriber on `subject`, handshake done.
pub async fn open_sub(base: &str, subject: &str) -> Result<(clients::Ws, Parser), BenchError> {
    let mut ws = connect(base).await?;
    let mut parser = Parser::default();
    handshake(&mut ws, &mut parser, &[subject.to_string()]).await?;
    Ok((ws, parser))
}

/// Reads a subscriber until `stop`, recording each message's data into `got`.
pub async fn read_sub(
    mut ws: clients::Ws,
    mut parser: Parser,
    window: Window,
    live: &Live,
    stop: &CancellationToken,
    got: &mut Received,
) {
    loop {
        let mut ping = false;
        loop {
            match parser.next_op() {
                Ok(Some(Op::Msg { payload, .. })) => {
                    got.record(std::str::from_utf8(payload).unwrap_or(""), window, live)
                }
                Ok(Some(Op::Ping)) => ping = true,
                Ok(Some(Op::Err(_))) => Live::add(&live.errors, 1),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if ping && send(&mut ws, b"PONG\r\n".to_vec()).await.is_err() {
            return;
        }
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = ws.next() => m,
        };
        match m {
            Some(Ok(m)) => parser.push(&m.into_data()),
            Some(Err(_)) | None => return,
        }
    }
}

/// What a publish's ack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Core NATS: the `PONG` to a `PING` sent after each publish.
    Pong,
    /// JetStream: the PubAck on the publish's reply subject.
    JetStream,
}

/// Publishes over one NATS WebSocket until `stop_send`, reads acks until `stop_all`.
/// `plan.topics` are subjects.
pub async fn publish(
    plan: Plan,
    ack: Ack,
    live: Arc<Live>,
    stop_send: CancellationToken,
    stop_all: CancellationToken,
) -> Result<Published, BenchError> {
    let mut ws = connect(&plan.base).await?;
    let mut parser = Parser::default();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let inbox = format!(
        "_INBOX.bench.{}.{}.{n}",
        std::process::id(),
        now_us() % 1_000_000_000
    );
    let subs = match ack {
        Ack::JetStream => vec![format!("{inbox}.*")],
        Ack::Pong => vec![],
    };
    handshake(&mut ws, &mut parser, &subs).await?;
    let (tx, rx) = ws.split();
    let tx = Arc::new(Mutex::new(tx));
    let window_credits = match plan.pace {
        Pace::Window(w) => w,
        Pace::Rate(_) => 0,
    };
    let credits = Arc::new(Semaphore::new(window_credits));
    // Send times of publishes whose PONG is due, in order.
    let pending = Arc::new(std::sync::Mutex::new(VecDeque::<u64>::new()));
    let acks = tokio::spawn(read_acks(
        rx,
        parser,
        tx.clone(),
        pending.clone(),
        plan.topics.len(),
        plan.window,
        live.clone(),
        credits.clone(),
        stop_all,
    ));
    let pad = "x".repeat(plan.size);
    let mut sent = vec![0u64; plan.topics.len()];
    let start = Instant::now();
    let mut k = 0u64;
    loop {
        tokio::select! {
            _ = stop_send.cancelled() => break,
            _ = ready(plan.pace, start, k, &credits) => {}
        }
        let t = now_us();
        let i = (plan.first + k as usize) % plan.topics.len();
        let data = stamped_data(t, &pad);
        let frame = match ack {
            Ack::Pong => {
                let mut f = pub_frame(&plan.topics[i], None, data.as_bytes());
                f.extend_from_slice(b"PING\r\n");
                if let Ok(mut p) = pending.lock() {
                    p.push_back(t);
                }
                f
            }
            Ack::JetStream => {
                let reply = format!("{inbox}.{t}");
                pub_frame(&plan.topics[i], Some(&reply), data.as_bytes())
            }
        };
        if tx.lock().await.send(Message::binary(frame)).await.is_err() {
            Live::add(&live.errors, 1);
            break;
        }
        Live::add(&live.sent, 1);
        if plan.window.contains(t) {
            sent[i] += 1;
        }
        k += 1;
    }
    let mut done = acks
        .await
        .map_err(|e| BenchError::Setup(format!("ack reader failed: {e}")))?;
    done.sent = sent;
    Ok(done)
}

type Tx = futures_util::stream::SplitSink<clients::Ws, Message>;

#[allow(clippy::too_many_arguments)]
async fn read_acks(
    mut rx: futures_util::stream::SplitStream<clients::Ws>,
    mut parser: Parser,
    tx: Arc<Mutex<Tx>>,
    pending: Arc<std::sync::Mutex<VecDeque<u64>>>,
    topics: usize,
    window: Window,
    live: Arc<Live>,
    credits: Arc<Semaphore>,
    stop_all: CancellationToken,
) -> Published {
    let mut done = Published::new(topics);
    let acked = |done: &mut Published, sent: u64, ok: bool| {
        credits.add_permits(1);
        Live::add(if ok { &live.acked } else { &live.errors }, 1);
        if window.contains(sent) {
            if ok {
                done.acked += 1;
                done.ack_us
                    .saturating_record(now_us().saturating_sub(sent).max(1));
            } else {
                done.errors += 1;
            }
        }
    };
    loop {
        let mut ping = false;
        loop {
            match parser.next_op() {
                Ok(Some(Op::Pong)) => {
                    let sent = pending.lock().ok().and_then(|mut p| p.pop_front());
                    if let Some(sent) = sent {
                        acked(&mut done, sent, true);
                    }
                }
                Ok(Some(Op::Msg {
                    subject, payload, ..
                })) => {
                    let sent = subject.rsplit('.').next().and_then(|t| t.parse().ok());
                    if let Some(sent) = sent {
                        let ok = !payload.windows(7).any(|w| w == b"\"error\"");
                        acked(&mut done, sent, ok);
                    }
                }
                Ok(Some(Op::Ping)) => ping = true,
                Ok(Some(Op::Err(_))) => Live::add(&live.errors, 1),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return done,
            }
        }
        if ping {
            let _ = tx
                .lock()
                .await
                .send(Message::binary(b"PONG\r\n".to_vec()))
                .await;
        }
        let m = tokio::select! {
            _ = stop_all.cancelled() => break,
            m = rx.next() => m,
        };
        match m {
            Some(Ok(m)) => parser.push(&m.into_data()),
            Some(Err(_)) | None => break,
        }
    }
    done
}

/// One request over the JetStream API: its answer's payload.
async fn request(
    ws: &mut clients::Ws,
    parser: &mut Parser,
    subject: &str,
    body: &str,
) -> Result<String, BenchError> {
    send(
        ws,
        pub_frame(subject, Some("_INBOX.setup.1"), body.as_bytes()),
    )
    .await?;
    let wait = async {
        loop {
            while let Some(op) = parser.next_op().map_err(|e| lost(subject, e))? {
                match op {
                    Op::Msg { payload, .. } => return Ok(String::from_utf8_lossy(payload).into()),
                    Op::Err(e) => return Err(lost(subject, e)),
                    _ => {}
                }
            }
            match ws.next().await {
                Some(Ok(m)) => parser.push(&m.into_data()),
                Some(Err(e)) => return Err(lost(subject, e)),
                None => return Err(lost(subject, "connection closed")),
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, wait)
        .await
        .map_err(|_| lost(subject, "no answer (is JetStream enabled?)"))?
}

/// (Re)creates the JetStream stream `name` on `bench.>` with file storage and `replicas`
/// copies. Retries while the cluster elects its JetStream leader.
pub async fn create_stream(base: &str, name: &str, replicas: usize) -> Result<(), BenchError> {
    let mut ws = connect(base).await?;
    let mut parser = Parser::default();
    handshake(&mut ws, &mut parser, &["_INBOX.setup.*".to_string()]).await?;
    let config = serde_json::json!({
        "name": name,
        "subjects": ["bench.>"],
        "storage": "file",
        "num_replicas": replicas,
    })
    .to_string();
    let mut last = String::new();
    for _ in 0..20 {
        let _ = request(
            &mut ws,
            &mut parser,
            &format!("$JS.API.STREAM.DELETE.{name}"),
            "",
        )
        .await;
        let answer = request(
            &mut ws,
            &mut parser,
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &config,
        )
        .await?;
        if !answer.contains("\"error\"") {
            return Ok(());
        }
        last = answer;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(BenchError::Setup(format!(
        "cannot create JetStream stream {name}: {last}"
    )))
}
