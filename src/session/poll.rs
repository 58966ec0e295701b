//! Long and short polls: read what is there after `after`; if nothing, wait for the topic's
//! durable head to pass it, the timeout, or shutdown.

use crate::protocol::envelope::Delivery;
use crate::protocol::frames::Position;
use crate::protocol::resume::{self, ResetReason};
use crate::protocol::{ApiError, TopicName};
use crate::shutdown::Shutdown;
use crate::storage::TopicMeta;
use crate::topic::service::{call_topic, Topics};
use crate::topic::TopicMsg;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PollRequest {
    pub topic: TopicName,
    pub position: Position,
    pub limit: usize,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct PollResponse {
    pub messages: Vec<Delivery>,
    /// Last offset returned, or the position the client should poll after next.
    pub next: u64,
    pub epoch: Arc<str>,
    pub recovered: bool,
    pub reset: Option<ResetReason>,
    pub first: u64,
    pub head: u64,
}

/// Serves one poll.
pub async fn poll(
    topics: &Topics,
    req: PollRequest,
    shutdown: &Shutdown,
    max_bytes: usize,
) -> Result<PollResponse, ApiError> {
    let handle = topics.handle(&req.topic).await?;
    let info = call_topic(&handle.actor, TopicMsg::Info).await?;
    let meta = TopicMeta {
        epoch: info.epoch.to_string(),
        first: info.first,
        head: info.head,
    };
    let plan = resume::plan(&req.position, &meta)?;
    let start = plan.start;
    let mut head_rx = handle.shared.head.subscribe();
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut head = info.head;
    while head < start && !req.timeout.is_zero() {
        tokio::select! {
            changed = head_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                head = *head_rx.borrow_and_update();
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.wait() => break,
        }
    }
    let head = head.max(info.head);
    let stored = if head >= start {
        topics
            .log()
            .read(req.topic.as_str(), start, head, req.limit, max_bytes)
            .map_err(|e| {
                tracing::error!(topic = %req.topic, error = %e, "poll read failed");
                ApiError::internal()
            })?
    } else {
        Vec::new()
    };
    let mut reset = plan.reset;
    if let Some(m) = stored.first() {
        if m.offset > start && reset.is_none() {
            reset = Some(ResetReason::Trimmed);
        }
    }
    let next = stored.last().map_or(start - 1, |m| m.offset);
    let messages = stored
        .iter()
        .map(|m| Delivery::new(&req.topic, &info.epoch, m, None))
        .collect();
    Ok(PollResponse {
        messages,
        next,
        epoch: info.epoch,
        recovered: reset.is_none(),
        reset,
        first: info.first,
        head,
    })
}
