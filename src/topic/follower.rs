//! The follower actor: a topic's local presence on a node that does not own it. It follows
//! the owner (which then casts every durable message to this node once), fans the messages
//! out to this node's subscribers, and serves subscribe/go-live exactly like the owner, with
//! history read from the owner. Anything it cannot vouch for — a gap in what the owner sent,
//! a new epoch, the owner leaving — ends it: its subscribers resume from their cursors on
//! a fresh actor, which follows whoever owns the topic then.

use super::actor::{refuse, tell_resubscribe, TopicContext};
use super::audience::Audience;
use super::history::{unexpected, History};
use super::supervisor::SupervisorMsg;
use super::{GoLive, TopicInfo, TopicMsg, TopicShared};
use crate::cluster::client::Cluster;
use crate::cluster::wire::{Call, Cast, Reply};
use crate::delivery::envelope::{Delivery, Envelope};
use crate::delivery::{SubId, Subscriber};
use crate::protocol::TopicName;
use crate::storage::TopicMeta;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct FollowerActor;

/// How long the owner may stay silent before a follower checks that it missed nothing.
const OWNER_CHECK: Duration = Duration::from_secs(5);

pub struct FollowerArgs {
    pub topic: TopicName,
    pub owner: String,
    pub ctx: TopicContext,
    pub shared: Arc<TopicShared>,
}

pub struct FollowerState {
    topic: TopicName,
    owner: String,
    ctx: TopicContext,
    shared: Arc<TopicShared>,
    epoch: Arc<str>,
    exists: bool,
    first: u64,
    /// Last offset the owner sent (durable there).
    durable: u64,
    audience: Audience,
    last_used: Instant,
    /// The owner was told; it casts every durable message here.
    following: bool,
    /// Asked to be retired: serves nothing more.
    retiring: bool,
    /// When the owner last sent something (or was last checked).
    last_heard: Instant,
    /// Consumer members connected here, by subscription: their consumer name and queue.
    members: HashMap<SubId, (String, Subscriber)>,
}

#[path = "follower_consumers.rs"]
mod consumers;

