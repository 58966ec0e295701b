//! Server-Sent Events: `GET /v1/topics/{topic}/events` and `GET /v1/events?topic=..`.
//!
//! A pump task drains the session's outbound queue and renders whole batches as one body
//! chunk. warp's `sse::Event` renders one event per chunk; to write a batch (and our own
//! field layout) we put the rendered events in an event's comment, which warp writes as
//! `:` + text: the result is an empty comment line followed by our events, which every SSE
//! parser reads as exactly those events.

use super::reply::{self, consumer_options, parse_consumer, query_get, query_pairs, query_u64};
use super::server::ConnHandle;
use super::AppState;
use crate::auth::Identity;
use crate::delivery::outbound::{CloseReason, OutFrame, Outbound, Subscribed};
use crate::protocol::consumer::ConsumerOptions;
use crate::protocol::frames::{parse_epoch, Position};
use crate::protocol::sse_id::{parse_multi, parse_single, render_multi, EventPos};
use crate::protocol::{ApiError, TopicName};
use crate::session::record_deliveries;
use crate::session::supervisor::StopOnDrop;
use crate::session::{SessionMsg, Transport};
use crate::shutdown::Shutdown;
use ractor::rpc::CallResult;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use warp::reply::Response;
use warp::sse::Event;
use warp::Reply;

/// `GET /v1/topics/{topic}/events`
pub async fn topic_events(
    topic: String,
    identity: Identity,
    state: AppState,
    query: String,
    last_event_id: Option<String>,
    conn: Option<ConnHandle>,
) -> Response {
    let run = async {
        let topic = TopicName::parse(&topic)?;
        let q = query_pairs(&query);
        if let Some(name) = query_get(&q, "consumer") {
            // The server keeps a consumer's position: Last-Event-ID does not apply.
            let consumer = Some((parse_consumer(name)?, consumer_options(&q)?));
            let position = Position {
                after: query_u64(&q, "after")?,
                epoch: None,
            };
            let streams = vec![(topic, position)];
            return start(&state, streams, false, consumer, conn, &identity).await;
        }
        let id = last_event_id.or_else(|| query_get(&q, "last_event_id").map(str::to_string));
        let position = match id.filter(|s| !s.is_empty()) {
            Some(id) => {
                let pos = parse_single(&id)?;
                Position {
                    after: Some(pos.offset),
                    epoch: Some(pos.epoch),
                }
            }
            None => Position {
                after: query_u64(&q, "after")?,
                epoch: parse_epoch(query_get(&q, "epoch").map(str::to_string))?,
            },
        };
        start(
            &state,
            vec![(topic, position)],
            false,
            None,
            conn,
            &identity,
        )
        .await
    };
    run.await.unwrap_or_else(|e| reply::error(&e))
}

/// `GET /v1/events?topic=a&topic=b`
pub async fn multi_events(
    identity: Identity,
    state: AppState,
    query: String,
    last_event_id: Option<String>,
    conn: Option<ConnHandle>,
) -> Response {
    let run = async {
        let q = query_pairs(&query);
        let mut topics: Vec<(TopicName, Position)> = Vec::new();
        for (k, v) in &q {
            if k == "topic" {
                let t = TopicName::parse(v)?;
                if !topics.iter().any(|(x, _)| *x == t) {
                    topics.push((t, Position::default()));
                }
            }
        }
        if topics.is_empty() {
            return Err(ApiError::bad_request("give at least one `topic` parameter"));
        }
        let id = last_event_id.or_else(|| query_get(&q, "last_event_id").map(str::to_string));
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            for (topic, pos) in parse_multi(&id)? {
                if let Some(entry) = topics.iter_mut().find(|(t, _)| *t == topic) {
                    entry.1 = Position {
                        after: Some(pos.offset),
                        epoch: Some(pos.epoch),
                    };
                }
            }
        }
        start(&state, topics, true, None, conn, &identity).await
    };
    run.await.unwrap_or_else(|e| reply::error(&e))
}

async fn start(
    state: &AppState,
    topics: Vec<(TopicName, Position)>,
    multi: bool,
    consumer: Option<(String, ConsumerOptions)>,
    conn: Option<ConnHandle>,
    identity: &Identity,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    if topics.len() > limits.max_subscriptions_per_connection {
        return Err(ApiError::bad_request(format!(
            "a stream may hold at most {} topics",
            limits.max_subscriptions_per_connection
        )));
    }
    let outbound = Outbound::new(limits.max_outbound_queue_bytes);
    let session = StopOnDrop(
        state
            .sessions
            .start(Transport::Sse, outbound.clone())
            .await?,
    );
    for (topic, position) in topics {
        let r = session
            .0
            .call(
                |reply| SessionMsg::Subscribe {
                    topic,
                    position,
                    consumer: consumer.as_ref().map(|c| c.0.clone()),
                    options: consumer.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
                    req: None,
                    reply: Some(reply),
                },
                None,
            )
            .await;
        let r = match r {
            Ok(CallResult::Success(r)) => r,
            _ => Err(ApiError::internal()),
        };
        r?;
    }
    let (tx, mut rx) = mpsc::channel::<Event>(4);
    let pump = Pump {
        outbound,
        _session: session,
        tx,
        multi,
        positions: Vec::new(),
        keepalive: Duration::from_millis(state.config.heartbeat.sse_keepalive_ms),
        shutdown: state.sessions.shutdown().clone(),
        conn,
        ends_at: identity.ends_at(state.config.auth.leeway_secs),
    };
    tokio::spawn(pump.run());
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<Event, Infallible>))
    });
    let reply = warp::sse::reply(stream);
    let reply = warp::reply::with_header(reply, "x-accel-buffering", "no");
    Ok(reply.into_response())
}

