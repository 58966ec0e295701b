//! A long-poll stream subscriber: `GET /v1/topics/{t}/messages?after=N&epoch=E&timeout=5`
//! in a loop from `after=0`. The first answer after a (re)connect is `Subscribed`; a later
//! answer with `recovered:false` is a `Reset`. A failed poll is a `Disconnect`; the next one
//! goes to the same node, then to the next.

use super::ws_sub::Resume;
use super::{backoff, str_field, Ctx};
use crate::chaos::history::{Event, Transport};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The server holds a poll this long when nothing comes.
const HOLD_S: u64 = 5;
/// How long the client waits for the answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(HOLD_S + 4);

pub async fn run(ctx: Ctx, sub: String, topic: String, home: usize, stop: CancellationToken) {
    ctx.rec.register(&sub, &topic);
    let mut node = home % ctx.nodes.len();
    let mut pos: Resume = None;
    let mut fresh = true;
    loop {
        let (after, epoch) = match &pos {
            Some((e, o)) => (*o, format!("&epoch={e}")),
            None => (0, String::new()),
        };
        let url = format!(
            "{}/v1/topics/{topic}/messages?after={after}{epoch}&timeout={HOLD_S}&limit=1000",
            ctx.url(node)
        );
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = poll_once(&ctx, url) => a,
        };
        let v = match answer {
            Ok(v) => v,
            Err(reason) => {
                if fresh {
                    node = ctx.next(node);
                } else {
                    tracing::debug!(sub, node = ctx.id(node), %reason, "poll failed");
                    ctx.rec.record(|t_ms| Event::Disconnect {
                        t_ms,
                        sub: sub.clone(),
                        reason,
                    });
                    fresh = true;
                }
                if !backoff(&stop).await {
                    return;
                }
                continue;
            }
        };
        let epoch = str_field(&v, "epoch");
        let recovered = v["recovered"].as_bool().unwrap_or(true);
        let first = v["first"].as_u64().unwrap_or(0);
        if std::mem::take(&mut fresh) {
            ctx.rec.record(|t_ms| Event::Subscribed {
                t_ms,
                sub: sub.clone(),
                node: ctx.id(node).to_string(),
                via: Transport::Poll,
                topic: topic.clone(),
                epoch: epoch.clone(),
                recovered,
                first,
            });
        } else if !recovered {
            ctx.rec.record(|t_ms| Event::Reset {
                t_ms,
                sub: sub.clone(),
                topic: topic.clone(),
                epoch: epoch.clone(),
                first,
            });
        }
        for m in v["messages"].as_array().into_iter().flatten() {
            let offset = m["offset"].as_u64().unwrap_or(0);
            ctx.rec.record(|t_ms| Event::Deliver {
                t_ms,
                sub: sub.clone(),
                via: Transport::Poll,
                topic: topic.clone(),
                epoch: str_field(m, "epoch"),
                offset,
                id: str_field(m, "id"),
            });
        }
        let next = v["next"].as_u64().unwrap_or(after);
        pos = Some((epoch, next));
    }
}

async fn poll_once(ctx: &Ctx, url: String) -> Result<serde_json::Value, String> {
    let res = ctx
        .http
        .get(url)
        .timeout(POLL_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let v: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let code = v["error"]["code"].as_str().unwrap_or("unknown");
        return Err(format!("HTTP {}: {code}", status.as_u16()));
    }
    Ok(v)
}
