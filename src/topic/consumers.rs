//! The consumer side of a topic actor: consumer groups live with the topic (so ownership
//! of a topic covers its consumers), are pumped whenever something changes, and are
//! persisted after every change. An ack or settings change with a reply is answered once
//! it is durable. A group's settings are fixed when it is created and change only by an
//! explicit `ConsumerConfigure`; a topic holds at most `max_groups_per_topic` groups, and a
//! group idle for `idle_expiry_secs` is deleted.

use super::actor::TopicState;
use super::writer::WriteError;
use super::TopicMsg;
use crate::consumer::group::{Group, Member, TopicView};
use crate::consumer::stored::StoredConsumer;
use crate::consumer::window::{Acked, Holder, Window};
use crate::consumer::Joined;
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::{OutFrame, Subscribed};
use crate::delivery::SubId;
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::consumer::{AckReport, AckRequest, ConsumerInfo};
use crate::protocol::resume::ResumePlan;
use crate::protocol::ApiError;
use crate::protocol::{ErrorCode, TopicName};
use crate::replication::Op;
use crate::storage::{StorageError, TopicLog};
use crate::topic::error::TopicError;
use crate::topic::now_ms;
use ractor::{ActorProcessingErr, ActorRef};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

/// How often consumer deadlines are checked while a topic has consumers.
const CONSUMER_TICK: Duration = Duration::from_millis(100);

/// Loads the persisted consumers of a topic.
pub(super) fn load(
    log: &dyn TopicLog,
    topic: &TopicName,
) -> Result<HashMap<String, Group>, StorageError> {
    let (mut groups, now) = (HashMap::new(), now_ms());
    for (name, bytes) in log.consumers(topic.as_str())? {
        let stored = StoredConsumer::decode(&bytes, now).map_err(|e| StorageError::Corrupt {
            what: "consumer",
            detail: e.to_string(),
        })?;
        groups.insert(name, Group::restore(&stored));
    }
    Ok(groups)
}

fn no_consumer(name: &str) -> TopicError {
    TopicError::Rejected(ApiError::new(
        ErrorCode::NotFound,
        format!("consumer {name} does not exist"),
    ))
}

/// The route that changes a group's settings, for error messages.
fn settings_route(topic: &TopicName, name: &str) -> String {
    format!("/v1/topics/{topic}/consumers/{name}")
}

impl TopicState {
    pub(super) fn start_consumer_timer(&mut self, myself: &ActorRef<TopicMsg>) {
        if self.consumer_timer.is_none() && !self.groups.is_empty() {
            self.consumer_timer =
                Some(myself.send_interval(CONSUMER_TICK, || TopicMsg::ConsumerTick));
        }
    }

    pub(super) fn handle_consumer(
        &mut self,
        myself: &ActorRef<TopicMsg>,
        msg: TopicMsg,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TopicMsg::ConsumerJoin {
                name,
                member,
                options,
                after,
                announce,
                req,
                reply,
            } => {
                let outbound = member.outbound.clone();
                let r = self.join(name.clone(), member, &options, after);
                if let (true, Ok(j)) = (announce, &r) {
                    let frame = Subscribed {
                        topic: self.topic.clone(),
                        req,
                        epoch: j.epoch.clone(),
                        first: j.first,
                        head: j.head,
                        plan: ResumePlan {
                            start: j.ack_floor + 1,
                            reset: None,
                        },
                        consumer: Some(name),
                    };
                    let _ = outbound.push(OutFrame::Subscribed(Box::new(frame)));
                }
                self.start_consumer_timer(myself);
                let _ = reply.send(r);
            }
            TopicMsg::ConsumerLeave {
                name,
                member,
                reply,
            } => {
                self.leave(&name, member);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            TopicMsg::ConsumerAck { name, ack, reply } => {
                let r = self.ack(&name, &ack);
                self.pump_consumers()?;
                if let Some(reply) = reply {
                    self.reply_when_durable(reply, r);
                }
                return Ok(());
            }
            TopicMsg::ConsumerConfigure {
                name,
                options,
                reply,
            } => {
                let r = self.configure(&name, &options);
                self.pump_consumers()?;
                self.reply_when_durable(reply, r);
                return Ok(());
            }
            TopicMsg::ConsumerLease {
                name,
                options,
                after,
                limit,
                reply,
            } => {
                let r = self.lease(name, &options, after, limit);
                self.start_consumer_timer(myself);
                let _ = reply.send(r);
            }
            TopicMsg::ConsumerInfo { name, reply } => {
                let _ = reply.send(self.groups.get(&name).map(info));
                return Ok(());
            }
            TopicMsg::ConsumerTick => {}
            TopicMsg::DeadLettered {
                consumer,
                offset,
                epoch,
            } => self.dead_lettered(&consumer, offset, &epoch),
            _ => return Ok(()),
        }
        self.pump_consumers()
    }

