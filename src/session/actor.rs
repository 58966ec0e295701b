//! The session actor: one per connection. It owns the connection's subscriptions (each a
//! replay task until live, then fed by its topic actor straight into the outbound queue),
//! forwards publishes, and serves polls. Its state closes the outbound queue and
//! unsubscribes when dropped, so even a panicking session cleans up after itself.

use super::outbound::{CloseReason, OutFrame, Outbound, Subscribed};
use super::poll::poll;
use super::replay::Replay;
use super::{SessionMsg, Transport};
use crate::config::LimitsConfig;
use crate::protocol::frames::{error_frame, reply_frame, Position};
use crate::protocol::{ApiError, TopicName};
use crate::shutdown::Shutdown;
use crate::topic::service::{call_topic, Topics};
use crate::topic::{SubId, Subscriber, TopicMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

static NEXT_SUB: AtomicU64 = AtomicU64::new(1);

pub struct SessionActor;

pub struct SessionArgs {
    pub transport: Transport,
    pub outbound: Arc<Outbound>,
    pub topics: Topics,
    pub limits: LimitsConfig,
    pub shutdown: Shutdown,
}

struct Sub {
    id: SubId,
    actor: ActorRef<TopicMsg>,
    cursor: Arc<AtomicU64>,
    epoch: Arc<str>,
    replay: JoinHandle<()>,
}

pub struct SessionState {
    transport: Transport,
    outbound: Arc<Outbound>,
    topics: Topics,
    limits: LimitsConfig,
    shutdown: Shutdown,
    subs: HashMap<TopicName, Sub>,
    /// Set by `post_stop`, which ractor skips when the actor failed.
    stopped: bool,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        for sub in self.subs.values() {
            sub.replay.abort();
            let _ = sub.actor.cast(TopicMsg::Unsubscribe {
                sub: sub.id,
                reply: None,
            });
        }
        let reason = if self.stopped && !std::thread::panicking() {
            CloseReason::Gone
        } else {
            CloseReason::Internal
        };
        self.outbound.close(reason);
        metrics::gauge!("starling_connections", "transport" => self.transport.label())
            .decrement(1.0);
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        metrics::gauge!("starling_connections", "transport" => args.transport.label())
            .increment(1.0);
        Ok(SessionState {
            transport: args.transport,
            outbound: args.outbound,
            topics: args.topics,
            limits: args.limits,
            shutdown: args.shutdown,
            subs: HashMap::new(),
            stopped: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state.stopped = true;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Subscribe {
                topic,
                position,
                consumer,
                req,
                reply,
            } => {
                let result = match consumer {
                    Some(_) => Err(ApiError::bad_request(
                        "consumer subscriptions are not supported by this server",
                    )),
                    None => {
                        state
                            .subscribe(&myself, topic, position, req.as_deref(), false)
                            .await
                    }
                };
                match (reply, result) {
                    (Some(port), r) => {
                        let _ = port.send(r);
                    }
                    (None, Err(e)) => state.send_error(req.as_deref(), &e),
                    (None, Ok(())) => {}
                }
            }
            SessionMsg::Unsubscribe { topic, req } => match state.subs.remove(&topic) {
                Some(sub) => {
                    sub.replay.abort();
                    // An aborted replay stops at its next await: let it, so it pushes
                    // nothing after the reply.
                    let _ = sub.replay.await;
                    // Wait until the topic actor dropped us, so nothing follows `unsubscribed`.
                    let _ = call_topic(&sub.actor, |reply| TopicMsg::Unsubscribe {
                        sub: sub.id,
                        reply: Some(reply),
                    })
                    .await;
                    state.send_text(reply_frame(
                        "unsubscribed",
                        req.as_deref(),
                        serde_json::json!({"topic": topic.as_str()}),
                    ));
                }
                None => state.send_error(
                    req.as_deref(),
                    &ApiError::bad_request(format!("not subscribed to {topic}")),
                ),
            },
            SessionMsg::Publish {
                topic,
                data,
                id,
                req,
            } => {
                let topics = state.topics.clone();
                let outbound = state.outbound.clone();
                tokio::spawn(async move {
                    let frame = match topics.publish(&topic, data, id).await {
                        Ok(ack) => reply_frame(
                            "published",
                            req.as_deref(),
                            serde_json::json!({
                                "topic": topic.as_str(), "offset": ack.offset, "epoch": &*ack.epoch,
                                "id": ack.id, "duplicate": ack.duplicate,
                            }),
                        ),
                        Err(e) => error_frame(req.as_deref(), &e),
                    };
                    let _ = outbound.push(OutFrame::Text(frame));
                });
            }
            SessionMsg::ConsumerCommand { topic, req } => state.send_error(
                req.as_deref(),
                &ApiError::bad_request(format!("no consumer subscription on {topic}")),
            ),
            SessionMsg::Ping { req } => {
                state.send_text(reply_frame("pong", req.as_deref(), serde_json::json!({})))
            }
            SessionMsg::Poll(req, reply) => {
                let max_bytes = state.limits.max_outbound_queue_bytes;
                let _ = reply.send(poll(&state.topics, req, &state.shutdown, max_bytes).await);
            }
            SessionMsg::Resubscribe { topic, sub } => {
                if state.subs.get(&topic).is_some_and(|s| s.id == sub) {
                    if let Some(old) = state.subs.remove(&topic) {
                        old.replay.abort();
                        // The cursor is final only once the old replay has stopped.
                        let _ = old.replay.await;
                        let position = Position {
                            after: Some(old.cursor.load(Ordering::Acquire)),
                            epoch: Some(old.epoch.to_string()),
                        };
                        if let Err(e) = state
                            .subscribe(&myself, topic.clone(), position, None, true)
                            .await
                        {
                            tracing::warn!(topic = %topic, error = %e, "resubscribe failed; closing session");
                            state.outbound.close(CloseReason::Internal);
                        }
                    }
                }
            }
            SessionMsg::ReplayFailed { topic, sub } => {
                if state.subs.get(&topic).is_some_and(|s| s.id == sub) {
                    state.outbound.close(CloseReason::Internal);
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn send_text(&self, text: String) {
        let _ = self.outbound.push(OutFrame::Text(text));
    }

    fn send_error(&self, req: Option<&serde_json::value::RawValue>, e: &ApiError) {
        self.send_text(error_frame(req, e));
    }

    /// Registers with the topic actor, announces the subscription (a `resumed` one only if
    /// it lost its position), and starts its replay.
    async fn subscribe(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        topic: TopicName,
        position: Position,
        req: Option<&serde_json::value::RawValue>,
        resumed: bool,
    ) -> Result<(), ApiError> {
        if self.subs.contains_key(&topic) {
            return Err(ApiError::bad_request(format!(
                "already subscribed to {topic}"
            )));
        }
        if self.subs.len() >= self.limits.max_subscriptions_per_connection {
            return Err(ApiError::bad_request(format!(
                "a connection may hold at most {} subscriptions",
                self.limits.max_subscriptions_per_connection
            )));
        }
        let handle = self.topics.handle(&topic).await?;
        let id = NEXT_SUB.fetch_add(1, Ordering::Relaxed);
        let cursor = Arc::new(AtomicU64::new(0));
        let subscriber = Subscriber {
            id,
            outbound: self.outbound.clone(),
            cursor: cursor.clone(),
            session: myself.clone(),
        };
        let info = call_topic(&handle.actor, |reply| TopicMsg::Subscribe {
            sub: subscriber,
            position,
            reply,
        })
        .await??;
        if !resumed || !info.plan.recovered() {
            let frame = Subscribed {
                topic: topic.clone(),
                req: req.map(|r| r.to_owned()),
                epoch: info.epoch.clone(),
                first: info.first,
                head: info.head,
                plan: info.plan,
            };
            let _ = self.outbound.push(OutFrame::Subscribed(Box::new(frame)));
        }
        let replay = Replay {
            topic: topic.clone(),
            sub: id,
            epoch: info.epoch.clone(),
            actor: handle.actor.clone(),
            log: self.topics.log().clone(),
            outbound: self.outbound.clone(),
            cursor: cursor.clone(),
            session: myself.clone(),
            batch_bytes: self.limits.max_outbound_queue_bytes / 4,
        };
        let task = tokio::spawn(replay.run(info.plan.start, info.head));
        self.subs.insert(
            topic,
            Sub {
                id,
                actor: handle.actor,
                cursor,
                epoch: info.epoch,
                replay: task,
            },
        );
        Ok(())
    }
}
