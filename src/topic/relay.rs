//! Consumers across nodes, on the owner's side. A consumer member connected to another
//! node joins the owner's consumer group through a relay: a local outbound queue (so the
//! group paces it like any member) drained by a task that casts the frames, in order, to the
//! member's node. The relay is the member's "session" here: when the topic actor lets go of
//! it, the member's node is told to join again. Acks, leases, info and settings are plain calls.

use super::handle::{MemberJoin, TopicHandle};
use super::service::Topics;
use super::Role;
use crate::cluster::client::Cluster;
use crate::cluster::wire::{Cast, JoinRequest, Reply, WireEnvelope, WireFrame};
use crate::delivery::outbound::{CloseReason, OutFrame, Outbound};
use crate::delivery::{SessionPort, SubId, Subscriber};
use crate::protocol::consumer::AckRequest;
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::TopicName;
use crate::topic::error::TopicError;
use serde_json::value::RawValue;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Bytes a relay queues for its member before the group stops feeding it.
const RELAY_QUEUE_BYTES: usize = 4 << 20;

impl Topics {
    pub(super) async fn serve_consumer_join(&self, j: JoinRequest) -> Result<Reply, TopicError> {
        let topic = TopicName::parse(&j.topic)?;
        let handle = self.handle(&topic).await?;
        if handle.role != Role::Owner {
            return Err(TopicError::Moving);
        }
        let outbound = Outbound::new(RELAY_QUEUE_BYTES);
        let relay = Relay::start(
            RelayTarget {
                topic: j.topic.clone(),
                name: j.name.clone(),
                node: j.from,
                member: j.member,
            },
            outbound.clone(),
            self.cluster.clone(),
        );
        let member = Subscriber {
            id: j.member,
            outbound,
            cursor: Arc::new(AtomicU64::new(0)),
            session: relay,
        };
        let req = j.req.and_then(|r| RawValue::from_string(r).ok());
        // On a failure the topic actor drops the member, and with it the relay.
        let joined = handle
            .join(MemberJoin {
                name: j.name,
                member,
                options: j.options,
                after: j.after,
                announce: j.announce,
                req,
            })
            .await?;
        Ok(Reply::Joined {
            epoch: joined.epoch.to_string(),
            ack_floor: joined.ack_floor,
            first: joined.first,
            head: joined.head,
        })
    }

    pub(super) async fn serve_consumer_ack(
        &self,
        topic: &str,
        name: String,
        ack: AckRequest,
    ) -> Result<Reply, TopicError> {
        let handle = self.owned(topic).await?;
        let report = handle.ack(name, ack).await?;
        Ok(Reply::Acked(report))
    }

    pub(super) async fn serve_consumer_lease(
        &self,
        topic: &str,
        name: String,
        options: ConsumerOptions,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Reply, TopicError> {
        let handle = self.owned(topic).await?;
        let leased = handle.lease(name, options, after, limit as usize).await?;
        let epoch = leased
            .first()
            .map(|d| d.epoch.to_string())
            .unwrap_or_default();
        Ok(Reply::Leased {
            epoch,
            messages: leased
                .iter()
                .map(|d| WireEnvelope {
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
    ) -> Result<Reply, TopicError> {
        let handle = self.owned(topic).await?;
        let info = handle.consumer_info(name).await?;
        Ok(Reply::ConsumerInfo(info))
    }

    pub(super) async fn serve_consumer_configure(
        &self,
        topic: &str,
        name: String,
        options: ConsumerOptions,
    ) -> Result<Reply, TopicError> {
        let handle = self.owned(topic).await?;
        let info = handle.configure(name, options).await?;
        Ok(Reply::ConsumerInfo(Some(info)))
    }

    /// This node's owner actor of `topic`, or "moving".
    async fn owned(&self, topic: &str) -> Result<TopicHandle, TopicError> {
        let handle = self.handle(&TopicName::parse(topic)?).await?;
        if handle.role != Role::Owner {
            return Err(TopicError::Moving);
        }
        Ok(handle)
    }
}

/// Which member on which node a relay serves.
struct RelayTarget {
    topic: String,
    name: String,
    node: String,
    member: u64,
}

/// The owner's side of a consumer member on another node: the member's "session" as the
/// topic actor sees it. A task drains the member's local queue and casts the frames in
/// order to the member's node; it ends when the queue closes: the member's node is
/// unreachable, the topic actor let go of the member (`resubscribe`: the member's node is
/// told to join again), or the topic actor dropped the member (the last handle to the
/// relay is gone).
struct Relay {
    target: Arc<RelayTarget>,
    outbound: Arc<Outbound>,
    cluster: Cluster,
}

impl Relay {
    fn start(target: RelayTarget, outbound: Arc<Outbound>, cluster: Cluster) -> Arc<Relay> {
        let target = Arc::new(target);
        let (queue, peers, t) = (outbound.clone(), cluster.clone(), target.clone());
        tokio::spawn(async move {
            let mut frames = Vec::new();
            while queue.drain(&mut frames).await.is_ok() {
                let cast = Cast::MemberFrames {
                    topic: t.topic.clone(),
                    name: t.name.clone(),
                    member: t.member,
                    frames: frames.drain(..).map(wire_frame).collect(),
                };
                let sent = Cluster::encode_cast(&cast).is_some_and(|b| peers.cast(&t.node, b));
                if !sent {
                    let (topic, node, member) = (&t.topic, &t.node, t.member);
                    tracing::info!(topic, node, member, "consumer member's node unreachable");
                    queue.close(CloseReason::Gone);
                }
            }
        });
        Arc::new(Relay {
            target,
            outbound,
            cluster,
        })
    }
}

impl SessionPort for Relay {
    fn resubscribe(&self, _topic: &TopicName, _sub: SubId) {
        let t = &self.target;
        let cast = Cast::MemberGone {
            topic: t.topic.clone(),
            member: t.member,
        };
        if let Some(bytes) = Cluster::encode_cast(&cast) {
            self.cluster.cast(&t.node, bytes);
        }
        self.outbound.close(CloseReason::Gone);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.outbound.close(CloseReason::Gone);
    }
}

fn wire_frame(frame: OutFrame) -> WireFrame {
    match frame {
        OutFrame::Message(d) => WireFrame::Message {
            epoch: d.epoch.to_string(),
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
    }
}
