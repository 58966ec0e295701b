//! Replay: brings one subscription from its start offset to the live head, paced by the
//! outbound queue, then asks the topic actor to make it live. The topic actor accepts only
//! when the replay reached its durable head exactly, so there is no hole and no duplicate
//! at the seam.

use super::SessionMsg;
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::{OutFrame, Outbound, Subscribed};
use crate::delivery::SubId;
use crate::protocol::resume::{ResetReason, ResumePlan};
use crate::protocol::TopicName;
use crate::topic::error::TopicError;
use crate::topic::handle::TopicHandle;
use crate::topic::history::History;
use crate::topic::GoLive;
use ractor::ActorRef;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Messages read from the log per step.
const BATCH: usize = 256;

pub struct Replay {
    pub topic: TopicName,
    pub sub: SubId,
    pub epoch: Arc<str>,
    pub topic_handle: TopicHandle,
    pub history: History,
    pub outbound: Arc<Outbound>,
    pub cursor: Arc<AtomicU64>,
    pub session: ActorRef<SessionMsg>,
    pub batch_bytes: usize,
}

impl Replay {
    /// Runs until the subscription is live, the queue closes, or the topic actor is gone
    /// (then the supervisor's resubscribe request takes over).
    pub async fn run(self, start: u64, mut head: u64) {
        let mut next = start;
        loop {
            while next <= head {
                if !self.outbound.wait_for_room().await {
                    return;
                }
                let read = self
                    .history
                    .read(
                        &self.topic,
                        &self.epoch,
                        next,
                        head,
                        BATCH,
                        self.batch_bytes,
                    )
                    .await;
                let (batch, first) = match read {
                    Ok(b) => (b.messages, b.first),
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "replay read failed");
                        // A history that moved (another epoch, another owner): start over
                        // from the cursor. Anything else ends the session.
                        let msg = if !matches!(e, TopicError::Rejected(_) | TopicError::Internal) {
                            SessionMsg::Resubscribe {
                                topic: self.topic.clone(),
                                sub: self.sub,
                            }
                        } else {
                            SessionMsg::ReplayFailed {
                                topic: self.topic.clone(),
                                sub: self.sub,
                            }
                        };
                        let _ = self.session.cast(msg);
                        return;
                    }
                };
                let first_read = batch.first().map_or(head + 1, |m| m.offset);
                if first_read > next {
                    // Retention removed messages while we were replaying: say so.
                    let first = first.min(first_read);
                    let reset = Subscribed {
                        topic: self.topic.clone(),
                        req: None,
                        epoch: self.epoch.clone(),
                        first,
                        head,
                        plan: ResumePlan {
                            start: first_read,
                            reset: Some(ResetReason::Trimmed),
                        },
                        consumer: None,
                    };
                    if self
                        .outbound
                        .push(OutFrame::Subscribed(Box::new(reset)))
                        .is_err()
                    {
                        return;
                    }
                    next = first_read;
                }
                for msg in &batch {
                    let d = Delivery::new(&self.topic, &self.epoch, msg, None);
                    if self.outbound.push(OutFrame::Message(Arc::new(d))).is_err() {
                        return;
                    }
                    self.cursor.store(msg.offset, Ordering::Release);
                    next = msg.offset + 1;
                }
            }
            let reply = self.topic_handle.go_live(self.sub, next).await;
            match reply {
                Ok(GoLive::Live) => return,
                Ok(GoLive::Behind { head: h }) => head = h,
                Err(_) => {
                    // No answer: the actor is gone (a resubscribe request follows) or
                    // stuck. Either way this subscription cannot go live by itself: end
                    // the session so that the client resumes by offset.
                    let _ = self.session.cast(SessionMsg::ReplayFailed {
                        topic: self.topic.clone(),
                        sub: self.sub,
                    });
                    return;
                }
            }
        }
    }
}
