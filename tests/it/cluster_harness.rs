//! Multi-node harness: a cluster of real `starling node` processes on free ports, one config
//! listing them all, and helpers to kill, hang, resume and restart nodes and to wait for
//! what the others see.
//!
//! ```ignore
//! let mut c = Cluster::start(3, "").await;          // every node ready, all see all up
//! publish_ok(c.node(0), "t", json!(1)).await;       // harness.rs helpers take c.node(i)
//! c.kill9(1);
//! c.wait_status(0, 1, "down").await;
//! c.restart(1);
//! c.wait_formed().await;
//! ```
//!
//! Nodes are indexed from 0; node `i` has id `n{i+1}`.
//!
//! Who owns a topic is what the nodes say (`owner` in `GET /v1/topics/{t}`: the leader of the
//! topic's shard), never computed here: `create_topic` publishes once and reads it. The
//! second half of this file checks what publishers and subscribers saw across a failover:
//! `Publisher` (a steady stream of publishes with ids, retried under the same id until
//! acknowledged), `Seen`/`read_until` for a WebSocket subscriber, and the assertions.

#![allow(dead_code)]

use crate::harness::{enc, wait_for, TestNode, WsClient, WsEvent, DEADLINE};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Describes a cluster before it starts.
pub struct ClusterBuilder {
    n: usize,
    extra: String,
    cluster: String,
    per_node: Vec<String>,
    seeds: Option<Vec<usize>>,
}

impl ClusterBuilder {
    /// TOML sections added to every node's config (not `[cluster]`: see `cluster`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// Lines under `[cluster]` for every node, e.g. `gossip_interval_ms = 50`.
    pub fn cluster(mut self, lines: &str) -> Self {
        self.cluster.push_str(lines);
        self.cluster.push('\n');
        self
    }

    /// More lines under `[cluster]` for node `i` only, e.g. `cookie = "wrong"`. A key must
    /// not also be set by `cluster`.
    pub fn node_cluster(mut self, i: usize, lines: &str) -> Self {
        self.per_node[i].push_str(lines);
        self.per_node[i].push('\n');
        self
    }

    /// Every node gossips only through these nodes (default: through all of them).
    pub fn seeds(mut self, nodes: &[usize]) -> Self {
        self.seeds = Some(nodes.to_vec());
        self
    }

    /// Starts every node and returns at once.
    pub fn spawn(self) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let ids: Vec<String> = (1..=self.n).map(|i| format!("n{i}")).collect();
        let gossip: Vec<SocketAddr> = (0..self.n).map(|_| free_addr()).collect();
        let transport: Vec<SocketAddr> = (0..self.n).map(|_| free_addr()).collect();
        let mut common = format!(
            "data_dir = {:?}\n{}\n",
            data.display().to_string(),
            self.extra
        );
        for i in 0..self.n {
            common.push_str(&format!(
                "[[nodes]]\nid = \"{}\"\nhttp_addr = \"127.0.0.1:0\"\ngossip_addr = \"{}\"\ncluster_addr = \"{}\"\n\n",
                ids[i], gossip[i], transport[i]
            ));
        }
        let seeds = self.seeds.as_ref().map(|s| {
            let list: Vec<String> = s.iter().map(|&i| format!("\"{}\"", gossip[i])).collect();
            format!("seeds = [{}]\n", list.join(", "))
        });
        let configs: Vec<PathBuf> = (0..self.n)
            .map(|i| {
                let text = format!(
                    "{common}[cluster]\n{}{}{}",
                    seeds.as_deref().unwrap_or(""),
                    self.cluster,
                    self.per_node[i]
                );
                let path = tmp.path().join(format!("{}.toml", ids[i]));
                std::fs::write(&path, text).expect("write config");
                path
            })
            .collect();
        let specs: Vec<(&str, &Path)> = (0..self.n)
            .map(|i| (ids[i].as_str(), configs[i].as_path()))
            .collect();
        let nodes = TestNode::start_configured(&specs, tmp.path());
        Cluster {
            nodes,
            ids,
            state: vec![Run::Running; self.n],
            data,
            _tmp: tmp,
        }
    }

    /// Starts every node and waits until each is ready and sees every other one up.
    pub async fn start(self) -> Cluster {
        let cluster = self.spawn();
        cluster.wait_formed().await;
        cluster.wait_settled().await;
        cluster
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Running,
    Stopped,
    Dead,
}

