//! The recorded workload: publishers (HTTP and WebSocket), stream subscribers (WebSocket,
//! SSE, long poll) and consumer-group members (WebSocket), each attached to a node and
//! moving to another when theirs fails. Every request, reply and delivery goes into the
//! [`Recorder`].
//!
//! Tasks: one per client. Publishers stop at `End`; subscribers and consumers run until
//! the settle phase has read the final state.

mod consumer;
mod poll;
pub mod publish;
pub mod recorder;
mod sse;
mod ws_sub;

use crate::chaos::history::Transport;
use crate::chaos::scenario::Scenario;
use recorder::Recorder;
use starling_client::{Client, WsConn};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The consumer group every consumer client joins.
pub const CONSUMER: &str = "chaos";
/// How long a publish, a connect or a subscribe may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause before a retry or a reconnect.
const BACKOFF: Duration = Duration::from_millis(250);
/// How long consumers may take to join before publishing starts.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What every client task shares.
#[derive(Clone)]
pub struct Ctx {
    pub rec: Arc<Recorder>,
    /// `(id, base URL)` of every node.
    pub nodes: Arc<Vec<(String, String)>>,
    pub http: reqwest::Client,
}

impl Ctx {
    fn id(&self, node: usize) -> &str {
        &self.nodes[node % self.nodes.len()].0
    }

    fn url(&self, node: usize) -> &str {
        &self.nodes[node % self.nodes.len()].1
    }

    /// `node`'s HTTP API, each request limited to the request timeout.
    pub fn client(&self, node: usize) -> Client {
        Client::with_http(self.url(node), self.http.clone()).timeout(REQUEST_TIMEOUT)
    }

    fn next(&self, node: usize) -> usize {
        (node + 1) % self.nodes.len()
    }

    /// Opens a WebSocket to `node`, within the request timeout.
    async fn dial(&self, node: usize) -> Result<WsConn, String> {
        let dial = WsConn::connect(self.url(node), REQUEST_TIMEOUT).await;
        dial.map_err(|e| e.to_string())
    }
}

/// Sleeps for the backoff; `false` if `stop` came first.
async fn backoff(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(BACKOFF) => true,
    }
}

/// The running client tasks.
pub struct Workload {
    publishers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    stop_publishing: CancellationToken,
    stop_reading: CancellationToken,
}

impl Workload {
    /// Starts the subscribers and consumers, waits until every consumer has joined its
    /// group (so that the group's position covers the first publish), then starts the
    /// publishers.
    pub async fn start(ctx: &Ctx, scenario: &Scenario) -> Workload {
        let stop_reading = CancellationToken::new();
        let stop_publishing = CancellationToken::new();
        let topics = scenario.topic_names();
        let mut readers = Vec::new();
        let mut joined = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            let stop = stop_reading.clone();
            readers.push(tokio::spawn(ws_sub::run(
                ctx.clone(),
                format!("ws-{topic}"),
                topic.clone(),
                i,
                stop.clone(),
            )));
            readers.push(tokio::spawn(sse::run(
                ctx.clone(),
                format!("sse-{topic}"),
                topic.clone(),
                i + 1,
                stop.clone(),
            )));
            readers.push(tokio::spawn(poll::run(
                ctx.clone(),
                format!("poll-{topic}"),
                topic.clone(),
                i + 2,
                stop.clone(),
            )));
            for k in 0..2 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                joined.push(rx);
                let member = consumer::Member {
                    sub: format!("cg-{topic}-{k}"),
                    topic: topic.clone(),
                    home: i + k,
                };
                readers.push(tokio::spawn(consumer::run(
                    ctx.clone(),
                    member,
                    tx,
                    stop.clone(),
                )));
            }
        }
        let all_joined = futures_util::future::join_all(joined);
        if tokio::time::timeout(JOIN_TIMEOUT, all_joined)
            .await
            .is_err()
        {
            tracing::warn!("not every consumer joined in time; publishing anyway");
        }
        let w = &scenario.workload;
        let interval = Duration::from_secs_f64(1.0 / f64::from(w.publish_rate));
        let mut publishers = Vec::new();
        let kinds = (0..w.http_publishers)
            .map(|k| (Transport::Http, format!("hp{k}")))
            .chain((0..w.ws_publishers).map(|k| (Transport::Ws, format!("wp{k}"))));
        for (n, (via, client)) in kinds.enumerate() {
            let p = publish::Publisher {
                client,
                via,
                home: n,
                topics: topics.clone(),
                interval,
            };
            publishers.push(tokio::spawn(publish::run(
                ctx.clone(),
                p,
                stop_publishing.clone(),
            )));
        }
        Workload {
            publishers,
            readers,
            stop_publishing,
            stop_reading,
        }
    }

    /// Stops publishing: no new publish or retry starts; those in flight get their answer
    /// (or time out) first.
    pub async fn stop_publishers(&mut self) {
        self.stop_publishing.cancel();
        for task in self.publishers.drain(..) {
            let _ = task.await;
        }
    }

    /// Stops every subscriber and consumer.
    pub async fn stop(mut self) {
        self.stop_publishers().await;
        self.stop_reading.cancel();
        for task in self.readers.drain(..) {
            let _ = task.await;
        }
    }
}
