//! An SSE stream subscriber: `GET /v1/topics/{t}/events?after=0`, resumed with
//! `Last-Event-ID: <offset>:<epoch>`. The stream's first event tells whether it resumed:
//! `Subscribed{recovered:true}` on a message, `recovered:false` on a `reset`; a later
//! `reset` is a `Reset`.

use super::ws_sub::{reconnect, Ended, Resume};
use super::{backoff, Ctx};
use crate::chaos::history::{Event, Transport};
use starling_client::Error;
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
    let after = pos.is_none().then_some(0);
    let mut events = match ctx.client(node).events(topic, after, pos).await {
        Ok(events) => events.idle_limit(IDLE),
        Err(Error::Api { status, .. }) => return Ended::Refused(format!("HTTP {status}")),
        Err(e) => return Ended::Unreachable(e.to_string()),
    };
    let mut first = true;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            ev = events.next() => ev,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(Error::Timeout) => return Ended::Lost(format!("silent for {} s", IDLE.as_secs())),
            Err(Error::Ended) => return Ended::Lost("stream ended".into()),
            Err(e) => return Ended::Lost(e.to_string()),
        };
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
                *pos = ev.position().or(pos.take());
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

fn str_field(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}
