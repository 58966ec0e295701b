//! A member of the topic's consumer group over WebSocket: joins from `after=0` (the first
//! join creates the group there; later ones join it where it is), acks every delivery at
//! once, and rejoins after a disconnect like a stream subscriber.

use super::ws_sub::{reconnect, Ended, Frames};
use super::{backoff, Ctx, CONSUMER};
use crate::chaos::history::Event;
use starling_client::{Frame, Subscribe};
use tokio::sync::oneshot;
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
    let subscribe = Subscribe {
        consumer: Some(CONSUMER.to_string()),
        ack_wait_ms: Some(3000),
        max_deliver: Some(100),
        backoff_ms: Some(vec![200, 1000]),
        ..Subscribe::topic(&m.topic).after(0)
    };
    if let Err(e) = ws.send_subscribe(&subscribe, SUBSCRIBE_REQ).await {
        return Ended::Lost(e.to_string());
    }
    let mut frames = Frames::new();
    loop {
        let frame = match frames.next(&mut ws, stop).await {
            Ok(f) => f,
            Err(ended) => return ended,
        };
        match frame {
            Frame::Subscribed(s) if s.req == Some(SUBSCRIBE_REQ) => {
                if let Some(tx) = joined.take() {
                    let _ = tx.send(());
                }
            }
            Frame::Message(d) => {
                let offset = d.offset;
                ctx.rec.record(|t_ms| Event::ConsumerDeliver {
                    t_ms,
                    sub: m.sub.clone(),
                    topic: m.topic.clone(),
                    epoch: d.epoch,
                    offset,
                    id: d.id,
                    attempt: d.attempt.unwrap_or(1),
                });
                if let Err(e) = ws.ack(&m.topic, CONSUMER, offset).await {
                    return Ended::Lost(e.to_string());
                }
            }
            Frame::Error(e) if e.req == Some(SUBSCRIBE_REQ) => {
                return Ended::Refused(format!("subscribe: {}", e.code));
            }
            _ => {}
        }
    }
}
