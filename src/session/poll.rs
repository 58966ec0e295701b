//! Long and short polls: read what is there after `after`; if nothing, wait for the topic's
//! durable head to pass it, the timeout, or shutdown.

use crate::delivery::envelope::Delivery;
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::frames::Position;
use crate::protocol::resume::{self, ResetReason};
use crate::protocol::{ApiError, TopicName};
use crate::shutdown::Shutdown;
use crate::storage::TopicMeta;
use crate::topic::service::Topics;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PollRequest {
    pub topic: TopicName,
    pub position: Position,
    pub limit: usize,
    pub timeout: Duration,
    /// A pull consumer: lease messages of this consumer instead of reading a stream.
    pub consumer: Option<(String, ConsumerOptions)>,
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

/// How often a waiting pull consumer looks again for redeliveries that came due.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// Serves one poll.
pub async fn poll(
    topics: &Topics,
    req: PollRequest,
    shutdown: &Shutdown,
    max_bytes: usize,
) -> Result<PollResponse, ApiError> {
    let handle = topics.handle(&req.topic).await?;
    let info = handle.info().await?;
    if let Some((name, options)) = &req.consumer {
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut head_rx = handle.watch_head();
        loop {
            let messages = handle
                .lease(name.clone(), options.clone(), req.position.after, req.limit)
                .await?;
            if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
                let head = *head_rx.borrow();
                return Ok(PollResponse {
                    next: messages
                        .iter()
                        .map(|m| m.offset)
                        .max()
                        .or(req.position.after)
                        .unwrap_or(0),
                    messages,
                    epoch: info.epoch,
                    recovered: true,
                    reset: None,
                    first: info.first,
                    head,
                });
            }
            tokio::select! {
                _ = head_rx.changed() => {}
                _ = tokio::time::sleep(LEASE_RETRY) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait() => return Err(ApiError::unavailable("node is shutting down")),
            }
        }
    }
    let meta = TopicMeta {
        epoch: info.epoch.to_string(),
        first: info.first,
        head: info.head,
    };
    let plan = resume::plan(&req.position, &meta)?;
    let start = plan.start;
    let mut head_rx = handle.watch_head();
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
        info.history
            .read(&req.topic, &info.epoch, start, head, req.limit, max_bytes)
            .await?
            .messages
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
