//! Publishers: each publishes round-robin over the topics at its rate, one publish at a
//! time, over HTTP or its WebSocket. Every request gets a new `pid`; a failed or timed-out
//! one is retried with the same `id` on the next node after a short backoff, until acked or
//! `GIVE_UP` passed since the first try.

use super::{backoff, Ctx, REQUEST_TIMEOUT};
use crate::chaos::history::{Event, Transport};
use starling_client::{Published, WsConn};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
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

/// One publisher's connection state.
struct Conn {
    node: usize,
    ws: Option<WsConn>,
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

/// The data of the publish with idempotency id `seq_id`.
fn data(seq_id: &str) -> serde_json::Value {
    serde_json::json!({ "chaos": seq_id })
}

async fn http_publish(ctx: &Ctx, node: usize, topic: &str, id: &str) -> Result<Published, String> {
    let publish = ctx.client(node).publish(topic, &data(id), Some(id)).await;
    publish.map_err(|e| e.to_string())
}

async fn ws_publish(
    ctx: &Ctx,
    conn: &mut Conn,
    topic: &str,
    id: &str,
) -> Result<Published, String> {
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
        let publish = ws.publish(topic, &data(id), Some(id), conn.req).await;
        publish.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err("timeout".into()),
    }
}
