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

#![allow(dead_code)]

use crate::harness::{wait_for, TestNode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Mutex;
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
        let ids: Vec<String> = (1..=self.n).map(|i| format!("n{i}")).collect();
        let gossip: Vec<SocketAddr> = (0..self.n).map(|_| free_addr()).collect();
        let transport: Vec<SocketAddr> = (0..self.n).map(|_| free_addr()).collect();
        let mut common = format!(
            "data_dir = {:?}\n{}\n",
            tmp.path().join("data").display().to_string(),
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
        let nodes = (0..self.n)
            .map(|i| TestNode::start_configured(&ids[i], &configs[i], tmp.path()))
            .collect();
        Cluster {
            nodes,
            ids,
            state: vec![Run::Running; self.n],
            _tmp: tmp,
        }
    }

    /// Starts every node and waits until each is ready and sees every other one up.
    pub async fn start(self) -> Cluster {
        let cluster = self.spawn();
        cluster.wait_formed().await;
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
