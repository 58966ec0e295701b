//! After the workload: convergence (every node sees every node up, and every topic accepts
//! a probe publish through every node), catching up (every stream subscriber and consumer
//! group has reached each topic's head), and the final log of every topic.

use super::cluster::Cluster;
use super::history::Event;
use super::workload::{publish, Ctx, CONSUMER};
use starling_client::{Client, Error, Poll};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

const POLL_EVERY: Duration = Duration::from_millis(250);
/// Messages per page when the final log is read.
const PAGE: u64 = 1000;

/// Waits for convergence within `bound`: whether it came, and what was still missing.
pub async fn converge(
    ctx: &Ctx,
    cluster: &Mutex<Cluster>,
    topics: &[String],
    bound: Duration,
) -> (bool, String) {
    let start = Instant::now();
    if !cluster.lock().await.poll_formed(bound).await {
        return (
            false,
            format!("not every node saw every node up within {bound:?}"),
        );
    }
    let mut pending: Vec<(usize, &String)> = (0..ctx.nodes.len())
        .flat_map(|n| topics.iter().map(move |t| (n, t)))
        .collect();
    loop {
        let mut left = Vec::new();
        for (node, topic) in pending {
            let id = format!("probe-{}-{topic}", ctx.nodes[node].0);
            if !publish::probe(ctx, node, topic, &id).await {
                left.push((node, topic));
            }
        }
        pending = left;
        let took = start.elapsed();
        if pending.is_empty() {
            let all = ctx.nodes.len() * topics.len();
            return (
                true,
                format!("all {all} probes acked after {} ms", took.as_millis()),
            );
        }
        if took >= bound {
            let missing: Vec<String> = pending
                .iter()
                .map(|(n, t)| format!("{t} via {}", ctx.nodes[*n].0))
                .collect();
            return (
                false,
                format!("probes not acked within {bound:?}: {}", missing.join(", ")),
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A topic's final meta: (epoch, first, head).
type Meta = (String, u64, u64);

/// The first answer any node gives to `ask`, trying them in order.
async fn from_any<T, F, A>(ctx: &Ctx, ask: F) -> Option<T>
where
    F: Fn(Client) -> A,
    A: Future<Output = Result<T, Error>>,
{
    for node in 0..ctx.nodes.len() {
        if let Ok(answer) = ask(ctx.client(node)).await {
            return Some(answer);
        }
    }
    None
}

async fn meta(ctx: &Ctx, topic: &str) -> Option<Meta> {
    let info = from_any(ctx, |c| async move { c.topic(topic).await }).await?;
    Some((info.epoch, info.first, info.head))
}

/// Waits within `bound` until every stream subscriber has been delivered each topic's head
/// and every consumer group has acked it; `Err` names who is behind.
pub async fn catch_up(ctx: &Ctx, topics: &[String], bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    loop {
        let mut behind = Vec::new();
        let mut metas = Vec::new();
        for t in topics {
            match meta(ctx, t).await {
                Some(m) => metas.push((t.clone(), m)),
                None => behind.push(format!("{t} (no topic info)")),
            }
        }
        for (sub, pos) in ctx.rec.positions() {
            let Some((_, (epoch, _, head))) = metas.iter().find(|(t, _)| *t == pos.topic) else {
                continue;
            };
            if *head > 0 && pos.last.as_ref() != Some(&(epoch.clone(), *head)) {
                behind.push(sub);
            }
        }
        for (t, (_, _, head)) in &metas {
            let info = from_any(ctx, |c| async move { c.consumer(t, CONSUMER).await }).await;
            let (floor, pending) = info.map_or((0, 1), |i| (i.ack_floor, i.pending));
            if floor < *head || pending > 0 {
                behind.push(format!("consumer {CONSUMER} of {t}"));
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(behind.join(", "));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Records each topic's `FinalMeta` and every message of its log (`FinalLog`).
pub async fn final_state(ctx: &Ctx, topics: &[String]) -> Result<(), String> {
    for topic in topics {
        let (epoch, first, head) = meta(ctx, topic)
            .await
            .ok_or_else(|| format!("no node answered for topic {topic}"))?;
        ctx.rec.record(|_| Event::FinalMeta {
            topic: topic.clone(),
            epoch: epoch.clone(),
            first,
            head,
        });
        let mut after = first.saturating_sub(1);
        while after < head {
            let page = Poll {
                after,
                epoch: Some(epoch.clone()),
                hold_s: 0,
                limit: PAGE,
            };
            let page = &page;
            let v = from_any(ctx, |c| async move { c.poll(topic, page).await })
                .await
                .ok_or_else(|| format!("cannot read the log of {topic} after {after}"))?;
            if v.messages.is_empty() || v.epoch != epoch {
                break;
            }
            for m in v.messages {
                ctx.rec.record(|_| Event::FinalLog {
                    topic: topic.clone(),
                    epoch: epoch.clone(),
                    offset: m.offset,
                    id: m.id.clone(),
                });
                after = after.max(m.offset);
            }
        }
    }
    Ok(())
}
