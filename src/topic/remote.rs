//! Serving other nodes: the topic layer's side of the cluster's [`Inbound`] port.

use super::service::Topics;
use super::{Role, TopicMsg};
use crate::cluster::client::Cluster;
use crate::cluster::port::Inbound;
use crate::cluster::wire::{Call, Cast, Reply, WireEnvelope, WireFrame, WireMessage, WireMeta};
use crate::delivery::envelope::{Delivery, Envelope};
use crate::delivery::outbound::{OutFrame, Subscribed};
use crate::protocol::resume::ResumePlan;
use crate::protocol::TopicName;
use crate::storage::blocking::off_worker;
use crate::storage::TopicLog;
use crate::topic::error::TopicError;
use serde_json::value::RawValue;
use std::sync::Arc;

#[async_trait::async_trait]
impl Inbound for Topics {
    async fn call(&self, call: Call) -> Reply {
        self.answer(call).await.unwrap_or_else(|e| {
            let retry = e.retry();
            Reply::error(&e.into(), retry)
        })
    }

    fn cast(&self, cast: Cast) {
        self.receive(cast)
    }
}

impl Topics {
    async fn answer(&self, call: Call) -> Result<Reply, TopicError> {
        match call {
            Call::Publish { topic, data, id } => self.serve_publish(&topic, data, id).await,
            Call::Follow { topic, from } => self.serve_follow(&topic, from).await,
            Call::Read {
                topic,
                from,
                to,
                max_count,
                max_bytes,
            } => {
                // Off the worker: a peer's replay reads up to a whole batch from disk.
                let name = topic.clone();
                off_worker(&self.log, move |log| {
                    Ok(serve_read(log, &name, from, to, max_count, max_bytes))
                })
                .await
                .map_err(|e| storage(&topic, e))?
            }
            Call::Info { topic } => {
                let info = self.info_here(&parse(&topic)?).await?;
                Ok(Reply::Info {
                    subscribers: info.as_ref().map_or(0, |i| i.subscribers as u64),
                    meta: info.map(|i| WireMeta {
                        epoch: i.epoch.to_string(),
                        first: i.first,
                        head: i.head,
                        exists: i.exists,
                    }),
                })
            }
            Call::Raft { shard, request } => {
                Ok(Reply::Raft(self.replication.serve(shard, request).await))
            }
            Call::ConsumerJoin(join) => self.serve_consumer_join(join).await,
            Call::ConsumerAck { topic, name, ack } => {
                self.serve_consumer_ack(&topic, name, ack).await
            }
            Call::ConsumerLease {
                topic,
                name,
                options,
                after,
                limit,
            } => {
                self.serve_consumer_lease(&topic, name, options, after, limit)
                    .await
            }
            Call::ConsumerInfo { topic, name } => self.serve_consumer_info(&topic, name).await,
            Call::ConsumerConfigure {
                topic,
                name,
                options,
            } => self.serve_consumer_configure(&topic, name, options).await,
        }
    }

    async fn serve_publish(
        &self,
        topic: &str,
        data: Vec<u8>,
        id: Option<String>,
    ) -> Result<Reply, TopicError> {
        let topic = parse(topic)?;
        if self.cluster.owner(topic.as_str()).as_deref() != Some(self.cluster.me()) {
            return Err(TopicError::Moving);
        }
        let ack = self.publish_here(&topic, data.into(), id).await?;
        Ok(Reply::Published {
            offset: ack.offset,
            epoch: ack.epoch.to_string(),
            id: ack.id,
            duplicate: ack.duplicate,
        })
    }

    async fn serve_follow(&self, topic: &str, from: String) -> Result<Reply, TopicError> {
        let topic = parse(topic)?;
        let handle = self.handle(&topic).await?;
        if handle.role != Role::Owner {
            return Err(TopicError::Moving);
        }
        let f = handle.follow(from).await?;
        Ok(Reply::Followed(WireMeta {
            epoch: f.epoch,
            first: f.first,
            head: f.head,
            exists: f.exists,
        }))
    }