/// A running cluster. Dropping it resumes stopped nodes and kills every node.
pub struct Cluster {
    nodes: Vec<TestNode>,
    ids: Vec<String>,
    state: Vec<Run>,
    /// The `data_dir` of the config every node shares.
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn builder(n: usize) -> ClusterBuilder {
        ClusterBuilder {
            n,
            extra: String::new(),
            cluster: String::new(),
            per_node: vec![String::new(); n],
            seeds: None,
        }
    }

    /// `n` nodes with `extra` TOML sections; returns once the cluster has formed.
    pub async fn start(n: usize, extra: &str) -> Cluster {
        Cluster::builder(n).extra(extra).start().await
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    pub fn http(&self, i: usize) -> String {
        self.nodes[i].http()
    }

    /// Node `i`'s data directory (`<data_dir>/<node id>`, as the node derives it). Wipe it
    /// only while the node is down.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.data.join(&self.ids[i])
    }

    /// `kill -9`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.state[i] = Run::Dead;
    }

    /// `kill -STOP`: hung, sockets open.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
        self.state[i] = Run::Stopped;
    }

    /// `kill -CONT`.
    pub fn cont(&mut self, i: usize) {
        self.nodes[i].cont();
        self.state[i] = Run::Running;
    }

    /// SIGTERM; waits for the exit.
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        let status = self.nodes[i].terminate();
        self.state[i] = Run::Dead;
        status
    }

    /// Starts a killed or terminated node again (same id, config and data).
    pub fn restart(&mut self, i: usize) {
        assert_eq!(self.state[i], Run::Dead, "restart of a node that runs");
        self.nodes[i].restart();
        self.state[i] = Run::Running;
    }

    /// Node `i`'s `GET /v1/cluster`, or `None` if it does not answer.
    pub async fn view(&self, i: usize) -> Option<Value> {
        let res = http_client()
            .get(format!("{}/v1/cluster", self.http(i)))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// How node `observer` sees node `member` (`"up"`, `"down"`, ...).
    pub async fn status(&self, observer: usize, member: usize) -> Option<String> {
        let view = self.view(observer).await?;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == self.ids[member])
            .and_then(|m| m["status"].as_str().map(str::to_string))
    }

    /// Whether node `i` answers `/readyz` with 200.
    pub async fn ready(&self, i: usize) -> bool {
        let url = format!("{}/readyz", self.http(i));
        matches!(http_client().get(url).send().await, Ok(r) if r.status() == 200)
    }

    /// Waits until `observer` sees `member` in `status`; returns how long that took.
    pub async fn wait_status(&self, observer: usize, member: usize, status: &str) -> Duration {
        let start = Instant::now();
        let what = format!(
            "{} to see {} {status}",
            self.ids[observer], self.ids[member]
        );
        wait_for(&what, || async {
            (self.status(observer, member).await.as_deref() == Some(status)).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Waits until every node sees every shard led by its preferred node: leadership moves
    /// there after the first elections, and a test that reads a topic's owner once must
    /// not see it move for that reason.
    pub async fn wait_settled(&self) {
        for i in 0..self.len() {
            wait_for(
                &format!(
                    "{} to see every shard led by its preferred node",
                    self.ids[i]
                ),
                || async {
                    let view = self.view(i).await?;
                    let shards = view["shards"].as_array()?;
                    let settled = !shards.is_empty()
                        && shards
                            .iter()
                            .all(|s| s["leader"].is_string() && s["leader"] == s["preferred"]);
                    settled.then_some(())
                },
            )
            .await;
        }
    }

    /// Waits until every running node is ready and sees every other running node up.
    pub async fn wait_formed(&self) {
        let running: Vec<usize> = (0..self.len())
            .filter(|&i| self.state[i] == Run::Running)
            .collect();
        for &i in &running {
            wait_for(&format!("{} to be ready", self.ids[i]), || async {
                self.ready(i).await.then_some(())
            })
            .await;
            for &j in running.iter().filter(|&&j| j != i) {
                self.wait_status(i, j, "up").await;
            }
        }
    }
}

/// Ownership as the nodes report it, and publishes that ride out a failover.
impl Cluster {
    /// The nodes that run (neither killed, terminated nor stopped).
    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.state[i] == Run::Running)
            .collect()
    }

    /// The two nodes other than `i` in a three-node cluster, in index order.
    pub fn others(&self, i: usize) -> (usize, usize) {
        let rest: Vec<usize> = (0..self.len()).filter(|&j| j != i).collect();
        (rest[0], rest[1])
    }

    /// Node index of the owner node `via` names for `topic` (`GET /v1/topics/{t}`), or
    /// `None` if it does not answer 200 or names no configured node.
    pub async fn owner_seen_by(&self, via: usize, topic: &str) -> Option<usize> {
        let url = format!("{}/v1/topics/{}", self.http(via), enc(topic));
        let res = http_client().get(url).send().await.ok()?;
        if res.status() != 200 {
            return None;
        }
        let info: Value = res.json().await.ok()?;
        let owner = info["owner"].as_str()?;
        self.ids.iter().position(|id| id == owner)
    }

    /// Waits until the nodes `among` all name the same owner for `topic`, one for which `ok`
    /// holds; returns it.
    pub async fn wait_owner_among(
        &self,
        among: &[usize],
        topic: &str,
        ok: impl Fn(usize) -> bool,
    ) -> usize {
        let ok = &ok;
        let what = format!("{among:?} to agree on the owner of {topic}");
        wait_for(&what, || async {
            let mut agreed = None;
            for &i in among {
                let owner = self.owner_seen_by(i, topic).await?;
                if agreed.is_some_and(|a| a != owner) {
                    return None;
                }
                agreed = Some(owner);
            }
            agreed.filter(|&o| ok(o))
        })
        .await
    }

    /// Waits until every running node names the same owner for `topic`, one for which `ok`
    /// holds; returns it.
    pub async fn wait_owner(&self, topic: &str, ok: impl Fn(usize) -> bool) -> usize {
        self.wait_owner_among(&self.running(), topic, ok).await
    }

    /// Publishes `data` under the idempotency key `id` through node `via`, again under the
    /// same key after every error, timeout or non-2xx answer, until one is accepted (201, or
    /// 200 `duplicate` when an earlier try was written but its answer lost). Returns the
    /// accepted reply's status and body.
    pub async fn publish_id(&self, via: usize, topic: &str, data: Value, id: &str) -> (u16, Value) {
        let url = format!("{}/v1/topics/{}/messages", self.http(via), enc(topic));
        let body = json!({"data": data, "id": id}).to_string();
        let client = publish_client();
        let what = format!("{} to accept publish {id} to {topic}", self.ids[via]);
        let (url, body, client) = (&url, &body, &client);
        wait_for(&what, || async move {
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .ok()?;
            let status = res.status().as_u16();
            if !res.status().is_success() {
                return None;
            }
            let reply: Value = res.json().await.ok()?;
            Some((status, reply))
        })
        .await
    }

    /// Creates `topic` with one publish of `first` (id `<topic>.first`) through node `via`,
    /// then waits until every running node names the same owner. Returns the publish reply
    /// (offset 1) and the owner's index.
    pub async fn create_topic(&self, via: usize, topic: &str, first: Value) -> (Value, usize) {
        let (_, reply) = self
            .publish_id(via, topic, first, &format!("{topic}.first"))
            .await;
        assert_eq!(reply["offset"], 1, "{topic} already existed: {reply}");
        assert!(reply["epoch"].as_str().is_some(), "{reply}");
        let owner = self.wait_owner(topic, |_| true).await;
        (reply, owner)
    }

    /// Creates topics `<prefix>-0`, `<prefix>-1`, ... (one publish each) until every node
    /// owns one or `tries` names were used; returns one (topic, owner) per owner found, in
    /// node order. Which node leads which shard is the cluster's business: a node may lead
    /// none.
    pub async fn topics_by_owner(&self, prefix: &str, tries: usize) -> Vec<(String, usize)> {
        let mut found: Vec<Option<String>> = vec![None; self.len()];
        for i in 0..tries {
            if found.iter().all(Option::is_some) {
                break;
            }
            let topic = format!("{prefix}-{i}");
            let (_, owner) = self
                .create_topic(i % self.len(), &topic, json!("probe"))
                .await;
            found[owner].get_or_insert(topic);
        }
        let topics: Vec<(String, usize)> = found
            .into_iter()
            .enumerate()
            .filter_map(|(owner, t)| Some((t?, owner)))
            .collect();
        assert!(!topics.is_empty(), "no topic got an owner");
        topics
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (node, state) in self.nodes.iter().zip(&self.state) {
            if *state == Run::Stopped {
                node.cont();
            }
        }
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// For publishes, which may wait for a new shard leader: a try that takes longer is given up
/// and sent again under the same id.
pub fn publish_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// A localhost address whose port is free for both TCP and UDP. Ports come from below the
/// kernel's ephemeral range, so no port-0 bind or outgoing connection elsewhere in the test
/// run can take one between this check and the node binding it; none is handed out twice.
fn free_addr() -> SocketAddr {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut taken = TAKEN.lock().expect("port registry");
    loop {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = low + ((seed >> 33) % u64::from(ephemeral_start - low)) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !taken.contains(&port)
            && TcpListener::bind(addr).is_ok()
            && UdpSocket::bind(addr).is_ok()
        {
            taken.insert(port);
            return addr;
        }
    }
}

// ---- What publishers and subscribers saw ----

/// What one WebSocket subscriber saw after its `subscribed` reply, in order.
#[derive(Debug, Clone)]
pub enum Seen {
    Message {
        epoch: String,
        offset: u64,
        id: String,
    },
    /// A further `subscribed` frame: the server started the stream over.
    Reset { epoch: String, recovered: bool },
}

/// Reads a WebSocket subscriber's frames until `done` holds for what it saw so far.
pub async fn read_until(ws: &mut WsClient, seen: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    while !done(seen) {
        match ws.next_event().await {
            WsEvent::Json(v) if v["type"] == "message" => seen.push(Seen::Message {
                epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
                offset: v["offset"].as_u64().expect("offset"),
                id: v["id"].as_str().unwrap_or_default().to_string(),
            }),
            WsEvent::Json(v) if v["type"] == "subscribed" => seen.push(Seen::Reset {
                epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
                recovered: v["recovered"].as_bool().unwrap_or(true),
            }),
            WsEvent::Json(_) => {}
            WsEvent::Closed(code) => panic!("subscriber closed ({code:?}); saw {seen:?}"),
        }
    }
}

/// Whether `seen` holds the message at `epoch`:`offset`.
pub fn saw(seen: &[Seen], epoch: &str, offset: u64) -> bool {
    seen.iter().any(
        |s| matches!(s, Seen::Message { epoch: e, offset: o, .. } if e == epoch && *o == offset),
    )
}

/// The ids `seen` delivered, in order.
pub fn seen_ids(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Message { id, .. } => Some(id.as_str()),
            Seen::Reset { .. } => None,
        })
        .collect()
}

