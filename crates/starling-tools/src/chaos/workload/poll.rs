//! A long-poll stream subscriber: `GET /v1/topics/{t}/messages?after=N&epoch=E&timeout=5`
//! in a loop from `after=0`. The first answer after a (re)connect is `Subscribed`; a later
//! answer with `recovered:false` is a `Reset`. A failed poll is a `Disconnect`; the next one
//! goes to the same node, then to the next.

use super::ws_sub::Resume;
use super::{backoff, Ctx};
use crate::chaos::history::{Event, Transport};
use starling_client::Poll;
use tokio_util::sync::CancellationToken;

/// The server holds a poll this long when nothing comes (the client waits that long plus
/// its request timeout for the answer).
const HOLD_S: u64 = 5;

pub async fn run(ctx: Ctx, sub: String, topic: String, home: usize, stop: CancellationToken) {
    ctx.rec.register(&sub, &topic);
    let mut node = home % ctx.nodes.len();
    let mut pos: Resume = None;
    let mut fresh = true;
    loop {
        let poll = match &pos {
            Some((e, o)) => Poll {
                after: *o,
                epoch: Some(e.clone()),
                hold_s: HOLD_S,
                limit: 1000,
            },
            None => Poll {
                hold_s: HOLD_S,
                limit: 1000,
                ..Poll::default()
            },
        };
        let client = ctx.client(node);
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = client.poll(&topic, &poll) => a.map_err(|e| e.to_string()),
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
        let (epoch, recovered, first) = (v.epoch, v.recovered, v.first);
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
        for m in v.messages {
            ctx.rec.record(|t_ms| Event::Deliver {
                t_ms,
                sub: sub.clone(),
                via: Transport::Poll,
                topic: topic.clone(),
                epoch: m.epoch,
                offset: m.offset,
                id: m.id,
            });
        }
        pos = Some((epoch, v.next));
    }
}
