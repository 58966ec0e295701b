//! A topic's stream subscribers on this node, as the owner and the follower actors both
//! keep them: catching up (replaying) or live (fed by the actor), and the switch between
//! the two at the durable head.

use super::history::History;
use super::{GoLive, SubscribeInfo, TopicShared};
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::OutFrame;
use crate::delivery::{SubId, Subscriber};
use crate::protocol::frames::Position;
use crate::protocol::resume;
use crate::storage::TopicMeta;
use crate::topic::error::TopicError;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Default)]
pub struct Audience {
    live: Vec<Subscriber>,
    catching_up: HashMap<SubId, Subscriber>,
}

impl Audience {
    /// Registers `sub` as catching up from where `position` says, against `meta` (whose
    /// head is the durable head); replay reads from `history`.
    pub fn subscribe(
        &mut self,
        shared: &TopicShared,
        sub: Subscriber,
        position: &Position,
        meta: &TopicMeta,
        history: History,
    ) -> Result<SubscribeInfo, TopicError> {
        let plan = resume::plan(position, meta)?;
        sub.cursor
            .store(plan.start.saturating_sub(1), Ordering::Release);
        shared.subscribers().insert(sub.id, sub.session.clone());
        self.catching_up.insert(sub.id, sub);
        Ok(SubscribeInfo {
            epoch: Arc::from(meta.epoch.as_str()),
            first: meta.first,
            head: meta.head,
            plan,
            history,
        })
    }

    /// Makes `id` live if its replay reached exactly the durable head.
    pub fn go_live(&mut self, id: SubId, next: u64, durable: u64) -> GoLive {
        if next != durable + 1 {
            return GoLive::Behind { head: durable };
        }
        if let Some(sub) = self.catching_up.remove(&id) {
            self.live.push(sub);
        }
        GoLive::Live
    }

    pub fn unsubscribe(&mut self, shared: &TopicShared, id: SubId) {
        self.catching_up.remove(&id);
        self.live.retain(|s| s.id != id);
        shared.subscribers().remove(&id);
    }

    /// Pushes `delivery` to every live subscriber; drops those whose queue refused it
    /// (closed as a slow consumer, or gone: the session ends and its client resumes by
    /// offset).
    pub fn fan_out(&mut self, shared: &TopicShared, delivery: &Arc<Delivery>) {
        let offset = delivery.offset;
        let mut gone = Vec::new();
        self.live.retain(
            |sub| match sub.outbound.push(OutFrame::Message(delivery.clone())) {
                Ok(()) => {
                    sub.cursor.store(offset, Ordering::Release);
                    true
                }
                Err(_) => {
                    gone.push(sub.id);
                    false
                }
            },
        );
        if !gone.is_empty() {
            let mut subs = shared.subscribers();
            for id in gone {
                subs.remove(&id);
            }
        }
    }

    /// Whether anyone takes live deliveries.
    pub fn has_live(&self) -> bool {
        !self.live.is_empty()
    }

    pub fn len(&self) -> usize {
        self.live.len() + self.catching_up.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everyone (they are told to resubscribe through `TopicShared`).
    pub fn clear(&mut self) {
        self.live.clear();
        self.catching_up.clear();
    }
}
