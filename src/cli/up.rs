//! `starling up`: start every node of a config file as a child process, show when the cluster
//! has formed, and stop them all gracefully on Ctrl-C or SIGTERM.
//!
//! Supervision: `up` watches only the processes it started. A node that exits is reported,
//! never restarted, and the others keep running; `up` ends when it is told to stop or when no
//! node is left. Each child runs in its own process group, so the terminal's Ctrl-C reaches
//! `up` alone, which then sends SIGTERM to every live child and waits for their drains.

use super::say;
use crate::config::{Config, ConfigError};
use futures_util::future::join_all;
use starling_client::formation::{formed, nodes_up, probe};
use starling_client::Client;
use starling_tools::process::{self, describe};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the children may take to drain after SIGTERM before they get SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the exits after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the nodes are asked whether the cluster has formed.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// An unchanged wait is reported again this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// What a node prints on stdout once it serves (see `run_node`).
const LISTENING: &str = "listening on http://";

/// Why `up` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start node {id}: {source}")]
    Spawn { id: String, source: std::io::Error },
    #[error("node {id} exited before it started listening ({status}); its output is above")]
    NodeFailed { id: String, status: String },
    #[error("every node has exited")]
    AllExited,
}

/// Where each node serves HTTP, once it has said so: filled in by the output forwarders,
/// read by the supervisor and the formation watcher.
type Addrs = Arc<watch::Sender<Vec<Option<SocketAddr>>>>;

/// A child that exited, with how.
type Exit = (usize, String);

/// One child process.
struct Proc {
    id: String,
    /// `None` once it has exited.
    pid: Option<u32>,
    exit: Option<String>,
}

/// The running children and what `up` listens to.
struct Up {
    nodes: Vec<Proc>,
    exits: mpsc::UnboundedReceiver<Exit>,
    addrs: Addrs,
    watcher: JoinHandle<()>,
    sigint: Signal,
    sigterm: Signal,
    /// How to restart a node by hand: the command as invoked, and the config path as given.
    restart: (String, String),
}

/// Runs `starling up`: returns once every child has stopped.
pub async fn run(config_path: &Path) -> Result<(), UpError> {
    let config = Config::load(config_path)?;
    let absolute = std::path::absolute(config_path).map_err(|source| ConfigError::Read {
        path: config_path.to_path_buf(),
        source,
    })?;
    let io = |what| move |source| UpError::Io { what, source };
    let exe = std::env::current_exe().map_err(io("find the starling executable"))?;
    // Listen before the first child exists, so that no signal finds `up` deaf.
    let sigint = signal(SignalKind::interrupt()).map_err(io("listen for SIGINT"))?;
    let sigterm = signal(SignalKind::terminate()).map_err(io("listen for SIGTERM"))?;
    let ids: Vec<String> = config.nodes.iter().map(|n| n.id.clone()).collect();
    let (tx, exits) = mpsc::unbounded_channel();
    let addrs: Addrs = Arc::new(watch::Sender::new(vec![None; ids.len()]));
    let argv0 = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned());
    let mut up = Up {
        nodes: Vec::new(),
        exits,
        watcher: tokio::spawn(watch_formation(ids.clone(), addrs.subscribe())),
        addrs,
        sigint,
        sigterm,
        restart: (
            argv0.unwrap_or_else(|| "starling".into()),
            config_path.display().to_string(),
        ),
    };
    let width = ids.iter().map(String::len).max().unwrap_or(0);
    let mut started = Vec::new();
    for (index, id) in ids.into_iter().enumerate() {
        let mut command = Command::new(&exe);
        command.arg("node").arg(&id).arg("--config").arg(&absolute);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: the terminal's Ctrl-C reaches `up` only.
        command.process_group(0).kill_on_drop(true);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                up.stop().await;
                return Err(UpError::Spawn { id, source });
            }
        };
        let pid = child.id();
        started.push(format!("{id} (pid {})", pid.unwrap_or_default()));
        let prefix = format!("{id:<width$} | ");
        tokio::spawn(watch_child(
            index,
            prefix,
            child,
            up.addrs.clone(),
            tx.clone(),
        ));
        up.nodes.push(Proc {
            id,
            pid,
            exit: None,
        });
    }
    drop(tx);
    let from = config_path.display();
    say(&format!("started from {from}: {}", started.join(", ")));
    let result = up.supervise().await;
    up.stop().await;
    result
}

impl Up {
    /// Reports the children's exits until a signal asks to stop (`Ok`), a node fails to
    /// start, or none is left.
    async fn supervise(&mut self) -> Result<(), UpError> {
        loop {
            let (node, status) = tokio::select! {
                _ = self.sigint.recv() => return Ok(()),
                _ = self.sigterm.recv() => return Ok(()),
                exit = self.exits.recv() => exit.ok_or(UpError::AllExited)?,
            };
            self.exited(node, status.clone());
            let id = self.nodes[node].id.clone();
            if self.addrs.borrow()[node].is_none() {
                return Err(UpError::NodeFailed { id, status });
            }
            let (exe, config) = &self.restart;
            let rest = match self.live().is_empty() {
                true => "no node is left",
                false => "the others keep running",
            };
            say(&format!(
                "{id} exited ({status}); {rest}. Restart it with: {exe} node {id} --config {config}"
            ));
            if self.live().is_empty() {
                return Err(UpError::AllExited);
            }
        }
    }

    fn exited(&mut self, node: usize, status: String) {
        let p = &mut self.nodes[node];
        p.pid = None;
        p.exit = Some(status);
    }

