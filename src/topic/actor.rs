//! The topic actor on the topic's owner, the leader of its shard: the single writer of one
//! topic. It waits until this node's copy of the shard is current (every entry committed
//! before its leadership applied), then assigns offsets and writes through the shard's
//! replicated log ([`super::writer`]), and only once an entry is committed on a majority
//! of the shard's voters and applied here does it acknowledge the publishers and push the
//! messages to live subscribers and, once per node, to the nodes that follow the topic (so
//! no subscriber ever sees an offset that a failover could take back).

use super::audience::Audience;
use super::history::History;
use super::writer::{TopicWriter, WriteError};
use super::{now_ms, GoLive, PublishAck, PublishReply, TopicInfo, TopicMsg, TopicShared};
use crate::cluster::client::Cluster;
use crate::cluster::wire::{Cast, WireEnvelope};
use crate::config::ConsumersConfig;
use crate::consumer::group::Group;
use crate::delivery::envelope::{render, Delivery, Envelope};
use crate::protocol::publish_id::unscoped;
use crate::protocol::TopicName;
use crate::replication::{Op, Replication};
use crate::storage::blocking::off_worker;
use crate::storage::{RetentionPolicy, StoredMessage, TopicLog, TopicMeta};
use crate::topic::error::TopicError;
use crate::topic::service::Topics;
use crate::topic::supervisor::SupervisorMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What every topic actor of a node shares.
#[derive(Clone)]
pub struct TopicContext {
    /// How long an unused topic actor stays in memory.
    pub idle: Duration,
    /// This node's copy of every shard it holds (written only through `replication`).
    pub log: Arc<dyn TopicLog>,
    /// The shards' Raft groups: who leads, and the way to write.
    pub replication: Replication,
    pub retention: RetentionPolicy,
    pub consumers: ConsumersConfig,
    /// Where dead letters are published (set once the node's `Topics` exists).
    pub topics: Arc<OnceLock<Topics>>,
    /// Membership, placement and the other nodes.
    pub cluster: Cluster,
}

pub(crate) struct TopicActor;

pub struct TopicArgs {
    pub topic: TopicName,
    pub ctx: TopicContext,
    pub shared: Arc<TopicShared>,
}

/// A publish waiting for the next [`TopicMsg::Commit`].
struct Staged {
    data: bytes::Bytes,
    id: Option<String>,
    reply: PublishReply,
}

struct Pending {
    offset: u64,
    id: String,
    duplicate: bool,
    reply: PublishReply,
}

pub struct TopicState {
    pub(super) topic: TopicName,
    pub(super) ctx: TopicContext,
    pub(super) shared: Arc<TopicShared>,
    pub(super) epoch: Arc<str>,
    /// Persisted in the log (something was published).
    pub(super) exists: bool,
    pub(super) first: u64,
    /// Last offset assigned.
    pub(super) head: u64,
    /// Last offset known durable; nothing above it is delivered or acknowledged.
    pub(super) durable: u64,
    pub(super) last_time_ms: u64,
    /// Appended, not yet durable.
    pub(super) unflushed: VecDeque<(StoredMessage, Instant)>,
    pending: VecDeque<Pending>,
    /// Publishes received since the last commit.
    staged: Vec<Staged>,
    pub(super) audience: Audience,
    /// Consumers by name (see `consumers.rs`).
    pub(super) groups: HashMap<String, Group>,
    /// Last message other than a tick: an unused topic retires after `ctx.idle`.
    pub(super) last_used: Instant,
    /// Dead letters (already in their group's outbox) to start publishing once the
    /// message in hand is handled.
    /// Dead letters to publish: consumer, letter, the epoch of its offset.
    pub(super) dead_queue: Vec<(String, crate::consumer::window::DeadLetter, Arc<str>)>,
    /// Replies (to acks and settings changes) to send once the persisted consumer state is
    /// durable.
    pub(super) durable_replies: Vec<DurableReply>,
    /// Ticks consumer deadlines while any consumer exists.
    pub(super) consumer_timer: Option<tokio::task::JoinHandle<()>>,
    /// Nodes that follow this topic: each gets every durable message once.
    followers: HashSet<String>,
    /// This topic's shard, and the way to write to it.
    shard: u32,
    pub(super) writer: TopicWriter,
    /// Publish ids submitted and not yet committed (the log's index has the rest).
    inflight_ids: HashMap<String, u64>,
    /// The shard's replica and Raft term when this actor became owner: another means
    /// leadership went away and came back (or the copy was replaced), and what this actor
    /// knows may be stale.
    term: (u64, u64),
    /// This node did not lead the shard when the actor started: it serves nothing and is
    /// being retired.
    failed: bool,
}

