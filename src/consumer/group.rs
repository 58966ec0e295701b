//! A consumer group: one consumer's window plus the connections (members) that share its
//! messages. The topic actor owns one per consumer name; this module decides who gets what
//! and never blocks (it reads the log and offers frames to outbound queues).

use super::stored::{OutboxLetter, StoredConsumer};
use super::window::{DeadLetter, Holder, Window, WindowConfig};
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::{OutFrame, Outbound};
use crate::delivery::SubId;
use crate::protocol::TopicName;
use crate::storage::{StorageError, TopicLog};
use std::sync::Arc;

/// A connection taking part in a consumer.
pub struct Member {
    pub id: SubId,
    pub outbound: Arc<Outbound>,
    /// The most this member may hold in flight, if it asked for less than the group's.
    pub max_inflight: Option<usize>,
}

pub struct Group {
    pub window: Window,
    pub cfg: WindowConfig,
    pub members: Vec<Member>,
    next_member: usize,
    /// Unix ms of the last ack, nack, poll, join, leave or settings change, refreshed while
    /// a member is connected. Deliveries need no record of their own: they go to members
    /// (whose leaving counts) or leases.
    last_active_ms: u64,
    /// Dead letters not yet published: persisted with the group, removed once published.
    pub outbox: Vec<OutboxLetter>,
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
    /// A new group, active at `now_ms`.
    pub fn new(window: Window, cfg: WindowConfig, now_ms: u64) -> Group {
        Group {
            window,
            cfg,
            members: Vec::new(),
            next_member: 0,
            last_active_ms: now_ms,
            outbox: Vec::new(),
            dirty: true,
        }
    }

    pub fn restore(stored: &StoredConsumer) -> Group {
        let window = Window::restore(&stored.window);
        let mut g = Group::new(window, stored.config(), stored.last_active_ms);
        g.outbox = stored.outbox.clone();
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
            last_active_ms: self.last_active_ms,
            outbox: self.outbox.clone(),
        }
    }

    /// Records activity at `now_ms` (the group changed, so it is persisted).
    pub fn touch(&mut self, now_ms: u64) {
        self.last_active_ms = self.last_active_ms.max(now_ms);
        self.dirty = true;
    }

    /// How long since the last recorded activity.
    pub fn idle_for(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_active_ms)
    }

    /// Whether the group has been idle for `idle_ms` at `now_ms`: no member connected,
    /// nothing leased, no dead letter to publish, and no activity since.
    pub fn expired(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.members.is_empty()
            && self.window.in_flight() == 0
            && self.outbox.is_empty()
            && self.idle_for(now_ms) >= idle_ms
    }

    /// How many more messages `holder` may take by its own cap (`None`: the group's; never
    /// above the group's) less what it holds. The window keeps the group's total within
    /// `max_inflight` besides.
    pub fn room(&self, holder: Holder, cap: Option<usize>) -> usize {
        let cap = cap.map_or(self.cfg.max_inflight, |c| c.min(self.cfg.max_inflight));
        cap.saturating_sub(self.window.held(holder))
    }

    /// Removes member `id` at `now_ms`; what it held is due at once (or dead if it was the
    /// last try).
    pub fn leave(&mut self, id: SubId, now_ms: u64) -> Vec<DeadLetter> {
        self.members.retain(|m| m.id != id);
        self.touch(now_ms);
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
            let holder = Holder::Member(member.id);
            if !member.outbound.has_room() || self.room(holder, member.max_inflight) == 0 {
                self.next_member = i + 1;
                idle += 1;
                continue;
            }
            let taken = self.window.take(&self.cfg, holder, t.now_ms, t.head, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn group(now_ms: u64) -> Group {
        let cfg = WindowConfig {
            ack_wait_ms: 1000,
            max_deliver: 3,
            max_inflight: 4,
            backoff_ms: vec![100],
        };
        Group::new(Window::starting_after(0), cfg, now_ms)
    }

    #[test]
    fn expires_only_after_a_whole_idle_period_with_nothing_leased() {
        let mut g = group(1_000);
        assert!(!g.expired(1_999, 1_000));
        assert!(g.expired(2_000, 1_000));
        g.touch(1_500);
        assert!(
            !g.expired(2_000, 1_000),
            "activity restarts the idle period"
        );
        g.touch(500);
        assert!(g.expired(2_500, 1_000), "an older time never moves it back");
        // A lease holds the group until it is acked or expires.
        g.window.take(&g.cfg.clone(), Holder::Lease, 2_500, 1, 1);
        assert!(!g.expired(10_000, 1_000));
        g.window.ack(1).unwrap();
        assert!(g.expired(10_000, 1_000));
        // A dead letter not yet published holds it too: expiring would lose the letter.
        g.outbox.push(OutboxLetter {
            letter: super::DeadLetter {
                offset: 1,
                attempts: 5,
            },
            epoch: Some("e".into()),
        });
        assert!(!g.expired(10_000, 1_000));
    }

    #[test]
    fn a_member_cap_narrows_only_its_own_room() {
        let mut g = group(0);
        let (a, b) = (Holder::Member(1), Holder::Member(2));
        assert_eq!(g.room(a, None), 4);
        assert_eq!(g.room(a, Some(1)), 1);
        assert_eq!(g.room(a, Some(99)), 4, "never above the group's");
        g.window.take(&g.cfg.clone(), a, 0, 10, 1);
        assert_eq!(g.room(a, Some(1)), 0);
        assert_eq!(
            g.room(b, None),
            4,
            "what `a` holds does not count against `b`"
        );
    }
}
