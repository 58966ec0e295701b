//! The dead-letter outbox of a topic actor. A message that exhausted its attempts is done
//! in its group's window and goes into the group's `outbox`, which is persisted with the
//! group. A task of its own publishes it to `$dlq.<topic>`, retrying with backoff, and then
//! tells the actor ([`TopicMsg::DeadLettered`]), which takes it out of the outbox. So the
//! actor never waits for the dead-letter topic, and a dead letter is lost neither when a
//! publish fails (it is retried for as long as the actor runs) nor when the actor stops
//! (the next one loads the outbox and publishes it again; its idempotent id keeps the
//! dead-letter topic free of duplicates within the dedupe window, and the removal from the
//! outbox is durable with the next group commit).

use super::actor::TopicState;
use super::service::Topics;
use super::TopicMsg;
use crate::consumer::stored::OutboxLetter;
use crate::consumer::window::DeadLetter;
use crate::protocol::topic::DLQ_PREFIX;
use crate::protocol::TopicName;
use crate::storage::StorageError;
use bytes::Bytes;
use ractor::{ActorRef, ActorStatus};
use std::sync::Arc;
use std::time::Duration;

/// The wait after a first failed dead-letter publish; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries: a dead-letter topic that is moving or restarting
/// is back within seconds, and one try every 5 s costs nothing while it is not.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A dead letter ready to publish.
struct Outgoing {
    topics: Topics,
    dlq: TopicName,
    consumer: String,
    offset: u64,
    data: Bytes,
    id: String,
    /// The epoch of `offset`.
    epoch: Arc<str>,
}

impl TopicState {
    /// Dead letters of `consumer`: into its outbox now, sent once this message is handled.
    pub(super) fn dead_letters(&mut self, consumer: &str, dead: Vec<DeadLetter>) {
        if dead.is_empty() {
            return;
        }
        let epoch = self.epoch.clone();
        if let Some(g) = self.groups.get_mut(consumer) {
            g.outbox.extend(dead.iter().map(|&letter| OutboxLetter {
                letter,
                epoch: Some(epoch.to_string()),
            }));
            g.dirty = true;
        }
        self.dead_queue.extend(
            dead.into_iter()
                .map(|d| (consumer.to_string(), d, epoch.clone())),
        );
    }

    /// Queues every dead letter the loaded groups still hold.
    pub(super) fn resend_outboxes(&mut self) {
        for (name, g) in self.groups.iter_mut() {
            for l in &mut g.outbox {
                // A letter recorded before epochs were kept belongs to the epoch it was
                // loaded in.
                let epoch = l.epoch.get_or_insert_with(|| self.epoch.to_string());
                self.dead_queue
                    .push((name.clone(), l.letter, Arc::from(epoch.as_str())));
            }
        }
    }

    /// Starts publishing every queued dead letter.
    pub(super) fn send_dead_letters(
        &mut self,
        myself: &ActorRef<TopicMsg>,
    ) -> Result<(), StorageError> {
        for (consumer, d, epoch) in std::mem::take(&mut self.dead_queue) {
            match self.outgoing(&consumer, d, &epoch)? {
                Some(out) => {
                    tokio::spawn(publish(out, myself.clone()));
                }
                None => self.dead_lettered(&consumer, d.offset, &epoch),
            }
        }
        Ok(())
    }

    /// A dead letter of `consumer` is in the dead-letter topic: out of the outbox.
    pub(super) fn dead_lettered(&mut self, consumer: &str, offset: u64, epoch: &str) {
        if let Some(g) = self.groups.get_mut(consumer) {
            let before = g.outbox.len();
            g.outbox
                .retain(|l| !(l.letter.offset == offset && l.epoch.as_deref() == Some(epoch)));
            if g.outbox.len() != before {
                // The removal is written by this message's settle, with the next entry.
                g.dirty = true;
            }
        }
    }

    /// The dead letter `d` of `consumer` as published: the consumer name and original
    /// offset around the message. `None` if there is nothing to publish: the topic is a
    /// system topic (it has no dead-letter topic) or retention removed the message.
    /// The letter is built from its own epoch (the id with it), not the topic's current
    /// one: a letter republished after an epoch change is the same letter.
    fn outgoing(
        &self,
        consumer: &str,
        d: DeadLetter,
        epoch: &Arc<str>,
    ) -> Result<Option<Outgoing>, StorageError> {
        let (Some(topics), Ok(dlq)) = (
            self.ctx.topics.get(),
            TopicName::parse(&format!("{DLQ_PREFIX}{}", self.topic)),
        ) else {
            tracing::warn!(topic = %self.topic, consumer, offset = d.offset, "dead letter dropped: a system topic has no dead-letter topic");
            return Ok(None);
        };
        let Some(msg) = self
            .ctx
            .log
            .read(self.topic.as_str(), d.offset, d.offset, 1, usize::MAX)?
            .into_iter()
            .next()
        else {
            tracing::info!(topic = %self.topic, consumer, offset = d.offset, "dead letter removed by retention before it was published");
            return Ok(None);
        };
        let data = format!(
            "{{\"topic\":{},\"consumer\":{},\"offset\":{},\"epoch\":{},\"attempts\":{},\"id\":{},\"time\":{},\"data\":{}}}",
            serde_json::Value::from(self.topic.as_str()),
            serde_json::Value::from(consumer),
            d.offset,
            serde_json::Value::from(&**epoch),
            d.attempts,
            serde_json::Value::from(msg.id.as_str()),
            msg.time_ms,
            String::from_utf8_lossy(&msg.data),
        );
        Ok(Some(Outgoing {
            topics: topics.clone(),
            dlq,
            consumer: consumer.to_string(),
            offset: d.offset,
            data: Bytes::from(data),
            id: format!("dlq-{consumer}-{epoch}-{}", d.offset),
            epoch: epoch.clone(),
        }))
    }
}

/// Publishes `out` until it is durable in the dead-letter topic, then tells `actor`. Gives
/// up when `actor` stops: its successor publishes the dead letter again from the outbox.
async fn publish(out: Outgoing, actor: ActorRef<TopicMsg>) {
    let mut wait = RETRY_FIRST;
    for attempt in 1u32.. {
        let id = Some(out.id.clone());
        match out.topics.publish(&out.dlq, out.data.clone(), id).await {
            Ok(_) => {
                tracing::info!(topic = %out.dlq, consumer = out.consumer, offset = out.offset, attempt, "dead-lettered");
                let _ = actor.cast(TopicMsg::DeadLettered {
                    consumer: out.consumer,
                    offset: out.offset,
                    epoch: out.epoch,
                });
                return;
            }
            Err(e) => {
                metrics::counter!("starling_dead_letter_retries_total").increment(1);
                tracing::warn!(topic = %out.dlq, consumer = out.consumer, offset = out.offset, attempt, retry_ms = wait.as_millis() as u64, error = %e, "dead letter publish failed; retrying");
            }
        }
        tokio::time::sleep(wait).await;
        if matches!(
            actor.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        ) {
            return;
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}