/// A subscriber that started at `after=0` saw one unbroken stream: no reset or new
/// `subscribed`, every message in `epoch`, offsets exactly `1..=upto` in order (no hole, no
/// repeat), and no id twice.
pub fn assert_one_stream(seen: &[Seen], epoch: &str, upto: u64) {
    let mut want = 1;
    let mut ids = HashSet::new();
    for s in seen {
        match s {
            Seen::Reset {
                epoch: e,
                recovered,
            } => {
                panic!("the stream started over (epoch {e}, recovered {recovered}): {seen:?}")
            }
            Seen::Message {
                epoch: e,
                offset,
                id,
            } => {
                assert_eq!(e, epoch, "a message in another epoch: {seen:?}");
                assert_eq!(*offset, want, "a hole or repeat at offset {want}: {seen:?}");
                assert!(ids.insert(id.as_str()), "id {id} delivered twice: {seen:?}");
                want += 1;
            }
        }
    }
    assert_eq!(want, upto + 1, "the stream stops before {upto}: {seen:?}");
}

/// One publish a `Publisher` had acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The publisher's sequence number; the publish's id is `p-<k>`.
    pub k: u64,
    pub id: String,
    pub epoch: String,
    pub offset: u64,
    /// 201, or 200 for a retry of a publish that was written but whose answer was lost.
    pub status: u16,
    pub duplicate: bool,
    /// When the try that was acknowledged was sent, and when its answer came.
    pub sent: Instant,
    pub acked: Instant,
}

