//! A member of the topic's consumer group over WebSocket: joins from `after=0` (the first
//! join creates the group there; later ones join it where it is), acks every delivery at
//! once, and rejoins after a disconnect like a stream subscriber.

use super::ws_sub::{reconnect, Ended, Frames};
use super::{backoff, str_field, Ctx, CONSUMER};
use crate::chaos::history::Event;
use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SUBSCRIBE_REQ: u64 = 1;

pub struct Member {
    pub sub: String,
    pub topic: String,
    pub home: usize,
}

/// Runs the member; `joined` fires at its first `subscribed`.
pub async fn run(ctx: Ctx, m: Member, joined: oneshot::Sender<()>, stop: CancellationToken) {
    let mut node = m.home % ctx.nodes.len();
    let mut joined = Some(joined);
    loop {
        let ended = session(&ctx, &m, node, &mut joined, &stop).await;
        if !reconnect(&ctx, &m.sub, &mut node, ended) || !backoff(&stop).await {
            return;
        }
    }
}

async fn session(
    ctx: &Ctx,
    m: &Member,
    node: usize,
    joined: &mut Option<oneshot::Sender<()>>,
    stop: &CancellationToken,
) -> Ended {
    let mut ws = match ctx.dial(node).await {
        Ok(ws) => ws,
        Err(e) => return Ended::Unreachable(e),
    };
    // Quick redelivery, and never a dead letter for a message that was only slow.
    let frame = serde_json::json!({
        "type": "subscribe", "topic": m.topic, "consumer": CONSUMER, "after": 0,
        "ack_wait_ms": 3000, "max_deliver": 100, "backoff_ms": [200, 1000],
        "req": SUBSCRIBE_REQ,
    });
    if let Err(e) = ws.send(Message::text(frame.to_string())).await {
        return Ended::Lost(format!("send: {e}"));
    }
    let mut frames = Frames::new();
    loop {
        let v = match frames.next(&mut ws, stop).await {
            Ok(v) => v,
            Err(ended) => return ended,
        };
        let solicited = v["req"].as_u64() == Some(SUBSCRIBE_REQ);
        match v["type"].as_str() {
            Some("subscribed") if solicited => {
                if let Some(tx) = joined.take() {
                    let _ = tx.send(());
                }
            }
            Some("message") => {
                let offset = v["offset"].as_u64().unwrap_or(0);
                ctx.rec.record(|t_ms| Event::ConsumerDeliver {
                    t_ms,
                    sub: m.sub.clone(),
                    topic: m.topic.clone(),
                    epoch: str_field(&v, "epoch"),
                    offset,
                    id: str_field(&v, "id"),
                    attempt: v["attempt"].as_u64().unwrap_or(1) as u32,
                });
                let ack = serde_json::json!({
                    "type": "ack", "topic": m.topic, "consumer": CONSUMER, "offset": offset,
                });
                if let Err(e) = ws.send(Message::text(ack.to_string())).await {
                    return Ended::Lost(format!("send: {e}"));
                }
            }
            Some("error") if solicited => {
                return Ended::Refused(format!("subscribe: {}", str_field(&v, "code")));
            }
            _ => {}
        }
    }
}
