//! After the workload: convergence (every node sees every node up, and every topic accepts
//! a probe publish through every node), catching up (every stream subscriber and consumer
//! group has reached each topic's head), and the final log of every topic.

use super::cluster::Cluster;
use super::history::Event;
use super::workload::{publish, Ctx, CONSUMER};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

const POLL_EVERY: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
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

async fn get_json(ctx: &Ctx, path: &str) -> Option<serde_json::Value> {
    for (_, url) in ctx.nodes.iter() {
        let res = ctx
            .http
            .get(format!("{url}{path}"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        if let Ok(r) = res {
            if r.status().is_success() {
                if let Ok(v) = r.json().await {
                    return Some(v);
                }
            }
        }
    }
    None
}

async fn meta(ctx: &Ctx, topic: &str) -> Option<Meta> {
    let v = get_json(ctx, &format!("/v1/topics/{topic}")).await?;
    let epoch = v["epoch"].as_str()?.to_string();
    Some((epoch, v["first"].as_u64()?, v["head"].as_u64()?))
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
            let v = get_json(ctx, &format!("/v1/topics/{t}/consumers/{CONSUMER}")).await;
            let floor = v
                .as_ref()
                .and_then(|v| v["ack_floor"].as_u64())
                .unwrap_or(0);
            let pending = v.as_ref().and_then(|v| v["pending"].as_u64()).unwrap_or(1);
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
            let path = format!(
                "/v1/topics/{topic}/messages?after={after}&epoch={epoch}&limit={PAGE}&timeout=0"
            );
            let v = get_json(ctx, &path)
                .await
                .ok_or_else(|| format!("cannot read the log of {topic} after {after}"))?;
            let messages = v["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() || v["epoch"].as_str() != Some(epoch.as_str()) {
                break;
            }
            for m in &messages {
                let offset = m["offset"].as_u64().unwrap_or(0);
                ctx.rec.record(|_| Event::FinalLog {
                    topic: topic.clone(),
                    epoch: epoch.clone(),
                    offset,
                    id: m["id"].as_str().unwrap_or_default().to_string(),
                });
                after = after.max(offset);
            }
        }
    }
    Ok(())
}
