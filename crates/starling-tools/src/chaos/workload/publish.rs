//! Publishers: each publishes round-robin over the topics at its rate, one publish at a
//! time, over HTTP or its WebSocket. Every request gets a new `pid`; a failed or timed-out
//! one is retried with the same `id` on the next node after a short backoff, until acked or
//! `GIVE_UP` passed since the first try.

use super::{backoff, frame_json, str_field, Ctx, Ws, REQUEST_TIMEOUT};
use crate::chaos::history::{Event, Transport};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long one message is retried before its outcome is left unknown.
const GIVE_UP: Duration = Duration::from_secs(15);

pub struct Publisher {
    pub client: String,
    /// `Http` or `Ws`.
    pub via: Transport,
    /// The node it starts on (modulo the node count).
    pub home: usize,
    pub topics: Vec<String>,
    pub interval: Duration,
}

/// An acknowledged publish.
struct Ack {
    epoch: String,
    offset: u64,
    duplicate: bool,
}

/// One publisher's connection state.
struct Conn {
    node: usize,
    ws: Option<Ws>,
    req: u64,
}

pub async fn run(ctx: Ctx, p: Publisher, stop: CancellationToken) {
    let mut tick = tokio::time::interval(p.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn = Conn {
        node: p.home % ctx.nodes.len(),
        ws: None,
        req: 0,
    };
    for seq in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let topic = &p.topics[(seq as usize + p.home) % p.topics.len()];
        let id = format!("{}-{seq}", p.client);
        let first_try = Instant::now();
        while !attempt(&ctx, &p.client, p.via, &mut conn, topic, &id).await {
            conn.ws = None;
            conn.node = ctx.next(conn.node);
            if first_try.elapsed() >= GIVE_UP || !backoff(&stop).await {
                break;
            }
        }
    }
}

/// One recorded publish request: `PubReq`, then `PubOk` or `PubErr`. Whether it was acked.
async fn attempt(
    ctx: &Ctx,
    client: &str,
    via: Transport,
    conn: &mut Conn,
    topic: &str,
    id: &str,
) -> bool {
    let pid = ctx.rec.pid();
    ctx.rec.record(|t_ms| Event::PubReq {
        t_ms,
        pid,
        client: client.to_string(),
        node: ctx.id(conn.node).to_string(),
        via,
        topic: topic.to_string(),
        id: id.to_string(),
    });
    let outcome = match via {
        Transport::Ws => ws_publish(ctx, conn, topic, id).await,
        _ => http_publish(ctx, conn.node, topic, id).await,
    };
    match outcome {
        Ok(ack) => {
            ctx.rec.record(|t_ms| Event::PubOk {
                t_ms,
                pid,
                topic: topic.to_string(),
                id: id.to_string(),
                epoch: ack.epoch,
                offset: ack.offset,
                duplicate: ack.duplicate,
            });
            true
        }
        Err(error) => {
            tracing::debug!(client, pid, %error, "publish failed");
            ctx.rec.record(|t_ms| Event::PubErr {
                t_ms,
                pid,
                topic: topic.to_string(),
                id: id.to_string(),
                error,
            });
            false
        }
    }
}

/// A recorded HTTP publish through `node` (the settle phase's probes): whether it was acked.
pub async fn probe(ctx: &Ctx, node: usize, topic: &str, id: &str) -> bool {
    let mut conn = Conn {
        node,
        ws: None,
        req: 0,
    };
    attempt(ctx, "probe", Transport::Http, &mut conn, topic, id).await
}

fn body(seq_id: &str) -> serde_json::Value {
    serde_json::json!({"data": {"chaos": seq_id}, "id": seq_id})
}

async fn http_publish(ctx: &Ctx, node: usize, topic: &str, id: &str) -> Result<Ack, String> {
    let url = format!("{}/v1/topics/{topic}/messages", ctx.url(node));
    let send = ctx
        .http
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .json(&body(id))
        .send();
    let res = send.await.map_err(|e| match e.is_timeout() {
        true => "timeout".to_string(),
        false => format!("transport: {e}"),
    })?;
    let status = res.status();
    let v: serde_json::Value = res
        .json()
        .await
        .map_err(|e| format!("HTTP {status}: {e}"))?;
    if !status.is_success() {
        let code = v["error"]["code"].as_str().unwrap_or("unknown");
        return Err(format!("HTTP {}: {code}", status.as_u16()));
    }
    ack(&v)
}

fn ack(v: &serde_json::Value) -> Result<Ack, String> {
    let offset = v["offset"].as_u64().ok_or("reply without an offset")?;
    Ok(Ack {
        epoch: str_field(v, "epoch"),
        offset,
        duplicate: v["duplicate"].as_bool().unwrap_or(false),
    })
}

async fn ws_publish(ctx: &Ctx, conn: &mut Conn, topic: &str, id: &str) -> Result<Ack, String> {
    let attempt = async {
        if conn.ws.is_none() {
            conn.ws = Some(
                ctx.dial(conn.node)
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            );
        }
        let ws = conn.ws.as_mut().ok_or("no connection")?;
        conn.req += 1;
        let req = conn.req;
        let mut frame = body(id);
        frame["type"] = "publish".into();
        frame["topic"] = topic.into();
        frame["req"] = req.into();
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        while let Some(m) = ws.next().await {
            let m = m.map_err(|e| format!("connection: {e}"))?;
            if let Message::Close(c) = &m {
                return Err(format!("closed: {c:?}"));
            }
            let Some(v) = frame_json(&m) else { continue };
            if v["req"].as_u64() != Some(req) {
                continue;
            }
            return match v["type"].as_str() {
                Some("published") => ack(&v),
                _ => Err(format!("error: {}", str_field(&v, "code"))),
            };
        }
        Err("connection closed".to_string())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err("timeout".into()),
    }
}
