//! The run's own cluster: N `starling node` child processes with data under the run
//! directory, and the faults done to them (`kill -9`, `kill -STOP`/`-CONT`, SIGTERM,
//! restart, partitions). Two networks: with [`Netns`] every node runs in its own network
//! namespace on fixed ports and a partition is made of routes; without, the nodes listen
//! on free localhost ports with fault injection on, and a partition goes through each
//! node's chaos endpoint.
//!
//! Only the processes started here are ever signalled, by pid. Dropping the cluster
//! continues the stopped ones, kills every one still running, then removes the namespaces.

use super::netns::{Netns, NetnsError};
use crate::process::{describe, signal, Signal};
use starling_client::formation::{formed, probe};
use starling_client::Client;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a SIGTERMed node may drain before it gets SIGKILL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a partition request may take.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(3);
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// The HTTP, gossip and cluster ports of every node in netns mode (each namespace has its
/// own ports).
const NETNS_PORTS: [u16; 3] = [7400, 7401, 7402];

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("no node {0} in this cluster")]
    UnknownNode(String),
    #[error("the cluster did not form within {0:?}; node logs are in {1}")]
    NotFormed(Duration, String),
    #[error("partition request to {node} failed: {reason}")]
    Partition { node: String, reason: String },
    #[error(transparent)]
    Net(#[from] NetnsError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// One node: its addresses and, while it runs, its process.
struct NodeProc {
    id: String,
    http: SocketAddr,
    child: Option<Child>,
    stopped: bool,
}

pub struct Cluster {
    exe: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    nodes: Vec<NodeProc>,
    http: reqwest::Client,
    /// Dropped after the nodes are killed (fields drop after `Drop::drop`).
    net: Option<Netns>,
}

impl Cluster {
    /// Writes `<dir>/cluster.toml` for `ids` and starts every node, in `net`'s namespaces
    /// if given; returns at once.
    pub fn start(dir: &Path, ids: &[String], net: Option<Netns>) -> Result<Cluster, ClusterError> {
        let logs = dir.join("nodes");
        std::fs::create_dir_all(&logs).map_err(io(format!("create {}", logs.display())))?;
        let addrs: Vec<[SocketAddr; 3]> = match &net {
            Some(net) => (0..ids.len())
                .map(|i| NETNS_PORTS.map(|port| SocketAddr::from((net.node_ip(i), port))))
                .collect(),
            None => ids
                .iter()
                .map(|_| [free_addr(), free_addr(), free_addr()])
                .collect(),
        };
        let mut text = format!(
            "# Written by `starling chaos`.\ndata_dir = {:?}\n\n[chaos]\nfault_injection = {}\n\n",
            dir.join("data").display().to_string(),
            net.is_none()
        );
        for (id, [http, gossip, cluster]) in ids.iter().zip(&addrs) {
            text += &format!(
                "[[nodes]]\nid = \"{id}\"\nhttp_addr = \"{http}\"\ngossip_addr = \"{gossip}\"\ncluster_addr = \"{cluster}\"\n\n"
            );
        }
        let config = dir.join("cluster.toml");
        std::fs::write(&config, text).map_err(io("write the cluster config"))?;
        let http = reqwest::Client::builder()
            .timeout(PARTITION_TIMEOUT)
            .build()
            .map_err(|e| io("build an HTTP client")(std::io::Error::other(e)))?;
        let mut cluster = Cluster {
            exe: std::env::current_exe().map_err(io("find the starling executable"))?,
            config,
            logs,
            nodes: ids
                .iter()
                .zip(&addrs)
                .map(|(id, a)| NodeProc {
                    id: id.clone(),
                    http: a[0],
                    child: None,
                    stopped: false,
                })
                .collect(),
            http,
            net,
        };
        for id in ids {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// `(id, base URL)` of every node.
    pub fn urls(&self) -> Vec<(String, String)> {
        let url = |n: &NodeProc| (n.id.clone(), format!("http://{}", n.http));
        self.nodes.iter().map(url).collect()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Waits until every node is ready and sees every node up.
    pub async fn wait_formed(&self, timeout: Duration) -> Result<(), ClusterError> {
        if self.poll_formed(timeout).await {
            return Ok(());
        }
        let logs = self.logs.display().to_string();
        Err(ClusterError::NotFormed(timeout, logs))
    }

    /// Whether the cluster formed within `timeout`.
    pub async fn poll_formed(&self, timeout: Duration) -> bool {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let clients = self
                .nodes
                .iter()
                .map(|n| Client::with_http(&format!("http://{}", n.http), self.http.clone()));
            let clients: Vec<Client> = clients.collect();
            let probes = futures_util::future::join_all(clients.iter().map(probe)).await;
            if formed(&ids, &probes) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn index(&self, id: &str) -> Result<usize, ClusterError> {
        let found = self.nodes.iter().position(|n| n.id == id);
        found.ok_or_else(|| ClusterError::UnknownNode(id.to_string()))
    }

    fn spawn(&mut self, id: &str) -> Result<(), ClusterError> {
        let i = self.index(id)?;
        let log_path = self.logs.join(format!("{id}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("open {}", log_path.display())))?;
        let err: File = log.try_clone().map_err(io("duplicate the log file"))?;
        let mut command = match &self.net {
            Some(net) => net.command(i, &self.exe),
            None => Command::new(&self.exe),
        };
        command
            .arg("node")
            .arg(id)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            // Its own process group: the terminal's Ctrl-C reaches the runner only, which
            // then cleans up.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(io(format!("start node {id}")))?;
        tracing::info!(node = id, pid = child.id(), "node started");
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.stopped = false;
        Ok(())
    }

    /// Signals node `id`, a child this cluster started and has not reaped yet.
    fn signal(&self, id: &str, sig: Signal) -> Result<(), ClusterError> {
        let node = &self.nodes[self.index(id)?];
        if let Some(pid) = node.child.as_ref().and_then(Child::id) {
            signal(pid, sig);
        }
        Ok(())
    }

    /// `kill -9`, and waits for the exit.
    pub async fn kill(&mut self, id: &str) -> Result<(), ClusterError> {
        self.signal(id, Signal::KILL)?;
        let i = self.index(id)?;
        if let Some(mut child) = self.nodes[i].child.take() {
            let status = child.wait().await.map_err(io("wait for a killed node"))?;
            tracing::info!(node = id, status = %describe(status), "node killed");
        }
        self.nodes[i].stopped = false;
        Ok(())
    }

    /// SIGTERM, and waits for the drain (SIGKILL after `DRAIN_TIMEOUT`).
    pub async fn term(&mut self, id: &str) -> Result<(), ClusterError> {
        let i = self.index(id)?;
        let Some(mut child) = self.nodes[i].child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            signal(pid, Signal::TERM);
        }
        let status = match tokio::time::timeout(DRAIN_TIMEOUT, child.wait()).await {
            Ok(status) => status.map_err(io("wait for a node's drain"))?,
            Err(_) => {
                tracing::warn!(node = id, "node did not drain in time; killing it");
                let _ = child.kill().await;
                child.wait().await.map_err(io("wait for a killed node"))?
            }
        };
        tracing::info!(node = id, status = %describe(status), "node terminated");
        Ok(())
    }

    pub fn restart(&mut self, id: &str) -> Result<(), ClusterError> {
        self.spawn(id)
    }

    pub fn stop(&mut self, id: &str) -> Result<(), ClusterError> {
        self.signal(id, Signal::STOP)?;
        let i = self.index(id)?;
        self.nodes[i].stopped = true;
        Ok(())
    }

    pub fn cont(&mut self, id: &str) -> Result<(), ClusterError> {
        self.signal(id, Signal::CONT)?;
        let i = self.index(id)?;
        self.nodes[i].stopped = false;
        Ok(())
    }

    /// Cuts `isolated` off from the rest: each side drops the other's gossip and cluster
    /// traffic (in the network, or in the node's fault injector). An empty list heals.
    pub async fn partition(&mut self, isolated: &[String]) -> Result<(), ClusterError> {
        if let Some(net) = &mut self.net {
            return Ok(net.partition(isolated).await?);
        }
        for node in &self.nodes {
            let drop: Vec<&String> = match isolated.contains(&node.id) {
                true => self
                    .nodes
                    .iter()
                    .map(|n| &n.id)
                    .filter(|id| !isolated.contains(id))
                    .collect(),
                false => isolated.iter().collect(),
            };
            let url = format!("http://{}/v1/chaos/partition", node.http);
            let body = serde_json::json!({ "drop": drop });
            let failed = |reason: String| ClusterError::Partition {
                node: node.id.clone(),
                reason,
            };
            let res = self.http.post(url).json(&body).send().await;
            match res {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => return Err(failed(format!("HTTP {}", r.status()))),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        Ok(())
    }

    /// SIGCONT to the stopped nodes, SIGTERM to all, and waits for them.
    pub async fn shutdown(&mut self) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in &ids {
            if self.nodes.iter().any(|n| &n.id == id && n.stopped) {
                let _ = self.cont(id);
            }
        }
        let terms = ids.iter().map(|id| {
            let i = self.nodes.iter().position(|n| &n.id == id);
            let child = i.and_then(|i| self.nodes[i].child.take());
            async move {
                if let Some(mut child) = child {
                    if let Some(pid) = child.id() {
                        signal(pid, Signal::TERM);
                    }
                    if tokio::time::timeout(DRAIN_TIMEOUT, child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
            }
        });
        futures_util::future::join_all(terms).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let (true, Some(pid)) = (node.stopped, child.id()) {
                    signal(pid, Signal::CONT);
                }
                let _ = child.start_kill();
            }
        }
    }
}

/// A localhost port free for both TCP and UDP, below the kernel's ephemeral range, so that
/// no outgoing connection takes it while a node is down between a kill and its restart;
/// none is handed out twice in one run.
fn free_addr() -> SocketAddr {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    let mut rng = super::schedule::SplitMix64::new(
        u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
    );
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = rng.range(u64::from(low), u64::from(ephemeral_start) - 1) as u16;
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
