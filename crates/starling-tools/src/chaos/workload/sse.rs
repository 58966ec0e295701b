//! An SSE stream subscriber: `GET /v1/topics/{t}/events?after=0`, resumed with
//! `Last-Event-ID: <offset>:<epoch>`. The stream's first event tells whether it resumed:
//! `Subscribed{recovered:true}` on a message, `recovered:false` on a `reset`; a later
//! `reset` is a `Reset`.

use super::ws_sub::{reconnect, Ended, Resume};
use super::{backoff, str_field, Ctx, REQUEST_TIMEOUT};
use crate::chaos::history::{Event, Transport};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The server sends a keepalive comment after 15 s of silence: nothing for this long means
/// the connection is dead.
const IDLE: Duration = Duration::from_secs(20);

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

async fn session(
    ctx: &Ctx,
    sub: &str,
    topic: &str,
    node: usize,
    pos: &mut Resume,
    stop: &CancellationToken,
) -> Ended {
    let base = format!("{}/v1/topics/{topic}/events", ctx.url(node));
    let request = match pos {
        Some((epoch, offset)) => ctx
            .http
            .get(base)
            .header("Last-Event-ID", format!("{offset}:{epoch}")),
        None => ctx.http.get(format!("{base}?after=0")),
    };
    let res = match tokio::time::timeout(REQUEST_TIMEOUT, request.send()).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return Ended::Unreachable(e.to_string()),
        Err(_) => return Ended::Unreachable("connect timed out".into()),
    };
    if !res.status().is_success() {
        return Ended::Refused(format!("HTTP {}", res.status().as_u16()));
    }
    let mut body = res.bytes_stream();
    let mut parser = Parser::default();
    let mut first = true;
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            c = tokio::time::timeout(IDLE, body.next()) => c,
        };
        let bytes = match chunk {
            Err(_) => return Ended::Lost(format!("silent for {} s", IDLE.as_secs())),
            Ok(None) => return Ended::Lost("stream ended".into()),
            Ok(Some(Err(e))) => return Ended::Lost(e.to_string()),
            Ok(Some(Ok(b))) => b,
        };
        for ev in parser.feed(&bytes) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) else {
                continue;
            };
            let epoch = str_field(&v, "epoch");
            let subscribed = |t_ms: u64, recovered: bool, first: u64| Event::Subscribed {
                t_ms,
                sub: sub.to_string(),
                node: ctx.id(node).to_string(),
                via: Transport::Sse,
                topic: topic.to_string(),
                epoch: epoch.clone(),
                recovered,
                first,
            };
            match ev.event.as_str() {
                "reset" => {
                    let at = v["first"].as_u64().unwrap_or(0);
                    *pos = ev.id.as_deref().and_then(parse_id).or(pos.take());
                    let opening = std::mem::take(&mut first);
                    ctx.rec.record(|t_ms| match opening {
                        true => subscribed(t_ms, false, at),
                        false => Event::Reset {
                            t_ms,
                            sub: sub.to_string(),
                            topic: topic.to_string(),
                            epoch: epoch.clone(),
                            first: at,
                        },
                    });
                }
                "message" | "" => {
                    let offset = v["offset"].as_u64().unwrap_or(0);
                    if std::mem::take(&mut first) {
                        ctx.rec.record(|t_ms| subscribed(t_ms, true, offset));
                    }
                    *pos = Some((epoch.clone(), offset));
                    ctx.rec.record(|t_ms| Event::Deliver {
                        t_ms,
                        sub: sub.to_string(),
                        via: Transport::Sse,
                        topic: topic.to_string(),
                        epoch,
                        offset,
                        id: str_field(&v, "id"),
                    });
                }
                _ => {}
            }
        }
    }
}

/// `<offset>:<epoch>`.
fn parse_id(id: &str) -> Option<(String, u64)> {
    let (offset, epoch) = id.split_once(':')?;
    Some((epoch.to_string(), offset.parse().ok()?))
}

/// One dispatched SSE event.
#[derive(Debug, Default, PartialEq, Eq)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// An incremental SSE parser: bytes in, complete events out.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_parsed() {
        let mut p = Parser::default();
        assert!(p.feed(b"retry:3000\n\n:\nid: 1:e1\nevent: mess").is_empty());
        let evs = p.feed(b"age\ndata: {\"offset\":1}\n\n:\nid: 0:e2\nevent: reset\ndata: {}\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    id: Some("1:e1".into()),
                    event: "message".into(),
                    data: "{\"offset\":1}".into()
                },
                SseEvent {
                    id: Some("0:e2".into()),
                    event: "reset".into(),
                    data: "{}".into()
                },
            ]
        );
        assert_eq!(parse_id("41:abc"), Some(("abc".into(), 41)));
        assert_eq!(parse_id("x"), None);
    }
}
