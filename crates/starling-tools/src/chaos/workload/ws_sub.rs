//! A WebSocket stream subscriber: subscribes from `after=0`, resumes from its last
//! (epoch, offset) after every reconnect, pings so that a hung node is noticed, and records
//! the server's `subscribed` reply, unsolicited `recovered:false` announcements (a moved
//! subscription that lost its position) and every message.

use super::{backoff, frame_json, str_field, Ctx};
use crate::chaos::history::{Event, Transport};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
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
pub(super) type Resume = Option<(String, u64)>;

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
    let mut frame = serde_json::json!({"type": "subscribe", "topic": topic, "req": SUBSCRIBE_REQ});
    match pos {
        Some((epoch, offset)) => {
            frame["after"] = (*offset).into();
            frame["epoch"] = epoch.as_str().into();
        }
        None => frame["after"] = 0.into(),
    }
    if let Err(e) = ws.send(Message::text(frame.to_string())).await {
        return Ended::Lost(format!("send: {e}"));
    }
    let mut frames = Frames::new();
    loop {
        let v = match frames.next(&mut ws, stop).await {
            Ok(v) => v,
            Err(ended) => return ended,
        };
        let (epoch, first) = (str_field(&v, "epoch"), v["first"].as_u64().unwrap_or(0));
        let solicited = v["req"].as_u64() == Some(SUBSCRIBE_REQ);
        match v["type"].as_str() {
            Some("subscribed") => {
                let recovered = v["recovered"].as_bool().unwrap_or(true);
                if !recovered {
                    *pos = Some((epoch.clone(), first.saturating_sub(1)));
                }
                if solicited {
                    ctx.rec.record(|t_ms| Event::Subscribed {
                        t_ms,
                        sub: sub.to_string(),
                        node: ctx.id(node).to_string(),
                        via: Transport::Ws,
                        topic: topic.to_string(),
                        epoch,
                        recovered,
                        first,
                    });
                } else if !recovered {
                    ctx.rec.record(|t_ms| Event::Reset {
                        t_ms,
                        sub: sub.to_string(),
                        topic: topic.to_string(),
                        epoch,
                        first,
                    });
                }
            }
            Some("message") => {
                let offset = v["offset"].as_u64().unwrap_or(0);
                *pos = Some((epoch.clone(), offset));
                ctx.rec.record(|t_ms| Event::Deliver {
                    t_ms,
                    sub: sub.to_string(),
                    via: Transport::Ws,
                    topic: topic.to_string(),
                    epoch,
                    offset,
                    id: str_field(&v, "id"),
                });
            }
            Some("error") if solicited => {
                return Ended::Refused(format!("subscribe: {}", str_field(&v, "code")));
            }
            _ => {}
        }
    }
}

/// Reads a client WebSocket's JSON frames, pinging the server every [`PING_EVERY`] and
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

    /// The next JSON frame, or how the session ended.
    pub(super) async fn next(
        &mut self,
        ws: &mut super::Ws,
        stop: &CancellationToken,
    ) -> Result<serde_json::Value, Ended> {
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return Err(Ended::Stopped);
                }
                _ = self.ping.tick() => {
                    if self.last_frame.elapsed() > IDLE {
                        return Err(Ended::Lost(format!("silent for {} s", IDLE.as_secs())));
                    }
                    let ping = Message::text(r#"{"type":"ping","req":0}"#);
                    if let Err(e) = ws.send(ping).await {
                        return Err(Ended::Lost(format!("send: {e}")));
                    }
                    continue;
                }
                m = ws.next() => m,
            };
            let m = match m {
                None => return Err(Ended::Lost("connection closed".into())),
                Some(Err(e)) => return Err(Ended::Lost(e.to_string())),
                Some(Ok(Message::Close(c))) => {
                    let code = c.map(|c| u16::from(c.code)).unwrap_or_default();
                    return Err(Ended::Lost(format!("close {code}")));
                }
                Some(Ok(m)) => m,
            };
            self.last_frame = Instant::now();
            if let Some(v) = frame_json(&m) {
                return Ok(v);
            }
        }
    }
}