const RETENTION_TICK: Duration = Duration::from_secs(5);

/// How long a new owner waits for its shard: an election in progress ends well within it.
const LEAD_PATIENCE: Duration = Duration::from_secs(3);

/// A reply sent once consumer state is committed.
pub(super) type DurableReply = super::writer::Committed;

impl Actor for TopicActor {
    type Msg = TopicMsg;
    type State = TopicState;
    type Arguments = TopicArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TopicMsg>,
        args: TopicArgs,
    ) -> Result<TopicState, ActorProcessingErr> {
        let expiry = Duration::from_secs(args.ctx.consumers.idle_expiry_secs);
        let tick = RETENTION_TICK
            .min(args.ctx.idle / 2)
            .min(expiry / 4)
            .max(Duration::from_millis(100));
        myself.send_interval(tick, || TopicMsg::Tick);
        let shard = args.ctx.replication.shard_of(args.topic.as_str());
        let writer = TopicWriter::spawn(args.ctx.replication.clone(), shard);
        Ok(TopicState {
            topic: args.topic,
            ctx: args.ctx,
            shared: args.shared,
            epoch: Arc::from(""),
            exists: false,
            first: 1,
            head: 0,
            durable: 0,
            last_time_ms: 0,
            unflushed: VecDeque::new(),
            pending: VecDeque::new(),
            staged: Vec::new(),
            audience: Audience::default(),
            groups: HashMap::new(),
            last_used: Instant::now(),
            dead_queue: Vec::new(),
            durable_replies: Vec::new(),
            consumer_timer: None,
            followers: HashSet::new(),
            shard,
            writer,
            inflight_ids: HashMap::new(),
            term: (0, 0),
            failed: true,
        })
    }

    /// Waits until this node leads the topic's shard with a current copy (messages queue
    /// meanwhile), then loads the topic: its meta, and its consumers (deleting those that
    /// expired while the topic was not loaded).
    async fn post_start(
        &self,
        myself: ActorRef<TopicMsg>,
        state: &mut TopicState,
    ) -> Result<(), ActorProcessingErr> {
        let ready = state
            .ctx
            .replication
            .lead_ready(state.shard, LEAD_PATIENCE)
            .await;
        if let Err(e) = ready {
            tracing::info!(topic = %state.topic, shard = state.shard, error = %e, "not leading the topic's shard");
            state.retire_now(&myself);
            return Ok(());
        }
        state.term = state.ctx.replication.term(state.shard);
        let topic = state.topic.clone();
        let (meta, groups) = off_worker(&state.ctx.log, move |log| {
            let meta = log.meta(topic.as_str())?;
            Ok((meta, super::consumers::load(log, &topic)?))
        })
        .await?;
        let exists = meta.is_some();
        let meta = meta.unwrap_or_else(|| TopicMeta {
            epoch: crate::protocol::resume::new_epoch(),
            first: 1,
            head: 0,
        });
        tracing::debug!(topic = %state.topic, epoch = %meta.epoch, head = meta.head, "topic owned here");
        state.shared.head.send_replace(meta.head);
        state.groups = groups;
        state.epoch = Arc::from(meta.epoch.as_str());
        state.exists = exists;
        state.first = meta.first;
        state.head = meta.head;
        state.durable = meta.head;
        state.failed = false;
        state.expire_idle_groups();
        // Dead letters a previous actor left unpublished (they carry the epoch).
        state.resend_outboxes();
        state.send_dead_letters(&myself)?;
        state.start_consumer_timer(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TopicMsg>,
        state: &mut TopicState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.consumer_timer.take() {
            t.abort();
        }
        // Whoever subscribed after the topic decided to retire resumes on its successor.
        tell_resubscribe(&state.topic, &state.shared);
        state.tell_followers_gone();
        if state.failed {
            return Ok(());
        }
        // Unpublished dead letters are kept in their groups' outboxes, persisted here too,
        // and waited for: the writer proposes nothing once the actor is gone.
        if state.groups.values().any(|g| g.dirty) {
            state.persist_consumers();
            let (tx, rx) = tokio::sync::oneshot::channel();
            state.writer.after_commit(Box::new(move |r| {
                let _ = tx.send(r);
            }));
            if let Ok(Ok(Err(e))) = tokio::time::timeout(LEAD_PATIENCE, rx).await {
                tracing::info!(topic = %state.topic, error = %e, "consumer state not saved at stop");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TopicMsg>,
        msg: TopicMsg,
        state: &mut TopicState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(
            msg,
            TopicMsg::Tick | TopicMsg::ConsumerTick | TopicMsg::Retained
        ) {
            state.last_used = Instant::now();
        }
        if state.failed {
            refuse(msg);
            return Ok(());
        }
        match msg {
            TopicMsg::Publish { data, id, reply } => {
                state.staged.push(Staged { data, id, reply });
                if state.staged.len() == 1 {
                    myself.cast(TopicMsg::Commit)?;
                }
            }
            TopicMsg::Commit => state.commit(&myself)?,
            TopicMsg::Subscribe {
                sub,
                position,
                reply,
            } => {
                let (meta, history) = (state.meta(), History::Local(state.ctx.log.clone()));
                let r = state
                    .audience
                    .subscribe(&state.shared, sub, &position, &meta, history);
                let _ = reply.send(r);
            }
            TopicMsg::GoLive { sub, next, reply } => {
                let _ = reply.send(state.audience.go_live(sub, next, state.durable));
            }
            TopicMsg::Unsubscribe { sub, reply } => {
                state.audience.unsubscribe(&state.shared, sub);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            TopicMsg::Info(reply) => {
                let _ = reply.send(TopicInfo {
                    epoch: state.epoch.clone(),
                    first: state.first,
                    head: state.durable,
                    subscribers: state.audience.len()
                        + state
                            .groups
                            .values()
                            .map(|g| g.members.len())
                            .sum::<usize>(),
                    exists: state.exists,
                    history: History::Local(state.ctx.log.clone()),
                    owner: state.ctx.cluster.me().to_string(),
                });
            }
            TopicMsg::Follow { from, reply } => {
                state.followers.insert(from);
                let _ = reply.send(Ok(super::Followed {
                    epoch: state.epoch.to_string(),
                    first: state.first.min(state.durable + 1),
                    head: state.durable,
                    exists: state.exists,
                }));
            }
            TopicMsg::Unfollow { from } => {
                state.followers.remove(&from);
            }
            TopicMsg::Deliver { .. } | TopicMsg::OwnerGone { .. } => {
                // Meant for a follower that this node no longer has.
            }
            TopicMsg::Durable { upto, result } => match result {
                Ok(()) => state.made_durable(upto)?,
                Err(WriteError::NotLeader) => {
                    // The shard's leader moved: the publishes in flight may still commit
                    // there; their publishers retry (with their ids) at the new owner.
                    state.fail_pending(TopicError::Moving);
                    state.failed = true;
                    state.retire_now(&myself);
                    return Ok(());
                }
                Err(WriteError::Unavailable(e)) => {
                    // No majority answered (a failover or a partition): whether the entry
                    // commits is unknown. Its publishers are told so (they retry with their
                    // ids), and a successor starts from the log once the shard has a leader.
                    tracing::info!(topic = %state.topic, error = %e, "write not committed; retiring");
                    state.fail_pending(TopicError::unavailable(
                        "the topic's replicas did not confirm the write; the outcome is unknown (retry with the same id)",
                    ));
                    state.failed = true;
                    state.retire_now(&myself);
                    return Ok(());
                }
                Err(WriteError::Overtaken) => {
                    // An entry of an earlier leadership committed late and took offsets
                    // this actor gave out: its view of the topic is wrong. Messages whose
                    // offsets were taken were not stored (nor their ids); a successor
                    // starts from the log, and a retry of one that was is a duplicate.
                    tracing::error!(topic = %state.topic, "committed offsets hold other messages; reloading the topic");
                    state.fail_pending(TopicError::unavailable(
                        "the topic's offsets moved under this write; retry with the same id",
                    ));
                    state.failed = true;
                    state.retire_now(&myself);
                    return Ok(());
                }
            },
            TopicMsg::Retained => {
                let meta = state.ctx.log.meta(state.topic.as_str())?;
                if let Some(meta) = meta {
                    state.first = state.first.max(meta.first);
                }
                return Ok(());
            }
            TopicMsg::Tick => {
                state.apply_retention(&myself);
                state.expire_idle_groups();
                state.retire_if_idle(&myself);
                return Ok(());
            }
            other => state.handle_consumer(&myself, other)?,
        }
        state.settle_consumers(&myself)
    }
}

impl TopicState {
    pub(super) fn meta(&self) -> TopicMeta {
        TopicMeta {
            epoch: self.epoch.to_string(),
            first: self.first.min(self.durable + 1),
            head: self.durable,
        }
    }

    /// Writes every staged publish as one batch through the shard's log: a repeated id (in
    /// the dedupe index, in flight, or earlier in the batch) gets its first offset back
    /// instead.
    fn commit(&mut self, myself: &ActorRef<TopicMsg>) -> Result<(), ActorProcessingErr> {
        if self.ctx.replication.term(self.shard) != self.term {
            tracing::info!(topic = %self.topic, "the shard's term changed; retiring");
            self.fail_pending(TopicError::Moving);
            self.failed = true;
            self.retire_now(myself);
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        let now = now_ms().max(self.last_time_ms);
        let log = Arc::clone(&self.ctx.log);
        let topic = self.topic.as_str().to_string();
        let mut batch: Vec<StoredMessage> = Vec::with_capacity(staged.len());
        let mut replies = Vec::with_capacity(staged.len());
        let mut own_ids: Vec<(String, u64)> = Vec::new();
        for Staged { data, id, reply } in staged {
            if let Some(id) = &id {
                let earlier = match self.inflight_ids.get(id) {
                    Some(offset) => Some(*offset),
                    None => log.lookup_id(&topic, id, now)?,
                };
                if let Some(offset) = earlier {
                    self.duplicate(offset, unscoped(id).to_string(), reply);
                    continue;
                }
            }
            let offset = self.head + 1 + batch.len() as u64;
            let id = match id {
                // The index is keyed by the scoped id; the message keeps the publisher's.
                Some(key) => {
                    self.inflight_ids.insert(key.clone(), offset);
                    let id = unscoped(&key).to_string();
                    own_ids.push((key, offset));
                    id
                }
                None => uuid::Uuid::now_v7().to_string(),
            };
            replies.push(reply);
            batch.push(StoredMessage {
                offset,
                id,
                time_ms: now,
                data,
            });
        }
        let Some(upto) = batch.last().map(|m| m.offset) else {
            return Ok(());
        };
        let mut ops = Vec::with_capacity(3);
        if !self.exists {
            ops.push(Op::Create {
                topic: topic.clone(),
                epoch: self.epoch.to_string(),
            });
            self.exists = true;
        }
        ops.push(Op::Append {
            topic: topic.clone(),
            msgs: batch.clone(),
        });
        // Only a publisher's own id can come back; generated ones need no index entry.
        if !own_ids.is_empty() {
            ops.push(Op::RememberIds {
                topic,
                ids: own_ids,
                time_ms: now,
            });
        }
        self.head = upto;
        self.last_time_ms = now;
        let received = Instant::now();
        metrics::counter!("starling_messages_published_total").increment(batch.len() as u64);
        for (msg, reply) in batch.into_iter().zip(replies) {
            self.pending.push_back(Pending {
                offset: msg.offset,
                id: msg.id.clone(),
                duplicate: false,
                reply,
            });
            self.unflushed.push_back((msg, received));
        }
        let me = myself.clone();
        self.writer.submit(
            ops,
            Box::new(move |result| {
                let _ = me.cast(TopicMsg::Durable { upto, result });
            }),
        );
        Ok(())
    }

    /// Answers every publish not yet acknowledged with `error`.
    fn fail_pending(&mut self, error: TopicError) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(error.clone()));
        }
        self.unflushed.clear();
        // Staged publishes were never proposed: they may go to the next owner.
        for s in self.staged.drain(..) {
            let _ = s.reply.send(Err(TopicError::Moving));
        }
    }

    /// Answers a repeated publish id with the offset it first got, once that is durable.
    fn duplicate(&mut self, offset: u64, id: String, reply: PublishReply) {
        let p = Pending {
            offset,
            id,
            duplicate: true,
            reply,
        };
        if offset <= self.durable {
            self.complete(p);
        } else {
            self.pending.push_back(p);
        }
    }

    fn complete(&self, p: Pending) {
        let _ = p.reply.send(Ok(PublishAck {
            offset: p.offset,
            epoch: self.epoch.clone(),
            id: p.id,
            duplicate: p.duplicate,
        }));
    }

    fn made_durable(&mut self, upto: u64) -> Result<(), ActorProcessingErr> {
        if upto <= self.durable {
            return Ok(());
        }
        self.durable = upto;
        self.inflight_ids.retain(|_, offset| *offset > upto);
        let mut remote = Vec::new();
        while self
            .unflushed
            .front()
            .is_some_and(|(m, _)| m.offset <= upto)
        {
            let Some((msg, received)) = self.unflushed.pop_front() else {
                break;
            };
            // Rendered once, for this node's live subscribers and every follower node; not
            // at all when nobody is listening (consumers render their own, with `attempt`).
            let (local, followed) = (self.audience.has_live(), !self.followers.is_empty());
            if !local && !followed {
                continue;
            }
            let envelope = Envelope {
                offset: msg.offset,
                time_ms: msg.time_ms,
                bytes: render(&self.topic, &self.epoch, &msg, None).into(),
            };
            if followed {
                remote.push(WireEnvelope {
                    offset: envelope.offset,
                    time_ms: envelope.time_ms,
                    envelope: envelope.bytes.to_vec(),
                });
            }
            if local {
                let delivery = Delivery::from_envelope(&self.topic, &self.epoch, envelope);
                self.audience
                    .fan_out(&self.shared, &Arc::new(delivery.live(received)));
            }
        }
        self.send_to_followers(remote);
        self.pump_consumers()?;
        while self.pending.front().is_some_and(|p| p.offset <= upto) {
            if let Some(p) = self.pending.pop_front() {
                self.complete(p);
            }
        }
        self.shared.head.send_replace(upto);
        Ok(())
    }

    /// Casts newly durable messages to every follower node, encoded once.
    fn send_to_followers(&mut self, messages: Vec<WireEnvelope>) {
        if messages.is_empty() {
            return;
        }
        let count = messages.len() as u64;
        let cast = Cast::Deliver {
            topic: self.topic.as_str().to_string(),
            epoch: self.epoch.to_string(),
            first: self.first,
            messages,
        };
        let Some(bytes) = Cluster::encode_cast(&cast) else {
            return;
        };
        let cluster = &self.ctx.cluster;
        self.followers.retain(|node| {
            let sent = cluster.cast(node, bytes.clone());
            if sent {
                metrics::counter!("starling_cluster_messages_sent_total").increment(count);
            }
            if !sent {
                tracing::info!(node, "follower node unreachable; dropped");
            }
            sent
        });
    }

    fn tell_followers_gone(&mut self) {
        let cast = Cast::OwnerGone {
            topic: self.topic.as_str().to_string(),
            epoch: self.epoch.to_string(),
        };
        if let Some(bytes) = Cluster::encode_cast(&cast) {
            for node in self.followers.drain() {
                self.ctx.cluster.cast(&node, bytes.clone());
            }
        }
    }

    /// Asks the supervisor to stop this actor at once (it does not lead the shard, or a
    /// write of it was not committed).
    fn retire_now(&self, myself: &ActorRef<TopicMsg>) {
        if let Some(sup) = myself.try_get_supervisor() {
            let sup: ActorRef<SupervisorMsg> = sup.into();
            let _ = sup.cast(SupervisorMsg::Retire(self.topic.clone(), myself.get_id()));
        }
    }

    /// Asks the supervisor to retire this actor once nobody has used it for `ctx.idle`:
    /// no subscription, no consumer holding or owing anything, no publish in flight, no
    /// long poll waiting. The supervisor stops it; the next use starts a fresh one.
    fn retire_if_idle(&self, myself: &ActorRef<TopicMsg>) {
        let unused = self.followers.is_empty()
            && self.audience.is_empty()
            && self.pending.is_empty()
            && self.unflushed.is_empty()
            && self.shared.head.receiver_count() == 0
            && self
                .groups
                .values()
                .all(|g| g.members.is_empty() && g.window.pending() == 0 && g.outbox.is_empty())
            && self.last_used.elapsed() >= self.ctx.idle;
        if unused {
            self.retire_now(myself);
        }
    }

    /// Proposes retention at the leader's time when there is something to trim (more
    /// messages than the limit, or the oldest one too old); every replica trims the same.
    fn apply_retention(&mut self, myself: &ActorRef<TopicMsg>) {
        if !self.exists || self.durable < self.first {
            return;
        }
        let policy = self.ctx.retention;
        let now = now_ms();
        let over_count = self.durable + 1 - self.first > policy.max_messages;
        let oldest = match self
            .ctx
            .log
            .read(self.topic.as_str(), self.first, self.first, 1, 1)
        {
            Ok(m) => m.first().map(|m| m.time_ms),
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "reading the oldest message failed");
                None
            }
        };
        let too_old = oldest.is_some_and(|t| now.saturating_sub(t) > policy.max_age_ms);
        if !over_count && !too_old {
            return;
        }
        let op = Op::Retention {
            topic: self.topic.as_str().to_string(),
            max_messages: policy.max_messages,
            max_age_ms: policy.max_age_ms,
            now_ms: now,
        };
        let me = myself.clone();
        self.writer.submit(
            vec![op],
            Box::new(move |result| {
                if result.is_ok() {
                    let _ = me.cast(TopicMsg::Retained);
                }
            }),
        );
    }
}

/// Answers a message with "moving" (or nothing, for those without a reply): the actor that
/// got it does not serve the topic.
pub fn refuse(msg: TopicMsg) {
    match msg {
        TopicMsg::Publish { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::Subscribe { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::ConsumerJoin { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::ConsumerAck {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::ConsumerLease { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::ConsumerConfigure { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::Follow { reply, .. } => {
            let _ = reply.send(Err(TopicError::Moving));
        }
        TopicMsg::GoLive { reply, .. } => {
            let _ = reply.send(GoLive::Behind { head: 0 });
        }
        TopicMsg::Unsubscribe {
            reply: Some(reply), ..
        }
        | TopicMsg::ConsumerLeave {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(());
        }
        _ => {}
    }
}

/// Tells every session subscribed to a topic whose actor died to resubscribe.
pub fn tell_resubscribe(topic: &TopicName, shared: &TopicShared) {
    let subs: Vec<_> = shared.subscribers().drain().collect();
    for (sub, session) in subs {
        session.resubscribe(topic, sub);
    }
}
