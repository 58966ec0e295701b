//! Consumers across nodes, on the owner's side. A consumer member connected to another
//! node joins the owner's consumer group through a relay: a local outbound queue (so the
//! group paces it like any member) drained by a task that casts the frames, in order, to the
//! member's node. The relay is the member's "session" here: when the topic actor lets go of
//! it, the member's node is told to join again. Acks, leases, info and settings are plain calls.

use super::service::{call_topic, Topics};
use super::{moving, Role, Subscriber, TopicMsg};
use crate::cluster::client::Cluster;
use crate::cluster::wire::{Cast, JoinRequest, Reply, WireFrame, WireLeased};
use crate::consumer::options::ConsumerOptions;
use crate::consumer::AckRequest;
use crate::protocol::{ApiError, TopicName};
use crate::session::outbound::{CloseReason, OutFrame, Outbound};
use crate::session::SessionMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::value::RawValue;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Bytes a relay queues for its member before the group stops feeding it.
const RELAY_QUEUE_BYTES: usize = 4 << 20;

impl Topics {
    pub(super) async fn serve_consumer_join(&self, j: JoinRequest) -> Result<Reply, ApiError> {
        let topic = TopicName::parse(&j.topic)?;
        let handle = self.handle(&topic).await?;
        if handle.role != Role::Owner {
            return Err(moving());
        }
        let outbound = Outbound::new(RELAY_QUEUE_BYTES);
        let args = RelayArgs {
            topic: j.topic.clone(),
            name: j.name.clone(),
            node: j.from,
            member: j.member,
            outbound: outbound.clone(),
            cluster: self.cluster.clone(),
        };
        let (relay, _) = Actor::spawn(None, Relay, args)
            .await
            .map_err(|_| ApiError::unavailable("cannot start a relay"))?;
        let member = Subscriber {
            id: j.member,
            outbound,
            cursor: Arc::new(AtomicU64::new(0)),
            session: relay.clone(),
        };
        let req = j.req.and_then(|r| RawValue::from_string(r).ok());
        let joined = call_topic(&handle.actor, |reply| TopicMsg::ConsumerJoin {
            name: j.name,
            member,
            options: j.options,
            after: j.after,
            announce: j.announce,
            req,
            reply,
        })
        .await
        .and_then(|r| r);
        match joined {
            Ok(j) => Ok(Reply::Joined {
                epoch: j.epoch.to_string(),
                ack_floor: j.ack_floor,
                first: j.first,
                head: j.head,
            }),
            Err(e) => {
                relay.stop(None);
                Err(e)
            }
        }
    }

    pub(super) async fn serve_consumer_ack(
        &self,
        topic: &str,
        name: String,
        ack: AckRequest,
    ) -> Result<Reply, ApiError> {
        let handle = self.owned(topic).await?;
        let report = call_topic(&handle.actor, |reply| TopicMsg::ConsumerAck {
            name,
            ack,
            reply: Some(reply),
        })
        .await??;
        Ok(Reply::Acked(report))
    }

    pub(super) async fn serve_consumer_lease(
        &self,
        topic: &str,
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Reply, ApiError> {
        let handle = self.owned(topic).await?;
        let leased = call_topic(&handle.actor, |reply| TopicMsg::ConsumerLease {
            name,
            options,
            after,
            limit: limit as usize,
            reply,
        })
        .await??;
        let epoch = leased
            .first()
            .map(|d| d.epoch.to_string())
            .unwrap_or_default();
        Ok(Reply::Leased {
            epoch,
            messages: leased
                .iter()
                .map(|d| WireLeased {
                    offset: d.offset,
                    time_ms: d.time_ms,
                    envelope: d.envelope.to_vec(),
                })
                .collect(),
        })
    }

    pub(super) async fn serve_consumer_info(
        &self,
        topic: &str,
        name: String,
    ) -> Result<Reply, ApiError> {
        let handle = self.owned(topic).await?;
        let info = call_topic(&handle.actor, |reply| TopicMsg::ConsumerInfo {
            name,
            reply,
        })
        .await?;
        Ok(Reply::ConsumerInfo(info))
    }

    pub(super) async fn serve_consumer_configure(
        &self,
        topic: &str,
        name: String,
        options: ConsumerOptions,
    ) -> Result<Reply, ApiError> {
        let handle = self.owned(topic).await?;
        let info = call_topic(&handle.actor, |reply| TopicMsg::ConsumerConfigure {
            name,
            options,
            reply,
        })
        .await??;
        Ok(Reply::ConsumerInfo(Some(info)))
    }

    /// This node's owner actor of `topic`, or "moving".
    async fn owned(&self, topic: &str) -> Result<super::supervisor::TopicHandle, ApiError> {
        let handle = self.handle(&TopicName::parse(topic)?).await?;
        if handle.role != Role::Owner {
            return Err(moving());
        }
        Ok(handle)
    }
}

struct Relay;

struct RelayArgs {
    topic: String,
    name: String,
    node: String,
    member: u64,
    outbound: Arc<Outbound>,
    cluster: Cluster,
}

struct RelayState {
    args: RelayArgs,
    drain: tokio::task::JoinHandle<()>,
}

impl Actor for Relay {
    type Msg = SessionMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: RelayArgs,
    ) -> Result<RelayState, ActorProcessingErr> {
        let (outbound, cluster) = (args.outbound.clone(), args.cluster.clone());
        let (topic, node, member) = (args.topic.clone(), args.node.clone(), args.member);
        let name = args.name.clone();
        let drain = tokio::spawn(async move {
            let mut frames = Vec::new();
            while outbound.drain(&mut frames).await.is_ok() {
                let cast = Cast::MemberFrames {
                    topic: topic.clone(),
                    name: name.clone(),
                    member,
                    frames: frames.drain(..).filter_map(wire_frame).collect(),
                };
                let sent = Cluster::encode_cast(&cast).is_some_and(|b| cluster.cast(&node, b));
                if !sent {
                    tracing::info!(topic, node, member, "consumer member's node unreachable");
                    outbound.close(CloseReason::Gone);
                    break;
                }
            }
            myself.stop(None);
        });
        Ok(RelayState { args, drain })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        state.drain.abort();
        state.args.outbound.close(CloseReason::Gone);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        if let SessionMsg::Resubscribe { .. } = msg {
            let a = &state.args;
            let cast = Cast::MemberGone {
                topic: a.topic.clone(),
                member: a.member,
            };
            if let Some(bytes) = Cluster::encode_cast(&cast) {
                a.cluster.cast(&a.node, bytes);
            }
            myself.stop(None);
        }
        Ok(())
    }
}

fn wire_frame(frame: OutFrame) -> Option<WireFrame> {
    Some(match frame {
        OutFrame::Message(d) => WireFrame::Message {
            offset: d.offset,
            time_ms: d.time_ms,
            envelope: d.envelope.to_vec(),
        },
        OutFrame::Text(t) => WireFrame::Text(t),
        OutFrame::Subscribed(s) => WireFrame::Subscribed {
            epoch: s.epoch.to_string(),
            first: s.first,
            head: s.head,
            start: s.plan.start,
            req: s.req.map(|r| r.get().to_string()),
            consumer: s.consumer,
        },
    })
}
