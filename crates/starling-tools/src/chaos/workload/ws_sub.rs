//! A WebSocket stream subscriber: subscribes from `after=0`, resumes from its last
//! (epoch, offset) after every reconnect, pings so that a hung node is noticed, and records
//! the server's `subscribed` reply, unsolicited `recovered:false` announcements (a moved
//! subscription that lost its position) and every message.

use super::{backoff, Ctx};
use crate::chaos::history::{Event, Transport};
use starling_client::{Frame, Subscribe, WsConn};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the subscriber pings, and how long it waits for any frame before it gives the
/// connection up.
const PING_EVERY: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(6);
/// The `req` of the subscribe frame.
const SUBSCRIBE_REQ: u64 = 1;

/// Why one connection ended.
pub(super) enum Ended {
    Stopped,
    /// Never connected: try the next node.
    Unreachable(String),
    /// The server refused the subscription: record it, try the next node.
    Refused(String),
    /// The connection broke: record it, try the same node again.
    Lost(String),
}

/// Where to resume: the last (epoch, offset) delivered or announced.
pub(super) use starling_client::Resume;

pub async fn run(ctx: Ctx, sub: String, topic: String, home: usize, stop: CancellationToken) {
    ctx.rec.register(&sub, &topic);
    let mut node = home % ctx.nodes.len();
    let mut pos: Resume = None;
    loop {
        let ended = session(&ctx, &sub, &topic, node, &mut pos, &stop).await;
        if !reconnect(&ctx, &sub, &mut node, ended) || !backoff(&stop).await {
            return;
        }
    }
}

/// Records how a connection ended and picks the node to try next; `false` to stop.
pub(super) fn reconnect(ctx: &Ctx, sub: &str, node: &mut usize, ended: Ended) -> bool {
    let (reason, next) = match ended {
        Ended::Stopped => return false,
        Ended::Unreachable(e) => {
            tracing::debug!(sub, node = ctx.id(*node), error = %e, "cannot connect");
            *node = ctx.next(*node);
            return true;
        }
        Ended::Refused(e) => (e, true),
        Ended::Lost(e) => (e, false),
    };
    tracing::debug!(sub, node = ctx.id(*node), %reason, "subscriber disconnected");
    ctx.rec.record(|t_ms| Event::Disconnect {
        t_ms,
        sub: sub.to_string(),
        reason,
    });
    if next {
        *node = ctx.next(*node);
    }
    true
}

async fn session(
    ctx: &Ctx,
    sub: &str,
    topic: &str,
    node: usize,
    pos: &mut Resume,
    stop: &CancellationToken,
) -> Ended {
    let mut ws = match ctx.dial(node).await {
        Ok(ws) => ws,
        Err(e) => return Ended::Unreachable(e),
    };
    let subscribe = Subscribe::topic(topic).resume(pos);
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
            Frame::Subscribed(s) => {
                if !s.recovered {
                    *pos = Some((s.epoch.clone(), s.first.saturating_sub(1)));
                }
                if s.req == Some(SUBSCRIBE_REQ) {
                    ctx.rec.record(|t_ms| Event::Subscribed {
                        t_ms,
                        sub: sub.to_string(),
                        node: ctx.id(node).to_string(),
                        via: Transport::Ws,
                        topic: topic.to_string(),
                        epoch: s.epoch,
                        recovered: s.recovered,
                        first: s.first,
                    });
                } else if !s.recovered {
                    ctx.rec.record(|t_ms| Event::Reset {
                        t_ms,
                        sub: sub.to_string(),
                        topic: topic.to_string(),
                        epoch: s.epoch,
                        first: s.first,
                    });
                }
            }
            Frame::Message(m) => {
                *pos = Some((m.epoch.clone(), m.offset));
                ctx.rec.record(|t_ms| Event::Deliver {
                    t_ms,
                    sub: sub.to_string(),
                    via: Transport::Ws,
                    topic: topic.to_string(),
                    epoch: m.epoch,
                    offset: m.offset,
                    id: m.id,
                });
            }
            Frame::Error(e) if e.req == Some(SUBSCRIBE_REQ) => {
                return Ended::Refused(format!("subscribe: {}", e.code));
            }
            _ => {}
        }
    }
}

/// Reads a client WebSocket's frames, pinging the server every [`PING_EVERY`] and
/// giving up after [`IDLE`] of silence (a hung node keeps its sockets open).
pub(super) struct Frames {
    ping: tokio::time::Interval,
    last_frame: Instant,
}

impl Frames {
    pub(super) fn new() -> Frames {
        Frames {
            ping: tokio::time::interval(PING_EVERY),
            last_frame: Instant::now(),
        }
    }

    /// The next protocol frame, or how the session ended.
    pub(super) async fn next(
        &mut self,
        ws: &mut WsConn,
        stop: &CancellationToken,
    ) -> Result<Frame, Ended> {
        loop {
            let text = tokio::select! {
                _ = stop.cancelled() => {
                    ws.close().await;
                    return Err(Ended::Stopped);
                }
                _ = self.ping.tick() => {
                    if self.last_frame.elapsed() > IDLE {
                        return Err(Ended::Lost(format!("silent for {} s", IDLE.as_secs())));
                    }
                    if let Err(e) = ws.ping(0).await {
                        return Err(Ended::Lost(e.to_string()));
                    }
                    continue;
                }
                text = ws.next_text() => text.map_err(|e| Ended::Lost(e.to_string()))?,
            };
            self.last_frame = Instant::now();
            if let Ok(frame) = Frame::parse(&text) {
                return Ok(frame);
            }
        }
    }
}
