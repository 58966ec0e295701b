//! `GET /v1/ws`: one task per connection reads frames into the session and writes the
//! session's outbound queue in batches, with server pings and a pong deadline.

use super::ws_upgrade::{Handshake, Socket};
use super::AppState;
use crate::auth::Identity;
use crate::delivery::outbound::{CloseReason, OutFrame, Outbound, Subscribed};
use crate::protocol::frames::{error_frame, parse_client_frame, reply_frame, ClientFrame};
use crate::protocol::publish_id::scoped;
use crate::protocol::{ApiError, ErrorCode};
use crate::session::record_deliveries;
use crate::session::{SessionMsg, Transport};
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use warp::reply::Response;

/// Close codes of the contract.
const CLOSE_SHUTDOWN: u16 = 1001;
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_MALFORMED: u16 = 4000;
const CLOSE_SLOW: u16 = 4008;
const CLOSE_UNAUTHORIZED: u16 = 4001;
/// No pong (nor any frame) within `ws_pong_timeout_ms` of a ping (an extension of the
/// contract's codes): reconnect and resume.
const CLOSE_NO_PONG: u16 = 4009;

pub fn upgrade(handshake: Handshake, identity: Identity, state: AppState) -> Response {
    let frame_limit = state.config.limits.max_ws_frame_bytes;
    let tracker = state.connections.clone();
    handshake.accept(frame_limit, move |socket| {
        tracker.track_future(serve(socket, state, identity))
    })
}

fn close_with(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    }))
}

async fn serve(socket: Socket, state: AppState, identity: Identity) {
    let leeway = state.config.auth.leeway_secs;
    let outbound = Outbound::new(state.config.limits.max_outbound_queue_bytes);
    let session = match state.sessions.start(Transport::Ws, outbound.clone()).await {
        Ok(s) => s,
        Err(_) => {
            let mut socket = socket;
            let _ = socket
                .send(close_with(CLOSE_SHUTDOWN, "node shutting down"))
                .await;
            return;
        }
    };
    let conn = Conn {
        state,
        outbound,
        session: session.clone(),
        malformed: 0,
        expiry: identity.ends_at(leeway),
        identity,
    };
    let span = tracing::debug_span!("ws", session = %session.get_id());
    let _ = tracing::Instrument::instrument(conn.run(socket), span).await;
    session.stop(None);
}

struct Conn {
    state: AppState,
    outbound: Arc<Outbound>,
    session: ActorRef<SessionMsg>,
    malformed: u32,
    /// Who the connection's current token says it is: every subscribe, publish and ack is
    /// checked against it.
    identity: Identity,
    /// When that token expires, unless an `auth` frame replaces it first.
    expiry: Option<Instant>,
}

