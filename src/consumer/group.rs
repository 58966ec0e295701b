//! A consumer group: one consumer's window plus the connections (members) that share its
//! messages. The topic actor owns one per consumer name; this module decides who gets what
//! and never blocks (it reads the log and offers frames to outbound queues).

use super::window::{DeadLetter, Holder, Snapshot, Window, WindowConfig};
use crate::protocol::envelope::Delivery;
use crate::protocol::TopicName;
use crate::session::outbound::{OutFrame, Outbound};
use crate::session::SessionMsg;
use crate::storage::{StorageError, TopicLog};
use crate::topic::SubId;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A connection taking part in a consumer.
pub struct Member {
    pub id: SubId,
    pub outbound: Arc<Outbound>,
    pub session: ActorRef<SessionMsg>,
}

/// What is persisted per consumer: its window and its settings.
#[derive(Serialize, Deserialize)]
pub struct StoredConsumer {
    pub window: Snapshot,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_inflight: usize,
    pub backoff_ms: Vec<u64>,
}

pub struct Group {
    pub window: Window,
    pub cfg: WindowConfig,
    pub members: Vec<Member>,
    next_member: usize,
    /// Changed since last persisted.
    pub dirty: bool,
}

/// What a pump needs to know about the topic.
pub struct TopicView<'a> {
    pub topic: &'a TopicName,
    pub epoch: &'a Arc<str>,
    pub log: &'a dyn TopicLog,
    /// Durable head: nothing above it is delivered.
    pub head: u64,
    pub first: u64,
    pub now_ms: u64,
}

impl Group {
    pub fn new(window: Window, cfg: WindowConfig) -> Group {
        Group {
            window,
            cfg,
            members: Vec::new(),
            next_member: 0,
            dirty: true,
        }
    }

    pub fn restore(stored: &StoredConsumer) -> Group {
        let cfg = WindowConfig {
            ack_wait_ms: stored.ack_wait_ms,
            max_deliver: stored.max_deliver,
            max_inflight: stored.max_inflight,
            backoff_ms: stored.backoff_ms.clone(),
        };
        let mut g = Group::new(Window::restore(&stored.window), cfg);
        g.dirty = false;
        g
    }

    pub fn stored(&self) -> StoredConsumer {
        StoredConsumer {
            window: self.window.snapshot(),
            ack_wait_ms: self.cfg.ack_wait_ms,
            max_deliver: self.cfg.max_deliver,
            max_inflight: self.cfg.max_inflight,
            backoff_ms: self.cfg.backoff_ms.clone(),
        }
    }

    /// Removes member `id`; what it held is due at once (or dead if it was the last try).
    pub fn leave(&mut self, id: SubId) -> Vec<DeadLetter> {
        self.members.retain(|m| m.id != id);
        self.dirty = true;
        self.window.release(&self.cfg, Holder::Member(id))
    }

    /// Handles deadlines and hands out everything that may go, round-robin over members
    /// with room in their queues. Returns dead letters to publish.
    pub fn pump(&mut self, t: &TopicView) -> Result<Vec<DeadLetter>, StorageError> {
        if t.first > self.window.floor() + 1 {
            self.window.trim(t.first);
            self.dirty = true;
        }
        let mut dead = self.window.expire(&self.cfg, t.now_ms);
        // Members whose queue closed are gone: their sessions will say so; stop feeding.
        let mut idle = 0;
        while !self.members.is_empty() && idle < self.members.len() {
            let i = self.next_member % self.members.len();
            let member = &self.members[i];
            if !member.outbound.has_room() {
                self.next_member = i + 1;
                idle += 1;
                continue;
            }
            let taken = self
                .window
                .take(&self.cfg, Holder::Member(member.id), t.now_ms, t.head, 1);
            dead.extend(taken.dead.iter().copied());
            let Some(d) = taken.deliveries.first().copied() else {
                if taken.dead.is_empty() {
                    break;
                }
                continue;
            };
            // The turn passes only once this member got something.
            self.next_member = i + 1;
            self.dirty = true;
            idle = 0;
            let msg = t
                .log
                .read(t.topic.as_str(), d.offset, d.offset, 1, usize::MAX)?;
            let Some(msg) = msg.into_iter().next() else {
                // Removed by retention since: skip it.
                let _ = self.window.ack(d.offset);
                continue;
            };
            let delivery = Delivery::new(t.topic, t.epoch, &msg, Some(d.attempt));
            if !member.outbound.offer(OutFrame::Message(Arc::new(delivery))) {
                // It did not fit after all: back to the window, and this member is done
                // for this round.
                self.window.unfly(d.offset);
                idle += 1;
            }
        }
        if !dead.is_empty() {
            self.dirty = true;
        }
        Ok(dead)
    }
}