    /// Hands a cast from another node to the topic actor it is for, if it still runs.
    fn receive(&self, cast: Cast) {
        let (topic, msg, for_owner) = match cast {
            Cast::Deliver {
                topic,
                epoch,
                first,
                messages,
            } => {
                let messages = messages.into_iter().map(envelope).collect();
                let msg = TopicMsg::Deliver {
                    epoch,
                    first,
                    messages,
                };
                (topic, msg, false)
            }
            Cast::OwnerGone { topic, epoch } => (topic, TopicMsg::OwnerGone { epoch }, false),
            Cast::Unfollow { topic, from } => (topic, TopicMsg::Unfollow { from }, true),
            Cast::MemberFrames {
                topic,
                name,
                member,
                frames,
            } => {
                let Ok(t) = TopicName::parse(&topic) else {
                    return;
                };
                if !matches!(self.registry.get(&t), Some(h) if h.role != Role::Owner) {
                    // The member's follower is gone (it failed without saying so): the
                    // owner must stop leasing to it, or its messages burn attempts unseen.
                    self.tell_owner_left(&t, name, member);
                    return;
                }
                let msg = TopicMsg::MemberFrames {
                    name,
                    member,
                    frames: out_frames(&t, frames),
                };
                (topic, msg, false)
            }
            Cast::MemberGone { topic, member } => (topic, TopicMsg::MemberGone { member }, false),
            Cast::ConsumerLeave {
                topic,
                name,
                member,
            } => {
                let msg = TopicMsg::ConsumerLeave {
                    name,
                    member,
                    reply: None,
                };
                (topic, msg, true)
            }
        };
        let Ok(topic) = TopicName::parse(&topic) else {
            return;
        };
        let follower = matches!(msg, TopicMsg::Deliver { .. });
        match self.registry.get(&topic) {
            Some(h) if (h.role == Role::Owner) == for_owner => {
                h.cast(msg);
            }
            _ if follower => self.unfollow(&topic),
            _ => {}
        }
    }

    /// Deliveries came for a topic this node no longer follows: tell its owner to stop.
    /// Tells `topic`'s owner that consumer member `member` of `name` is gone.
    fn tell_owner_left(&self, topic: &TopicName, name: String, member: u64) {
        let Some(owner) = self.cluster.owner(topic.as_str()) else {
            return;
        };
        let cast = Cast::ConsumerLeave {
            topic: topic.as_str().to_string(),
            name,
            member,
        };
        if let Some(bytes) = Cluster::encode_cast(&cast) {
            self.cluster.cast(&owner, bytes);
        }
    }

    fn unfollow(&self, topic: &TopicName) {
        let Some(owner) = self.cluster.owner(topic.as_str()) else {
            return;
        };
        let cast = Cast::Unfollow {
            topic: topic.as_str().to_string(),
            from: self.cluster.me().to_string(),
        };
        if let Some(bytes) = Cluster::encode_cast(&cast) {
            self.cluster.cast(&owner, bytes);
        }
    }
}

fn parse(topic: &str) -> Result<TopicName, TopicError> {
    Ok(TopicName::parse(topic)?)
}

/// Serves a peer's read of this node's copy of `topic`.
fn serve_read(
    log: &dyn TopicLog,
    topic: &str,
    from: u64,
    to: u64,
    max_count: u32,
    max_bytes: u32,
) -> Result<Reply, TopicError> {
    let meta = log
        .meta(topic)
        .map_err(|e| storage(topic, e))?
        .ok_or_else(|| TopicError::unavailable("no copy of this topic here"))?;
    let messages = log
        .read(topic, from, to, max_count as usize, max_bytes as usize)
        .map_err(|e| storage(topic, e))?;
    Ok(Reply::Messages {
        epoch: meta.epoch,
        first: meta.first,
        head: meta.head,
        messages: messages.iter().map(WireMessage::from).collect(),
    })
}

fn storage(topic: &str, e: crate::storage::StorageError) -> TopicError {
    tracing::error!(topic, error = %e, "storage error serving a peer");
    TopicError::Internal
}

/// An envelope as the owner rendered it, off the wire.
pub(super) fn envelope(m: WireEnvelope) -> Envelope {
    Envelope {
        offset: m.offset,
        time_ms: m.time_ms,
        bytes: m.envelope.into(),
    }
}

/// Frames for a consumer member on this node, off the wire, as its queue takes them.
fn out_frames(topic: &TopicName, frames: Vec<WireFrame>) -> Vec<OutFrame> {
    let mut epoch: Arc<str> = Arc::from("");
    let mut epoch_of = |e: String| {
        if *epoch != *e {
            epoch = Arc::from(e.as_str());
        }
        epoch.clone()
    };
    frames
        .into_iter()
        .map(|frame| match frame {
            WireFrame::Message {
                epoch,
                offset,
                time_ms,
                envelope,
            } => {
                let envelope = Envelope {
                    offset,
                    time_ms,
                    bytes: envelope.into(),
                };
                let d = Delivery::from_envelope(topic, &epoch_of(epoch), envelope);
                OutFrame::Message(Arc::new(d))
            }
            WireFrame::Text(t) => OutFrame::Text(t),
            WireFrame::Subscribed {
                epoch,
                first,
                head,
                start,
                req,
                consumer,
            } => OutFrame::Subscribed(Box::new(Subscribed {
                topic: topic.clone(),
                req: req.and_then(|r| RawValue::from_string(r).ok()),
                epoch: epoch_of(epoch),
                first,
                head,
                plan: ResumePlan { start, reset: None },
                consumer,
            })),
        })
        .collect()
}
