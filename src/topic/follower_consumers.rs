//! Consumers on a follower: a member connected here joins the owner's consumer group
//! through the owner's relay ([`super::super::relay`]); the frames the owner casts back
//! are pushed into the member's queue in order. Acks, leases, info and settings changes are
//! forwarded as calls, each in its own task so that the follower keeps delivering meanwhile.

use super::FollowerState;
use crate::cluster::client::Cluster;
use crate::cluster::wire::{Call, Cast, JoinRequest, Reply};
use crate::consumer::Joined;
use crate::delivery::envelope::Delivery;
use crate::delivery::outbound::OutFrame;
use crate::delivery::SubId;
use crate::topic::error::TopicError;
use crate::topic::history::unexpected;
use crate::topic::remote::envelope;
use crate::topic::TopicMsg;
use ractor::ActorRef;
use std::sync::Arc;

impl FollowerState {
    /// Serves the consumer messages; gives back any other message.
    pub(super) fn handle_consumer(
        &mut self,
        myself: &ActorRef<TopicMsg>,
        msg: TopicMsg,
    ) -> Option<TopicMsg> {
        let (cluster, owner) = (self.ctx.cluster.clone(), self.owner.clone());
        let topic = self.topic.as_str().to_string();
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
                let id = member.id;
                self.shared.subscribers().insert(id, member.session.clone());
                self.members.insert(id, (name.clone(), member));
                let call = Call::ConsumerJoin(JoinRequest {
                    topic,
                    name: name.clone(),
                    options,
                    after,
                    announce,
                    req: req.map(|r| r.get().to_string()),
                    from: cluster.me().to_string(),
                    member: id,
                });
                let me = myself.clone();
                tokio::spawn(async move {
                    let r = match cluster.call(&owner, &call).await {
                        Ok(Reply::Joined {
                            epoch,
                            ack_floor,
                            first,
                            head,
                        }) => Ok(Joined {
                            epoch: Arc::from(epoch.as_str()),
                            ack_floor,
                            first,
                            head,
                        }),
                        other => Err(failure(&owner, other)),
                    };
                    if r.is_err() {
                        let _ = me.cast(TopicMsg::ConsumerLeave {
                            name,
                            member: id,
                            reply: None,
                        });
                    }
                    let _ = reply.send(r);
                });
            }
            TopicMsg::ConsumerLeave {
                name,
                member,
                reply,
            } => {
                self.leave_member(&name, member);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            TopicMsg::ConsumerAck { name, ack, reply } => {
                tokio::spawn(async move {
                    let call = Call::ConsumerAck { topic, name, ack };
                    let r = match cluster.call(&owner, &call).await {
                        Ok(Reply::Acked(report)) => Ok(report),
                        other => Err(failure(&owner, other)),
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                });
            }
            TopicMsg::ConsumerLease {
                name,
                options,
                after,
                limit,
                reply,
            } => {
                let t = self.topic.clone();
                tokio::spawn(async move {
                    let call = Call::ConsumerLease {
                        topic,
                        name,
                        options,
                        after,
                        limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    };
                    let r = match cluster.call(&owner, &call).await {
                        Ok(Reply::Leased { epoch, messages }) => {
                            let epoch: Arc<str> = Arc::from(epoch.as_str());
                            Ok(messages
                                .into_iter()
                                .map(|m| Delivery::from_envelope(&t, &epoch, envelope(m)))
                                .collect())
                        }
                        other => Err(failure(&owner, other)),
                    };
                    let _ = reply.send(r);
                });
            }
            TopicMsg::ConsumerInfo { name, reply } => {
                tokio::spawn(async move {
                    let call = Call::ConsumerInfo { topic, name };
                    if let Ok(Reply::ConsumerInfo(info)) = cluster.call(&owner, &call).await {
                        let _ = reply.send(info);
                    }
                });
            }
            TopicMsg::ConsumerConfigure {
                name,
                options,
                reply,
            } => {
                tokio::spawn(async move {
                    let call = Call::ConsumerConfigure {
                        topic,
                        name,
                        options,
                    };
                    let r = match cluster.call(&owner, &call).await {
                        Ok(Reply::ConsumerInfo(Some(info))) => Ok(info),
                        other => Err(failure(&owner, other)),
                    };
                    let _ = reply.send(r);
                });
            }
            TopicMsg::MemberFrames {
                name,
                member,
                frames,
            } => self.member_frames(&name, member, frames),
            TopicMsg::MemberGone { member } => {
                if self.members.remove(&member).is_some() {
                    if let Some(session) = self.shared.subscribers().remove(&member) {
                        session.resubscribe(&self.topic, member);
                    }
                }
            }
            TopicMsg::ConsumerTick => {}
            other => return Some(other),
        }
        None
    }

    fn member_frames(&mut self, name: &str, member: SubId, frames: Vec<OutFrame>) {
        let Some((_, sub)) = self.members.get(&member) else {
            // A member the owner still feeds but this node no longer has (its join
            // answered late, or it left): let the owner redeliver its messages.
            self.tell_owner_left(name, member);
            return;
        };
        for frame in frames {
            if sub.outbound.push(frame).is_err() {
                // The member's connection is gone: the owner redelivers its messages.
                self.leave_member(name, member);
                return;
            }
        }
    }

    pub(super) fn leave_member(&mut self, name: &str, member: SubId) {
        self.shared.subscribers().remove(&member);
        if self.members.remove(&member).is_some() {
            self.tell_owner_left(name, member);
        }
    }

    pub(super) fn tell_owner_left(&self, name: &str, member: SubId) {
        let cast = Cast::ConsumerLeave {
            topic: self.topic.as_str().to_string(),
            name: name.to_string(),
            member,
        };
        if let Some(bytes) = Cluster::encode_cast(&cast) {
            self.ctx.cluster.cast(&self.owner, bytes);
        }
    }
}

fn failure(owner: &str, r: Result<Reply, crate::cluster::port::CallError>) -> TopicError {
    match r {
        Ok(reply) => unexpected(owner, reply),
        Err(crate::cluster::port::CallError::NoRoute(_)) => TopicError::Moving,
        Err(e) => {
            tracing::warn!(owner, error = %e, "consumer call to the owner failed");
            TopicError::unavailable("the topic's owner did not answer")
        }
    }
}