struct Pump {
    outbound: Arc<Outbound>,
    /// Ends the session when the pump ends.
    _session: StopOnDrop,
    tx: mpsc::Sender<Event>,
    multi: bool,
    positions: Vec<(TopicName, EventPos)>,
    keepalive: Duration,
    shutdown: Shutdown,
    /// The stream's connection: a slow consumer's is dropped at once, so that its socket
    /// and the data queued in it are freed, not written out over minutes.
    conn: Option<ConnHandle>,
    /// When the stream's token expires (plus the leeway): the stream ends then, and the
    /// client reconnects with a fresh token.
    ends_at: Option<tokio::time::Instant>,
}

impl Pump {
    async fn run(mut self) {
        let mut batch = Vec::new();
        let retry = Event::default().retry(Duration::from_millis(3000));
        if self.tx.send(retry).await.is_ok() {
            loop {
                let event = tokio::select! {
                    r = self.outbound.drain(&mut batch) => match r {
                        Ok(()) => {
                            let text = self.render(&mut batch);
                            if text.is_empty() {
                                continue;
                            }
                            Event::default().comment(text)
                        }
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep(self.keepalive) => Event::default().comment("keepalive"),
                    _ = self.shutdown.wait() => break,
                    _ = self.tx.closed() => break,
                    _ = super::ws::sleep_until_opt(self.ends_at) => {
                        tracing::debug!("SSE stream's token expired; ending the stream");
                        break;
                    }
                };
                // A client that does not read must not hold the pump (or shutdown) hostage.
                let sent = tokio::select! {
                    r = self.tx.send(event) => r.is_ok(),
                    _ = self.shutdown.wait() => false,
                    _ = self.outbound.wait_closed() => false,
                };
                if !sent {
                    break;
                }
            }
        }
        if self.outbound.closed() == Some(CloseReason::SlowConsumer) {
            tracing::debug!("slow SSE consumer: dropping its connection");
            if let Some(conn) = &self.conn {
                conn.kill();
            }
        }
        self.outbound.close(CloseReason::Gone);
    }

    fn set_position(&mut self, topic: &TopicName, pos: EventPos) {
        match self.positions.iter_mut().find(|(t, _)| t == topic) {
            Some(entry) => entry.1 = pos,
            None => self.positions.push((topic.clone(), pos)),
        }
    }

    fn event_id(&self) -> String {
        if self.multi {
            render_multi(self.positions.iter().map(|(t, p)| (t, p)))
        } else {
            self.positions
                .first()
                .map(|(_, p)| p.render())
                .unwrap_or_default()
        }
    }

    /// Renders frames as SSE events; see the module doc for the leading newline.
    fn render(&mut self, batch: &mut Vec<OutFrame>) -> String {
        record_deliveries(Transport::Sse, batch);
        let mut out = String::new();
        for frame in batch.drain(..) {
            match frame {
                OutFrame::Message(d) => {
                    let pos = EventPos {
                        offset: d.offset,
                        epoch: d.epoch.to_string(),
                    };
                    self.set_position(&d.topic, pos);
                    let _ = write!(out, "\nid: {}\nevent: message\ndata: ", self.event_id());
                    out.push_str(std::str::from_utf8(&d.envelope).unwrap_or("null"));
                    out.push('\n');
                }
                OutFrame::Subscribed(s) => self.subscribed(&s, &mut out),
                OutFrame::Text(_) => {}
            }
        }
        if out.is_empty() {
            return out;
        }
        // `out` is "\n<event>\n\n<event>\n": drop the last newline, warp's comment line
        // ends with one and the event with another.
        out.pop();
        out
    }

    fn subscribed(&mut self, s: &Subscribed, out: &mut String) {
        let pos = EventPos {
            offset: s.plan.start.saturating_sub(1),
            epoch: s.epoch.to_string(),
        };
        self.set_position(&s.topic, pos);
        if let Some(reason) = s.plan.reset {
            let data = serde_json::json!({
                "topic": s.topic.as_str(),
                "epoch": &*s.epoch,
                "first": s.first,
                "head": s.head,
                "reason": reason.as_str(),
            });
            let _ = write!(
                out,
                "\nid: {}\nevent: reset\ndata: {}\n",
                self.event_id(),
                data
            );
        }
    }
}