    /// SIGTERM to every live child, SIGKILL to those still running after `STOP_TIMEOUT` (or
    /// at a second Ctrl-C), then a summary.
    async fn stop(&mut self) {
        self.watcher.abort();
        let live = self.live();
        if !live.is_empty() {
            let secs = STOP_TIMEOUT.as_secs();
            let live = live.join(", ");
            say(&format!(
                "stopping {live}: SIGTERM sent, waiting up to {secs} s for the drain"
            ));
            self.signal_all(process::Signal::TERM);
            if !self.wait_exits(STOP_TIMEOUT).await {
                say(&format!(
                    "{} still running: sending SIGKILL",
                    self.live().join(", ")
                ));
                self.signal_all(process::Signal::KILL);
                self.wait_exits(KILL_TIMEOUT).await;
            }
        }
        let summary = self.nodes.iter().map(|p| match &p.exit {
            Some(status) => format!("{} ({status})", p.id),
            None => format!("{} (still running?)", p.id),
        });
        say(&format!(
            "stopped: {}",
            summary.collect::<Vec<_>>().join(", ")
        ));
    }

    /// Waits until every child has exited (`true`), the timeout passes or Ctrl-C comes again.
    async fn wait_exits(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.live().is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.sigint.recv() => return false,
                exit = self.exits.recv() => match exit {
                    Some((node, status)) => self.exited(node, status),
                    None => break,
                },
            }
        }
        true
    }

    fn live(&self) -> Vec<&str> {
        let live = self.nodes.iter().filter(|p| p.pid.is_some());
        live.map(|p| p.id.as_str()).collect()
    }

    /// Signals every child not yet reported exited.
    fn signal_all(&self, sig: process::Signal) {
        for pid in self.nodes.iter().filter_map(|p| p.pid) {
            process::signal(pid, sig);
        }
    }
}

/// Forwards a child's output line by line, then reports its exit once the output is done.
async fn watch_child(
    node: usize,
    prefix: String,
    mut child: Child,
    addrs: Addrs,
    exits: mpsc::UnboundedSender<Exit>,
) {
    let out = child.stdout.take().map(|s| {
        let listening = Some((node, addrs));
        tokio::spawn(forward(s, prefix.clone(), false, listening))
    });
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(forward(s, prefix, true, None)));
    let status = match child.wait().await {
        Ok(status) => describe(status),
        Err(e) => format!("status unknown: {e}"),
    };
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    let _ = exits.send((node, status));
}

/// Copies lines to our stdout or stderr behind `prefix`; on stdout, notes the address of
/// the node's "listening on" line.
async fn forward(
    stream: impl AsyncRead + Unpin,
    prefix: String,
    to_stderr: bool,
    listening: Option<(usize, Addrs)>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
        } else {
            say(&format!("{prefix}{line}"));
        }
        if let (Some((node, addrs)), Some(addr)) = (&listening, listening_addr(line)) {
            addrs.send_modify(|a| a[*node] = Some(addr));
        }
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(LISTENING)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Once every node listens, reports progress until every node is ready and sees every
/// listed node up.
async fn watch_formation(ids: Vec<String>, mut addrs: watch::Receiver<Vec<Option<SocketAddr>>>) {
    let all: Vec<SocketAddr> = match addrs.wait_for(|a| a.iter().all(Option::is_some)).await {
        Ok(all) => all.iter().flatten().copied().collect(),
        Err(_) => return,
    };
    let nodes: Vec<Client> = all
        .iter()
        .map(|a| Client::new(&format!("http://{a}")).timeout(PROBE_TIMEOUT))
        .collect();
    let started = Instant::now();
    let (mut shown, mut shown_at) = (String::new(), started);
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let probes = join_all(nodes.iter().map(probe)).await;
        if formed(&ids, &probes) {
            return say(&formation_message(&ids, &all));
        }
        let (up, n) = (nodes_up(&ids, &probes).len(), ids.len());
        let status = format!("waiting for the cluster to form: {up}/{n} nodes up");
        if status != shown || shown_at.elapsed() >= PROGRESS_EVERY {
            say(&format!("{status} ({} s)", started.elapsed().as_secs()));
            (shown, shown_at) = (status, Instant::now());
        }
    }
}

/// The formed cluster: the nodes' URLs and a publish/subscribe to try.
fn formation_message(ids: &[String], addrs: &[SocketAddr]) -> String {
    let n = ids.len();
    let s = if n == 1 { "" } else { "s" };
    let list = ids.join(", ");
    let mut text = format!("cluster formed: {n} node{s} up ({list}); Ctrl-C stops every node\n");
    let width = ids.iter().map(String::len).max().unwrap_or(0);
    for (id, addr) in ids.iter().zip(addrs) {
        text += &format!("  {id:<width$}  http://{addr}  ws://{addr}/v1/ws\n");
    }
    let (first, last) = (addrs[0], addrs[n - 1]);
    text += &format!(
        "try it:  curl -N http://{first}/v1/topics/chat/events   # subscribe on {}\n         \
         curl http://{last}/v1/topics/chat/messages -d '{{\"data\":{{\"text\":\"hello\"}}}}'   # publish on {}",
        ids[0],
        ids[n - 1]
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_lists_a_local_three_node_cluster() {
        let c = Config::parse(include_str!("../../cluster.toml")).expect("shipped config");
        assert_eq!(c.nodes.len(), 3);
        assert!(c.clustered());
        assert_eq!(c.seeds().len(), 3);
        assert!(c.nodes.iter().all(|n| n.http_addr.ip().is_loopback()));
    }

    #[test]
    fn the_listening_line_gives_the_address() {
        let addr = listening_addr("starling node n1 listening on http://127.0.0.1:8080");
        assert_eq!(addr, "127.0.0.1:8080".parse().ok());
        assert_eq!(
            listening_addr("  WebSocket  ws://127.0.0.1:8080/v1/ws"),
            None
        );
    }
}