impl Actor for FollowerActor {
    type Msg = TopicMsg;
    type State = FollowerState;
    type Arguments = FollowerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TopicMsg>,
        args: FollowerArgs,
    ) -> Result<FollowerState, ActorProcessingErr> {
        let tick = Duration::from_secs(5)
            .min(args.ctx.idle / 2)
            .max(Duration::from_millis(100));
        myself.send_interval(tick, || TopicMsg::Tick);
        Ok(FollowerState {
            topic: args.topic,
            owner: args.owner,
            ctx: args.ctx,
            shared: args.shared,
            epoch: Arc::from(""),
            exists: false,
            first: 1,
            durable: 0,
            audience: Audience::default(),
            last_used: Instant::now(),
            following: false,
            retiring: false,
            last_heard: Instant::now(),
            members: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<TopicMsg>,
        state: &mut FollowerState,
    ) -> Result<(), ActorProcessingErr> {
        let call = Call::Follow {
            topic: state.topic.as_str().to_string(),
            from: state.ctx.cluster.me().to_string(),
        };
        match state.ctx.cluster.call(&state.owner, &call).await {
            Ok(Reply::Followed(meta)) => {
                state.epoch = Arc::from(meta.epoch.as_str());
                state.exists = meta.exists;
                state.first = meta.first;
                state.durable = meta.head;
                state.following = true;
                state.shared.head.send_replace(meta.head);
                tracing::debug!(topic = %state.topic, owner = state.owner, epoch = meta.epoch, head = meta.head, "following");
            }
            other => {
                let detail = match other {
                    Ok(reply) => unexpected(&state.owner, reply).to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(topic = %state.topic, owner = state.owner, detail, "cannot follow the owner yet");
                state.retire(&myself);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TopicMsg>,
        state: &mut FollowerState,
    ) -> Result<(), ActorProcessingErr> {
        // The owner releases this node's consumer members at once; their sessions (still
        // in `shared`) rejoin through the actor that follows.
        for (id, (name, _)) in &state.members {
            state.tell_owner_left(name, *id);
        }
        if state.following {
            let cast = Cast::Unfollow {
                topic: state.topic.as_str().to_string(),
                from: state.ctx.cluster.me().to_string(),
            };
            if let Some(bytes) = Cluster::encode_cast(&cast) {
                state.ctx.cluster.cast(&state.owner, bytes);
            }
        }
        tell_resubscribe(&state.topic, &state.shared);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TopicMsg>,
        msg: TopicMsg,
        state: &mut FollowerState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, TopicMsg::Tick | TopicMsg::Deliver { .. }) {
            state.last_used = Instant::now();
        }
        if state.retiring {
            // Whoever asks now is told to try again, and gets a fresh actor.
            state.refuse(msg);
            return Ok(());
        }
        match msg {
            TopicMsg::Deliver {
                epoch,
                first,
                messages,
            } => state.deliver(&myself, &epoch, first, messages),
            TopicMsg::OwnerGone { epoch } => {
                if *epoch == *state.epoch || !state.exists {
                    tracing::debug!(topic = %state.topic, owner = state.owner, "owner gone; following anew");
                    state.retire(&myself);
                }
            }
            TopicMsg::Subscribe {
                sub,
                position,
                reply,
            } => {
                let (meta, history) = (state.meta(), state.history());
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
                let _ = reply.send(state.info());
            }
            TopicMsg::Tick => {
                let unused = state.audience.is_empty()
                    && state.members.is_empty()
                    && state.shared.head.receiver_count() == 0
                    && state.last_used.elapsed() >= state.ctx.idle;
                if unused {
                    state.retire(&myself);
                } else {
                    state.check_owner(&myself);
                }
            }
            other => {
                if let Some(other) = state.handle_consumer(&myself, other) {
                    state.refuse(other);
                }
            }
        }
        Ok(())
    }
}

impl FollowerState {
    fn meta(&self) -> TopicMeta {
        TopicMeta {
            epoch: self.epoch.to_string(),
            first: self.first.min(self.durable + 1),
            head: self.durable,
        }
    }

    fn info(&self) -> TopicInfo {
        TopicInfo {
            epoch: self.epoch.clone(),
            first: self.first.min(self.durable + 1),
            head: self.durable,
            subscribers: self.audience.len(),
            exists: self.exists,
            history: self.history(),
            owner: self.owner.clone(),
        }
    }

    fn history(&self) -> History {
        History::Remote {
            cluster: self.ctx.cluster.clone(),
            owner: self.owner.clone(),
        }
    }

    /// A safety net for casts that never arrived (at most once across nodes): when the
    /// owner has been silent for a while, ask it for its head; if it is ahead of what reached
    /// this node (or in another epoch), start over — the subscribers catch up by replay.
    fn check_owner(&mut self, myself: &ActorRef<TopicMsg>) {
        if self.last_heard.elapsed() < OWNER_CHECK {
            return;
        }
        self.last_heard = Instant::now();
        let (cluster, owner, me) = (self.ctx.cluster.clone(), self.owner.clone(), myself.clone());
        let call = Call::Info {
            topic: self.topic.as_str().to_string(),
        };
        let (epoch, durable) = (self.epoch.to_string(), self.durable);
        tokio::spawn(async move {
            if let Ok(Reply::Info { meta: Some(m), .. }) = cluster.call(&owner, &call).await {
                if m.exists && (m.epoch != epoch || m.head > durable) {
                    let _ = me.cast(TopicMsg::OwnerGone { epoch });
                }
            }
        });
    }

    fn deliver(
        &mut self,
        myself: &ActorRef<TopicMsg>,
        epoch: &str,
        first: u64,
        messages: Vec<Envelope>,
    ) {
        self.last_heard = Instant::now();
        if epoch != &*self.epoch {
            if self.exists || self.durable > 0 {
                tracing::info!(topic = %self.topic, "owner changed epoch; following anew");
                self.retire(myself);
                return;
            }
            // The topic was created by this message.
            self.epoch = Arc::from(epoch);
        }
        self.exists = true;
        self.first = self.first.max(first);
        for msg in messages {
            if msg.offset <= self.durable {
                continue;
            }
            if msg.offset != self.durable + 1 {
                tracing::warn!(topic = %self.topic, expected = self.durable + 1, got = msg.offset, "gap in what the owner sent; following anew");
                self.retire(myself);
                return;
            }
            self.durable = msg.offset;
            if self.audience.has_live() {
                let d = Arc::new(Delivery::from_envelope(&self.topic, &self.epoch, msg));
                self.audience.fan_out(&self.shared, &d);
            }
        }
        self.shared.head.send_replace(self.durable);
    }

    /// Answers a message this actor does not serve (or no longer serves).
    fn refuse(&self, msg: TopicMsg) {
        match msg {
            // Without ever reaching the owner it knows no epoch: its info would tell
            // readers to continue in an epoch that does not exist. Dropping the reply
            // makes the caller retry (503), on a fresh actor.
            TopicMsg::Info(_) if !self.following => {}
            TopicMsg::Info(reply) => {
                let _ = reply.send(self.info());
            }
            TopicMsg::GoLive { reply, .. } => {
                let _ = reply.send(GoLive::Behind { head: self.durable });
            }
            other => refuse(other),
        }
    }

    /// Stops following and asks the supervisor to let this actor go; the subscribers
    /// resume on a fresh one.
    fn retire(&mut self, myself: &ActorRef<TopicMsg>) {
        self.audience.clear();
        if let Some(sup) = myself.try_get_supervisor() {
            let sup: ActorRef<SupervisorMsg> = sup.into();
            let _ = sup.cast(SupervisorMsg::Retire(self.topic.clone(), myself.get_id()));
        }
        self.retiring = true;
    }
}