enum Step {
    Continue,
    Close(u16, &'static str),
    End,
}

impl Conn {
    async fn run(mut self, socket: Socket) {
        let hb = &self.state.config.heartbeat;
        let ping_every = Duration::from_millis(hb.ws_ping_interval_ms);
        let pong_timeout = Duration::from_millis(hb.ws_pong_timeout_ms);
        let write_timeout = ping_every + pong_timeout;
        let shutdown = self.state.sessions.shutdown().clone();
        let (mut tx, mut rx) = socket.split();
        let mut batch = Vec::new();
        let mut next_ping = Instant::now() + ping_every;
        let mut pong_deadline: Option<Instant> = None;
        let step = loop {
            let step = tokio::select! {
                incoming = rx.next() => {
                    pong_deadline = None;
                    match incoming {
                        Some(Ok(msg)) => self.on_message(msg).await,
                        Some(Err(e)) => {
                            if is_capacity(&e) {
                                Step::Close(CLOSE_TOO_BIG, "frame too big")
                            } else {
                                Step::End
                            }
                        }
                        None => Step::End,
                    }
                }
                drained = self.outbound.drain(&mut batch) => match drained {
                    Ok(()) => {
                        record_deliveries(Transport::Ws, &batch);
                        let write = async {
                            for frame in batch.drain(..) {
                                tx.feed(render(frame)).await?;
                            }
                            tx.flush().await
                        };
                        match tokio::time::timeout(write_timeout, write).await {
                            Ok(Ok(())) => Step::Continue,
                            _ => Step::End,
                        }
                    }
                    Err(reason) => close_for(reason),
                },
                _ = tokio::time::sleep_until(next_ping) => {
                    next_ping = Instant::now() + ping_every;
                    if pong_deadline.is_none() {
                        pong_deadline = Some(Instant::now() + pong_timeout);
                    }
                    match tokio::time::timeout(write_timeout, tx.send(Message::Ping(bytes::Bytes::new()))).await {
                        Ok(Ok(())) => Step::Continue,
                        _ => Step::End,
                    }
                }
                _ = sleep_until_opt(pong_deadline) => {
                    tracing::debug!("no pong in time; closing the connection");
                    Step::Close(CLOSE_NO_PONG, "no pong in time: reconnect and resume")
                }
                _ = sleep_until_opt(self.expiry) => {
                    tracing::debug!(subject = ?self.identity.subject(), "token expired; closing the connection");
                    Step::Close(CLOSE_UNAUTHORIZED, "token expired: reconnect with a fresh token")
                }
                _ = shutdown.wait() => Step::Close(CLOSE_SHUTDOWN, "node shutting down"),
            };
            match step {
                Step::Continue => continue,
                other => break other,
            }
        };
        self.outbound.close(CloseReason::Gone);
        if let Step::Close(code, reason) = step {
            // A client that did not answer pings may not read either: don't wait long.
            let close_timeout = if code == CLOSE_NO_PONG {
                Duration::from_secs(1)
            } else {
                pong_timeout
            };
            let close = tx.send(close_with(code, reason));
            let _ = tokio::time::timeout(close_timeout, close).await;
            // Give the client a moment to answer the close, then drop.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while rx.next().await.is_some() {}
            })
            .await;
        }
    }

    async fn on_message(&mut self, msg: Message) -> Step {
        let text = match &msg {
            Message::Close(_) => return Step::End,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Step::Continue,
            Message::Binary(_) => {
                return self.malformed(
                    None,
                    ApiError::bad_request("binary frames are not supported; send JSON text"),
                )
            }
            Message::Text(text) => text.as_str(),
        };
        let limits = &self.state.config.limits;
        let frame = match parse_client_frame(text, limits.max_message_bytes) {
            Ok(f) => f,
            Err(e) => return self.malformed(e.req, e.error),
        };
        self.malformed = 0;
        let req = crate::protocol::frames::frame_req(text);
        if let Err(e) = self.allowed(&frame) {
            let _ = self
                .outbound
                .push(OutFrame::Text(error_frame(req.as_deref(), &e)));
            return Step::Continue;
        }
        let msg = match frame {
            ClientFrame::Auth { token } => {
                self.refresh(&token, req.as_deref()).await;
                return Step::Continue;
            }
            ClientFrame::Subscribe {
                topic,
                position,
                consumer,
                options,
            } => SessionMsg::Subscribe {
                topic,
                position,
                consumer,
                options,
                req,
                reply: None,
            },
            ClientFrame::Unsubscribe { topic } => SessionMsg::Unsubscribe { topic, req },
            ClientFrame::Publish { topic, data, id } => SessionMsg::Publish {
                topic,
                data,
                id: id.map(|id| scoped(self.identity.subject(), id)),
                req,
            },
            ClientFrame::Ack {
                topic,
                consumer,
                ack,
            } => SessionMsg::Ack {
                topic,
                consumer,
                ack,
                req,
            },
            ClientFrame::Ping => SessionMsg::Ping { req },
        };
        if self.session.cast(msg).is_err() {
            return Step::Close(CLOSE_INTERNAL, "session ended");
        }
        Step::Continue
    }

    /// Whether the current token grants what `frame` asks.
    fn allowed(&self, frame: &ClientFrame) -> Result<(), ApiError> {
        match frame {
            ClientFrame::Subscribe { topic, .. } | ClientFrame::Ack { topic, .. } => {
                self.identity.may_subscribe(topic.as_str())
            }
            ClientFrame::Publish { topic, .. } => self.identity.may_publish(topic.as_str()),
            ClientFrame::Unsubscribe { .. } | ClientFrame::Ping | ClientFrame::Auth { .. } => {
                Ok(())
            }
        }
    }

    /// `{"type":"auth","token":...}`: a valid token for the same subject replaces the
    /// current one (`authed`, with its expiry); anything else is an error frame and the
    /// current token stays.
    async fn refresh(&mut self, token: &str, req: Option<&serde_json::value::RawValue>) {
        let reply = match self.state.auth.identify(Some(token)).await {
            Ok(id)
                if id.subject() != self.identity.subject() && self.identity.subject().is_some() =>
            {
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "a refreshed token must have the connection's subject",
                ))
            }
            Ok(id) => {
                self.expiry = id.ends_at(self.state.config.auth.leeway_secs);
                let exp = id.expires_at();
                self.identity = id;
                Ok(reply_frame(
                    "authed",
                    req,
                    serde_json::json!({ "exp": exp }),
                ))
            }
            Err(e) => Err(e.to_api()),
        };
        let text = reply.unwrap_or_else(|e| error_frame(req, &e));
        let _ = self.outbound.push(OutFrame::Text(text));
    }

    fn malformed(&mut self, req: Option<crate::protocol::frames::ReqId>, error: ApiError) -> Step {
        self.malformed += 1;
        let _ = self
            .outbound
            .push(OutFrame::Text(error_frame(req.as_deref(), &error)));
        if self.malformed >= self.state.config.limits.max_malformed_frames {
            return Step::Close(CLOSE_MALFORMED, "too many malformed frames");
        }
        Step::Continue
    }
}

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn close_for(reason: CloseReason) -> Step {
    match reason {
        CloseReason::SlowConsumer => {
            Step::Close(CLOSE_SLOW, "slow consumer: resume from your last offset")
        }
        CloseReason::Internal => Step::Close(CLOSE_INTERNAL, "session failed"),
        CloseReason::Gone => Step::End,
    }
}

fn is_capacity(e: &WsError) -> bool {
    matches!(e, WsError::Capacity(_))
}

/// A delivery's frame is shared by every subscriber: sending it copies no bytes.
fn render(frame: OutFrame) -> Message {
    match frame {
        OutFrame::Message(d) => match Utf8Bytes::try_from(d.ws_frame.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::text(String::from_utf8_lossy(&d.ws_frame).into_owned()),
        },
        OutFrame::Text(t) => Message::text(t),
        OutFrame::Subscribed(s) => Message::text(subscribed_frame(&s)),
    }
}

fn subscribed_frame(s: &Subscribed) -> String {
    let mut fields = serde_json::json!({
        "topic": s.topic.as_str(),
        "epoch": &*s.epoch,
        "head": s.head,
        "first": s.first,
        "recovered": s.plan.recovered(),
    });
    if let Some(reason) = s.plan.reset {
        fields["reason"] = serde_json::Value::from(reason.as_str());
    }
    if let Some(c) = &s.consumer {
        fields["consumer"] = serde_json::Value::from(c.as_str());
        fields["ack_floor"] = serde_json::Value::from(s.plan.start - 1);
    }
    reply_frame("subscribed", s.req.as_deref(), fields)
}
