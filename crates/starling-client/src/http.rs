//! HTTP against one node: publish, long poll, the SSE stream, topic, consumer and cluster
//! info, readiness.

use crate::sse::{SseEvent, SseParser};
use crate::types::{ClusterInfo, ConsumerInfo, PollReply, Published, TopicInfo};
use crate::{topic_path, Error, Resume};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::time::Duration;

/// One node's HTTP API. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// The limit of each request (a long poll gets its hold on top); `None`: no limit.
    timeout: Option<Duration>,
    /// A JWT sent with every request (`[auth]` on the node).
    token: Option<String>,
}

/// A long poll's position and limits.
#[derive(Clone, Debug, Default)]
pub struct Poll {
    /// Messages with an offset above this one.
    pub after: u64,
    /// The epoch `after` belongs to: a mismatch answers `recovered:false`.
    pub epoch: Option<String>,
    /// How long the node holds the poll when nothing comes (0: a short poll).
    pub hold_s: u64,
    pub limit: u64,
}

impl Client {
    /// A client of the node at `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        Client::with_http(base, reqwest::Client::new())
    }

    /// A client that shares `http`'s connection pool.
    pub fn with_http(base: &str, http: reqwest::Client) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            timeout: None,
            token: None,
        }
    }

    /// Sends `token` (a JWT) as `Authorization: Bearer` with every request.
    pub fn token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// Each request fails with [`Error::Timeout`] after `limit`.
    pub fn timeout(mut self, limit: Duration) -> Client {
        self.timeout = Some(limit);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(&self, path: &str, extra: Duration) -> reqwest::RequestBuilder {
        self.limit(self.http.get(format!("{}{path}", self.base)), extra)
    }

    fn limit(&self, req: reqwest::RequestBuilder, extra: Duration) -> reqwest::RequestBuilder {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        match self.timeout {
            Some(t) => req.timeout(t + extra),
            None => req,
        }
    }

    /// Publishes `data` (JSON text) to `topic`; `id` makes a retry idempotent.
    pub async fn publish(
        &self,
        topic: &str,
        data: &serde_json::Value,
        id: Option<&str>,
    ) -> Result<Published, Error> {
        let mut body = serde_json::json!({ "data": data });
        if let Some(id) = id {
            body["id"] = id.into();
        }
        let url = format!("{}/v1/topics/{}/messages", self.base, topic_path(topic));
        let req = self.limit(self.http.post(url).json(&body), Duration::ZERO);
        answer(req.send().await).await
    }

    /// Publishes a body already rendered as `{"data":...}` (the bench's hot path).
    pub async fn publish_body(&self, topic: &str, body: String) -> Result<(), Error> {
        let url = format!("{}/v1/topics/{}/messages", self.base, topic_path(topic));
        let req = self.limit(self.http.post(url).body(body), Duration::ZERO);
        let res = req.send().await.map_err(Error::transport)?;
        match res.status().is_success() {
            true => Ok(()),
            false => Err(api_error(res).await),
        }
    }

    /// One long poll of `topic`.
    pub async fn poll(&self, topic: &str, p: &Poll) -> Result<PollReply, Error> {
        let epoch = match &p.epoch {
            Some(e) => format!("&epoch={e}"),
            None => String::new(),
        };
        let path = format!(
            "/v1/topics/{}/messages?after={}{epoch}&timeout={}&limit={}",
            topic_path(topic),
            p.after,
            p.hold_s,
            p.limit
        );
        let hold = Duration::from_secs(p.hold_s);
        answer(self.get(&path, hold).send().await).await
    }

    /// Opens `topic`'s SSE stream: live only (`after` and `resume` both `None`), after an
    /// offset, or resumed from a position (`Last-Event-ID`). Returns once the stream has
    /// begun, that is once the subscription is live.
    pub async fn events(
        &self,
        topic: &str,
        after: Option<u64>,
        resume: &Resume,
    ) -> Result<Events, Error> {
        let mut url = format!("{}/v1/topics/{}/events", self.base, topic_path(topic));
        if let (None, Some(a)) = (resume, after) {
            url += &format!("?after={a}");
        }
        // A request limit would end the stream: only its start is limited, below.
        let mut req = self.http.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((epoch, offset)) = resume {
            req = req.header("Last-Event-ID", format!("{offset}:{epoch}"));
        }
        let start = async {
            let res = req.send().await.map_err(Error::transport)?;
            if !res.status().is_success() {
                return Err(api_error(res).await);
            }
            let mut body: Body = Box::pin(res.bytes_stream());
            let mut parser = SseParser::default();
            match body.next().await {
                Some(Ok(b)) => parser.push(&b),
                Some(Err(e)) => return Err(Error::transport(e)),
                None => return Err(Error::Ended),
            }
            Ok(Events {
                body,
                parser,
                idle: None,
            })
        };
        match self.timeout {
            Some(t) => tokio::time::timeout(t, start)
                .await
                .map_err(|_| Error::Timeout)?,
            None => start.await,
        }
    }

    /// `GET /v1/topics/{topic}`.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo, Error> {
        let path = format!("/v1/topics/{}", topic_path(topic));
        answer(self.get(&path, Duration::ZERO).send().await).await
    }

    /// `GET /v1/topics/{topic}/consumers/{name}`.
    pub async fn consumer(&self, topic: &str, name: &str) -> Result<ConsumerInfo, Error> {
        let path = format!(
            "/v1/topics/{}/consumers/{}",
            topic_path(topic),
            topic_path(name)
        );
        answer(self.get(&path, Duration::ZERO).send().await).await
    }

    /// `GET /v1/cluster`: the members this node knows.
    pub async fn cluster(&self) -> Result<ClusterInfo, Error> {
        answer(self.get("/v1/cluster", Duration::ZERO).send().await).await
    }

    /// `POST /v1/admin/shards/{shard}/recover`: starts `shard` anew from the node's copy
    /// (an operator's last resort when a majority of its voters lost their data; `force`:
    /// even while some of them are merely unreachable); the reply names the shard's new
    /// generation and each topic's new epoch.
    pub async fn recover_shard(&self, shard: u32, force: bool) -> Result<serde_json::Value, Error> {
        let url = format!(
            "{}/v1/admin/shards/{shard}/recover?force={force}",
            self.base
        );
        let req = self.limit(self.http.post(url), Duration::ZERO);
        answer(req.send().await).await
    }

    /// Whether `GET /readyz` succeeds.
    pub async fn ready(&self) -> bool {
        let res = self.get("/readyz", Duration::ZERO).send().await;
        matches!(res, Ok(r) if r.status().is_success())
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An SSE stream, as [`SseEvent`]s.
pub struct Events {
    body: Body,
    parser: SseParser,
    /// How long the stream may send nothing at all (not even its keepalive comment).
    idle: Option<Duration>,
}

impl Events {
    /// Fails the stream with [`Error::Timeout`] once nothing came for `limit`: the node
    /// sends a comment every 15 s when idle, so silence means a dead connection.
    pub fn idle_limit(mut self, limit: Duration) -> Events {
        self.idle = Some(limit);
        self
    }

    /// The next event; [`Error::Ended`] when the node ends the stream.
    pub async fn next(&mut self) -> Result<SseEvent, Error> {
        loop {
            if let Some(ev) = self.parser.next_event() {
                return Ok(ev);
            }
            let chunk = match self.idle {
                Some(limit) => tokio::time::timeout(limit, self.body.next())
                    .await
                    .map_err(|_| Error::Timeout)?,
                None => self.body.next().await,
            };
            match chunk {
                Some(Ok(b)) => self.parser.push(&b),
                Some(Err(e)) => return Err(Error::transport(e)),
                None => return Err(Error::Ended),
            }
        }
    }
}

/// A reply's JSON on success, else the protocol's error.
async fn answer<T: DeserializeOwned>(sent: reqwest::Result<reqwest::Response>) -> Result<T, Error> {
    let res = sent.map_err(Error::transport)?;
    if !res.status().is_success() {
        return Err(api_error(res).await);
    }
    let status = res.status().as_u16();
    let text = res.text().await.map_err(Error::transport)?;
    serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("HTTP {status}: {e}")))
}

/// The error a failed reply carries: `{"error":{"code","message"}}`.
async fn api_error(res: reqwest::Response) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<Body>(&text) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => ("unknown".to_string(), text),
    };
    Error::Api {
        status,
        code,
        message,
    }
}