/// Publishes `p-1`, `p-2`, ... through one node, one at a time, a try every 5 ms; a try
/// that fails (connection error, timeout, non-2xx) is sent again under the same id, so every
/// id it moved past was acknowledged exactly once.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Publisher {
    /// Starts publishing to `topic` through the node at `url` (`Cluster::http`).
    pub fn start(url: String, topic: String) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let client = publish_client();
            let url = format!("{url}/v1/topics/{}/messages", enc(&topic));
            // The offered load: a try every 5 ms (a pace, not a wait for state).
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0u64;
            // A new id only while running; the one in progress is finished even after stop.
            while !s.load(Ordering::Relaxed) {
                k += 1;
                let id = format!("p-{k}");
                let body = json!({"data": {"k": k}, "id": id}).to_string();
                let giving_up = Instant::now() + DEADLINE;
                loop {
                    if Instant::now() > giving_up {
                        return Err(format!("publish {id} was never acknowledged"));
                    }
                    pace.tick().await;
                    let sent = Instant::now();
                    let res = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(res) = res else { continue };
                    let status = res.status().as_u16();
                    if !res.status().is_success() {
                        continue;
                    }
                    let Ok(v) = res.json::<Value>().await else {
                        continue;
                    };
                    a.lock().unwrap().push(Ack {
                        k,
                        id: v["id"].as_str().unwrap_or_default().to_string(),
                        epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
                        offset: v["offset"].as_u64().unwrap_or(0),
                        status,
                        duplicate: v["duplicate"].as_bool().unwrap_or(false),
                        sent,
                        acked: Instant::now(),
                    });
                    break;
                }
            }
            Ok(())
        });
        Publisher { stop, acks, task }
    }

    pub fn acked(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Waits until `n` acknowledged publishes satisfy `which`; returns all acknowledged so far.
    pub async fn wait_acks(&self, n: usize, which: impl Fn(&Ack) -> bool) -> Vec<Ack> {
        let which = &which;
        wait_for(&format!("{n} more acknowledged publishes"), || async move {
            let acks = self.acked();
            (acks.iter().filter(|a| which(a)).count() >= n).then_some(acks)
        })
        .await
    }

    /// Stops after the publish in progress is acknowledged; returns every acknowledgement.
    pub async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let done = self.task.await.expect("publisher task");
        if let Err(e) = done {
            panic!("{e}; acknowledged: {:?}", self.acks.lock().unwrap());
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

/// Every acknowledgement is for its own id, in `epoch`, and the offsets are
/// `first, first + 1, ...` in the order of the ids: nothing written twice (a retry written
/// again would leave a hole after it), nothing skipped, the epoch never changed.
pub fn assert_acks_continue(acks: &[Ack], epoch: &str, first: u64) {
    assert!(!acks.is_empty(), "nothing was acknowledged");
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a.k, i as u64 + 1, "acknowledgements out of order: {acks:?}");
        assert_eq!(
            a.id,
            format!("p-{}", a.k),
            "acknowledged under another id: {a:?}"
        );
        assert_eq!(a.epoch, epoch, "the epoch changed: {a:?}");
        assert_eq!(
            a.offset,
            first + i as u64,
            "offsets do not continue at {a:?} (acknowledgements {acks:?})"
        );
        assert!(
            a.status == 201 || (a.status == 200 && a.duplicate),
            "acknowledged with {a:?}"
        );
    }
}

/// Every acknowledged publish reached the subscriber with the id it was acknowledged with.
pub fn assert_saw_acks(seen: &[Seen], acks: &[Ack]) {
    let delivered: HashMap<(&str, u64), &str> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Message { epoch, offset, id } => Some(((epoch.as_str(), *offset), id.as_str())),
            Seen::Reset { .. } => None,
        })
        .collect();
    for a in acks {
        assert_eq!(
            delivered.get(&(a.epoch.as_str(), a.offset)).copied(),
            Some(a.id.as_str()),
            "acknowledged {a:?} not delivered as such: {seen:?}"
        );
    }
}

/// The longest time between two consecutive acknowledgements at least one of which came
/// after `from`, and when the gap began.
pub fn longest_silence(acks: &[Ack], from: Instant) -> (Duration, Option<Instant>) {
    acks.windows(2)
        .filter(|w| w[1].acked >= from)
        .map(|w| (w[1].acked - w[0].acked, Some(w[0].acked)))
        .max_by_key(|(d, _)| *d)
        .unwrap_or((Duration::ZERO, None))
}