    /// Sends `reply` once the consumer state this message changed is durable (by
    /// `settle_consumers`), or at once if the request failed.
    fn reply_when_durable<T: Send + Sync + 'static>(
        &mut self,
        reply: ractor::RpcReplyPort<Result<T, TopicError>>,
        r: Result<T, TopicError>,
    ) {
        match r {
            Ok(v) => self.durable_replies.push(Box::new(move |f| {
                let _ = reply.send(f.map(|_| v).map_err(|e| match e {
                    WriteError::NotLeader => TopicError::Moving,
                    WriteError::Unavailable(_) | WriteError::Overtaken => TopicError::unavailable(
                        "the consumer's new position is not committed; the outcome is unknown",
                    ),
                }));
            })),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// The group `name`, and the most the caller may hold in flight if it named less than
    /// the group's. A new group is created after `after` (or at the head) with the settings
    /// named and the configured defaults for the rest, unless the topic already has
    /// `max_groups_per_topic`. An existing group keeps its settings: naming other ones is
    /// refused (see [`ConsumerOptions::check_join`]).
    fn group(
        &mut self,
        name: String,
        options: &ConsumerOptions,
        after: Option<u64>,
    ) -> Result<(&mut Group, Option<usize>), TopicError> {
        let durable = self.durable;
        let first = self.meta().first;
        let limits = &self.ctx.consumers;
        let count = self.groups.len();
        match self.groups.entry(name) {
            Entry::Occupied(e) => {
                let route = settings_route(&self.topic, e.key());
                let cap = options.check_join(&e.get().cfg, &route)?;
                Ok((e.into_mut(), cap))
            }
            Entry::Vacant(e) => {
                if count >= limits.max_groups_per_topic {
                    return Err(TopicError::bad_request(format!(
                        "topic {} already has {count} consumer groups, the most \
                         [consumers] max_groups_per_topic allows: join an existing group, \
                         or wait until an idle one expires",
                        self.topic
                    )));
                }
                let cfg = options.resolve(limits)?;
                let start = after
                    .unwrap_or(durable)
                    .min(durable)
                    .max(first.saturating_sub(1));
                let group = Group::new(Window::starting_after(start), cfg, now_ms());
                Ok((e.insert(group), options.max_inflight))
            }
        }
    }

    fn join(
        &mut self,
        name: String,
        member: super::Subscriber,
        options: &ConsumerOptions,
        after: Option<u64>,
    ) -> Result<Joined, TopicError> {
        let epoch = self.epoch.clone();
        let (first, head) = (self.meta().first, self.durable);
        let shared = self.shared.clone();
        let (group, cap) = self.group(name, options, after)?;
        shared
            .subscribers()
            .insert(member.id, member.session.clone());
        group.members.push(Member {
            id: member.id,
            outbound: member.outbound,
            max_inflight: cap,
        });
        group.touch(now_ms());
        Ok(Joined {
            epoch,
            ack_floor: group.window.floor(),
            first,
            head,
        })
    }

    fn leave(&mut self, name: &str, member: SubId) {
        self.shared.subscribers().remove(&member);
        if let Some(g) = self.groups.get_mut(name) {
            let dead = g.leave(member, now_ms());
            self.dead_letters(name, dead);
        }
    }

    fn ack(&mut self, name: &str, ack: &AckRequest) -> Result<AckReport, TopicError> {
        let now = now_ms();
        let g = self.groups.get_mut(name).ok_or_else(|| no_consumer(name))?;
        let bad = |e: crate::consumer::window::AckError| TopicError::bad_request(e.to_string());
        let mut report = AckReport::default();
        let mut dead = Vec::new();
        match ack {
            AckRequest::Offsets(offsets) => {
                // All or nothing: refuse the request if any offset was never delivered.
                if let Some(o) = offsets.iter().find(|o| **o >= g.window.next()) {
                    return Err(bad(crate::consumer::window::AckError::NotDelivered(*o)));
                }
                for o in offsets {
                    match g.window.ack(*o).map_err(bad)? {
                        Acked::Done => report.done += 1,
                        Acked::Already => report.already += 1,
                    }
                }
            }
            AckRequest::Upto(n) => report.done = g.window.ack_upto(*n).map_err(bad)?,
            AckRequest::Nack { offsets, delay_ms } => {
                let mut offsets = offsets.clone();
                offsets.sort_unstable();
                offsets.dedup();
                let max_delay = self.ctx.consumers.max_ack_wait_ms;
                if *delay_ms > max_delay {
                    return Err(TopicError::bad_request(format!(
                        "`delay_ms` must be at most {max_delay}"
                    )));
                }
                if let Some(o) = offsets.iter().find(|o| g.window.holder(**o).is_none()) {
                    return Err(bad(crate::consumer::window::AckError::NotInFlight(*o)));
                }
                for o in &offsets {
                    dead.extend(g.window.nack(&g.cfg, *o, *delay_ms, now).map_err(bad)?);
                    report.done += 1;
                }
            }
        }
        g.touch(now);
        self.dead_letters(name, dead);
        Ok(report)
    }

    /// Changes the settings of an existing group (the ones named; checked against the
    /// bounds). Messages in flight keep the deadline they were delivered with.
    fn configure(
        &mut self,
        name: &str,
        options: &ConsumerOptions,
    ) -> Result<ConsumerInfo, TopicError> {
        let g = self.groups.get_mut(name).ok_or_else(|| no_consumer(name))?;
        g.cfg = options.apply(&g.cfg, &self.ctx.consumers)?;
        g.touch(now_ms());
        tracing::info!(topic = %self.topic, consumer = name, settings = ?g.cfg, "consumer settings changed");
        Ok(info(g))
    }

    /// Deletes, from memory and storage, every group idle for `idle_expiry_secs` (see
    /// [`Group::expired`]). Runs when the topic is loaded and on every retention tick.
    ///
    /// A group with a connected member is active even when nobody acks: its stored
    /// activity time is refreshed every eighth of the idle period (ticks come every quarter),
    /// so that after a crash or a restart of the topic, before the members join again, it
    /// is not taken for idle.
    pub(super) fn expire_idle_groups(&mut self) {
        let idle_ms = self.ctx.consumers.idle_expiry_secs.saturating_mul(1000);
        let now = now_ms();
        let mut refreshed = false;
        for g in self.groups.values_mut() {
            if !g.members.is_empty() && g.idle_for(now) >= idle_ms / 8 {
                g.touch(now);
                refreshed = true;
            }
        }
        if refreshed {
            // Committed with the next entry; nothing waits for it.
            self.persist_consumers();
        }
        let expired: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.expired(now, idle_ms))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            let op = Op::DeleteConsumer {
                topic: self.topic.as_str().to_string(),
                name: name.clone(),
            };
            self.writer.submit(vec![op], Box::new(|_| {}));
            self.groups.remove(&name);
            tracing::info!(topic = %self.topic, consumer = name, "idle consumer group expired");
        }
        if self.groups.is_empty() {
            if let Some(t) = self.consumer_timer.take() {
                t.abort();
            }
        }
    }

    fn lease(
        &mut self,
        name: String,
        options: &ConsumerOptions,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, TopicError> {
        let now = now_ms();
        let (topic, epoch, durable) = (self.topic.clone(), self.epoch.clone(), self.durable);
        let log = self.ctx.log.clone();
        let dlq_name = name.clone();
        let (g, cap) = self.group(name, options, after)?;
        let room = g.room(Holder::Lease, cap).min(limit);
        let taken = g.window.take(&g.cfg, Holder::Lease, now, durable, room);
        g.touch(now);
        let mut out = Vec::with_capacity(taken.deliveries.len());
        for d in &taken.deliveries {
            let msg = log
                .read(topic.as_str(), d.offset, d.offset, 1, usize::MAX)
                .map_err(|e| {
                    tracing::error!(topic = %topic, error = %e, "lease read failed");
                    TopicError::Internal
                })?;
            match msg.into_iter().next() {
                Some(m) => out.push(Delivery::new(&topic, &epoch, &m, Some(d.attempt))),
                None => {
                    let _ = g.window.ack(d.offset);
                }
            }
        }
        self.dead_letters(&dlq_name, taken.dead);
        Ok(out)
    }

    /// Hands out what may go to every consumer, publishes dead letters, persists changes.
    pub(super) fn pump_consumers(&mut self) -> Result<(), ActorProcessingErr> {
        if self.groups.is_empty() {
            return Ok(());
        }
        let view = TopicView {
            topic: &self.topic,
            epoch: &self.epoch,
            log: &*self.ctx.log,
            head: self.durable,
            first: self.first.min(self.durable + 1),
            now_ms: now_ms(),
        };
        let mut dead = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            let d = g.pump(&view)?;
            dead.extend(d.into_iter().map(|d| (name.clone(), d)));
        }
        for (name, d) in dead {
            self.dead_letters(&name, vec![d]);
        }
        Ok(())
    }

    /// Ends the handling of every message: starts publishing the new dead letters (see
    /// `dead_letters.rs`), persists the consumers, then answers acks once that is durable.
    pub(super) fn settle_consumers(
        &mut self,
        myself: &ActorRef<TopicMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.groups.is_empty() {
            return Ok(());
        }
        self.send_dead_letters(myself)?;
        self.persist_consumers();
        for done in self.durable_replies.drain(..) {
            self.writer.after_commit(done);
        }
        Ok(())
    }

    /// Writes every changed group through the shard's log (committed with the next entry).
    pub(super) fn persist_consumers(&mut self) {
        let mut ops = Vec::new();
        for (name, g) in self.groups.iter_mut().filter(|(_, g)| g.dirty) {
            match g.stored().encode() {
                Ok(state) => ops.push(Op::SaveConsumer {
                    topic: self.topic.as_str().to_string(),
                    name: name.clone(),
                    state,
                }),
                Err(e) => {
                    tracing::error!(topic = %self.topic, consumer = %name, error = %e, "cannot encode a consumer's state");
                }
            }
            g.dirty = false;
        }
        if !ops.is_empty() {
            self.writer.submit(ops, Box::new(|_| {}));
        }
    }
}

fn info(g: &Group) -> ConsumerInfo {
    let s = g.window.stats();
    ConsumerInfo {
        ack_floor: g.window.floor(),
        next: g.window.next(),
        pending: g.window.pending(),
        in_flight: g.window.in_flight(),
        redelivered: s.redelivered,
        dead_lettered: s.dead_lettered,
        trimmed: s.trimmed,
        members: g.members.len(),
        ack_wait_ms: g.cfg.ack_wait_ms,
        max_deliver: g.cfg.max_deliver,
        max_inflight: g.cfg.max_inflight,
        backoff_ms: g.cfg.backoff_ms.clone(),
    }
}
