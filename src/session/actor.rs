//! The session actor: one per connection. It owns the connection's subscriptions (a stream
//! subscription is a replay task until live, then fed by its topic actor straight into the
//! outbound queue; a consumer subscription is a member of the topic's consumer group),
//! forwards publishes and acks, and serves polls. Its state closes the outbound queue and
//! leaves its topics when dropped, so even a failed session cleans up after itself.

use super::poll::poll;
use super::subscribe::{Sub, SubKind};
use super::{SessionMsg, Transport};
use crate::config::LimitsConfig;
use crate::delivery::outbound::{CloseReason, OutFrame, Outbound};
use crate::protocol::frames::{error_frame, reply_frame, Position};
use crate::protocol::{ApiError, ErrorCode, TopicName};
use crate::shutdown::Shutdown;
use crate::topic::service::Topics;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SessionActor;

/// Publishes and acks one connection may have waiting for their outcome.
const MAX_IN_FLIGHT: usize = 4096;

/// How long a subscription keeps trying to resume while its topic changes hands (an
/// election of its shard's leader), and how often it tries.
const RESUBSCRIBE_PATIENCE: Duration = Duration::from_secs(15);
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

/// Counts one request in flight until dropped.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct SessionArgs {
    pub transport: Transport,
    pub outbound: Arc<Outbound>,
    pub topics: Topics,
    pub limits: LimitsConfig,
    pub shutdown: Shutdown,
}

pub struct SessionState {
    pub(super) transport: Transport,
    pub(super) outbound: Arc<Outbound>,
    pub(super) topics: Topics,
    pub(super) limits: LimitsConfig,
    pub(super) shutdown: Shutdown,
    pub(super) subs: HashMap<TopicName, Sub>,
    /// Publishes and acks of this connection still waiting for their outcome.
    in_flight: Arc<AtomicUsize>,
    /// Set by `post_stop`, which ractor skips when the actor failed.
    stopped: bool,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        for sub in self.subs.values() {
            sub.leave_now();
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
            in_flight: Arc::new(AtomicUsize::new(0)),
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
                options,
                req,
                reply,
            } => {
                let result = match consumer {
                    Some(name) => {
                        state
                            .subscribe_consumer(
                                &myself,
                                topic,
                                name,
                                options,
                                position.after,
                                req.as_deref(),
                                false,
                            )
                            .await
                    }
                    None => {
                        state
                            .subscribe_stream(&myself, topic, position, req.as_deref(), false)
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
                    sub.leave().await;
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
                let Some(guard) = state.admit(req.as_deref()) else {
                    return Ok(());
                };
                let topics = state.topics.clone();
                let outbound = state.outbound.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let frame = match topics.publish(&topic, data, id).await {
                        Ok(ack) => reply_frame(
                            "published",
                            req.as_deref(),
                            serde_json::json!({
                                "topic": topic.as_str(), "offset": ack.offset, "epoch": &*ack.epoch,
                                "id": ack.id, "duplicate": ack.duplicate,
                            }),
                        ),
                        Err(e) => error_frame(req.as_deref(), &e.into()),
                    };
                    let _ = outbound.push(OutFrame::Text(frame));
                });
            }
            SessionMsg::Ack {
                topic,
                consumer,
                ack,
                req,
            } => state.ack(topic, consumer, ack, req),
            SessionMsg::Ping { req } => {
                state.send_text(reply_frame("pong", req.as_deref(), serde_json::json!({})))
            }
            SessionMsg::Poll(req, reply) => {
                let max_bytes = state.limits.max_outbound_queue_bytes;
                let _ = reply.send(poll(&state.topics, req, &state.shutdown, max_bytes).await);
            }
            SessionMsg::Resubscribe { topic, sub } => {
                if state.subs.get(&topic).is_some_and(|s| s.id == sub) {
                    if let Some(mut old) = state.subs.remove(&topic) {
                        let r = match &old.kind {
                            SubKind::Consumer { name } => {
                                let name = name.clone();
                                // The group existed: if the topic's owner does not know
                                // it (its epoch was lost), it starts over from the oldest
                                // retained message, never from the head.
                                state
                                    .subscribe_consumer(
                                        &myself,
                                        topic.clone(),
                                        name,
                                        Default::default(),
                                        Some(0),
                                        None,
                                        true,
                                    )
                                    .await
                            }
                            SubKind::Stream { .. } => {
                                // The cursor is final only once the old replay has stopped.
                                old.stop_replay().await;
                                let position = Position {
                                    after: Some(old.cursor.load(Ordering::Acquire)),
                                    epoch: Some(old.epoch.to_string()),
                                };
                                state
                                    .subscribe_stream(&myself, topic.clone(), position, None, true)
                                    .await
                            }
                        };
                        if let Err(e) = r {
                            let since = *old.retry_since.get_or_insert_with(Instant::now);
                            if e.code == ErrorCode::Unavailable
                                && since.elapsed() < RESUBSCRIBE_PATIENCE
                            {
                                // The topic is changing hands: try again shortly, from the
                                // same cursor.
                                old.kind.finish_replay();
                                state.subs.insert(topic.clone(), old);
                                myself.send_after(RESUBSCRIBE_PAUSE, move || {
                                    SessionMsg::Resubscribe { topic, sub }
                                });
                            } else {
                                tracing::warn!(topic = %topic, error = %e, "resubscribe failed; closing session");
                                state.outbound.close(CloseReason::Internal);
                            }
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
    pub(super) fn send_text(&self, text: String) {
        let _ = self.outbound.push(OutFrame::Text(text));
    }

    pub(super) fn send_error(&self, req: Option<&serde_json::value::RawValue>, e: &ApiError) {
        self.send_text(error_frame(req, e));
    }

    /// Admits one more publish or ack in flight, or answers `rate_limited`: a client that
    /// pipelines without waiting for outcomes cannot grow the node's memory without bound.
    fn admit(&self, req: Option<&serde_json::value::RawValue>) -> Option<InFlightGuard> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let e = ApiError::new(
                crate::protocol::ErrorCode::RateLimited,
                format!(
                    "more than {MAX_IN_FLIGHT} publishes and acks in flight on this connection"
                ),
            );
            self.send_error(req, &e);
            return None;
        }
        Some(InFlightGuard(self.in_flight.clone()))
    }

    /// Forwards an ack of this connection's consumer; errors come back as error frames.
    fn ack(
        &self,
        topic: TopicName,
        consumer: String,
        ack: crate::protocol::consumer::AckRequest,
        req: Option<crate::protocol::frames::ReqId>,
    ) {
        let handle = match self.subs.get(&topic) {
            Some(Sub {
                kind: SubKind::Consumer { name },
                topic,
                ..
            }) if *name == consumer => topic.clone(),
            _ => {
                let e = ApiError::bad_request(format!(
                    "this connection is not consumer {consumer} of {topic}"
                ));
                return self.send_error(req.as_deref(), &e);
            }
        };
        let Some(guard) = self.admit(req.as_deref()) else {
            return;
        };
        let outbound = self.outbound.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = handle.ack(consumer, ack).await {
                let _ = outbound.push(OutFrame::Text(error_frame(req.as_deref(), &e.into())));
            }
        });
    }
}
