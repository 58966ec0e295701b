//! `starling up`: a local cluster from one config file, started, formed, supervised and
//! stopped as a whole.

use crate::harness::{wait_for, DEADLINE, POLL_INTERVAL};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Forming a cluster includes gossip rounds and the join; allow more than one plain wait.
const FORM_DEADLINE: Duration = Duration::from_secs(40);

/// One node's addresses (gossip and cluster ones are used in clustered configs).
struct NodeAddrs {
    id: String,
    http: SocketAddr,
    gossip: SocketAddr,
    cluster: SocketAddr,
}

/// Free ports for `n` nodes: every socket stays bound until all are picked, so none repeats.
fn free_nodes(n: usize) -> Vec<NodeAddrs> {
    let (mut tcp, mut udp, mut taken) = (Vec::new(), Vec::new(), HashSet::new());
    let pick_tcp = |tcp: &mut Vec<TcpListener>, taken: &mut HashSet<u16>| loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let addr = l.local_addr().expect("tcp addr");
        tcp.push(l);
        if taken.insert(addr.port()) {
            return addr;
        }
    };
    let mut nodes = Vec::new();
    for i in 1..=n {
        let http = pick_tcp(&mut tcp, &mut taken);
        let cluster = pick_tcp(&mut tcp, &mut taken);
        let gossip = loop {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let addr = s.local_addr().expect("udp addr");
            udp.push(s);
            if taken.insert(addr.port()) {
                break addr;
            }
        };
        nodes.push(NodeAddrs {
            id: format!("n{i}"),
            http,
            gossip,
            cluster,
        });
    }
    nodes
}

/// A config for `nodes`, with data under `dir`; `clustered` adds gossip and cluster addresses.
fn config(dir: &std::path::Path, nodes: &[NodeAddrs], clustered: bool) -> String {
    let mut text = format!("data_dir = {:?}\n", dir.join("data").display().to_string());
    for n in nodes {
        text += &format!("[[nodes]]\nid = \"{}\"\nhttp_addr = \"{}\"\n", n.id, n.http);
        if clustered {
            text += &format!(
                "gossip_addr = \"{}\"\ncluster_addr = \"{}\"\n",
                n.gossip, n.cluster
            );
        }
    }
    text
}

/// A running `starling up`, with its stdout and stderr lines.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Up {
    /// Starts `up` on a config file with `text`, written in `tmp`.
    fn start(tmp: tempfile::TempDir, text: &str) -> Up {
        let path = tmp.path().join("cluster.toml");
        std::fs::write(&path, text).expect("write config");
        Up::run(tmp, path)
    }

    fn run(tmp: tempfile::TempDir, config: PathBuf) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("up")
            .arg("--config")
            .arg(&config)
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starling up");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Up {
            child,
            lines,
            seen: Vec::new(),
            _tmp: tmp,
        }
    }

    /// Waits for an output line containing `needle` and returns it.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The pid `up` printed for node `id`.
    fn node_pid(&mut self, id: &str) -> i32 {
        let needle = format!("{id} (pid ");
        let line = self.wait_line(&needle, DEADLINE);
        let rest = line.split(&needle).nth(1).expect("pid");
        rest.split(')')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid number")
    }

    fn signal(&self, sig: libc::c_int) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for `up` to exit, then collects the rest of its output.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`starling up` did not exit; output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        status
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Up {
    /// A failed test still stops the nodes: `up` stops them on SIGTERM.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL_INTERVAL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn readyz(addr: SocketAddr) -> u16 {
    let res = reqwest::get(format!("http://{addr}/readyz")).await;
    res.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn wait_port_closed(addr: SocketAddr) {
    wait_for(&format!("{addr} to stop answering"), || async move {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_err()
            .then_some(())
    })
    .await;
}

/// Starts `up` on `nodes`, waits until it reports the cluster formed, checks each node is
/// ready, then stops it with Ctrl-C and checks every node is gone.
async fn form_then_ctrl_c(nodes: Vec<NodeAddrs>, clustered: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = config(tmp.path(), &nodes, clustered);
    let mut up = Up::start(tmp, &text);
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let formed = up.wait_line("cluster formed", FORM_DEADLINE);
    let plural = if nodes.len() == 1 { "" } else { "s" };
    let want = format!("{} node{plural} up ({})", nodes.len(), ids.join(", "));
    assert!(formed.contains(&want), "{formed}");
    for n in &nodes {
        let addr = n.http;
        up.wait_line(
            &format!("{}  http://{addr}  ws://{addr}/v1/ws", n.id),
            DEADLINE,
        );
        assert_eq!(readyz(addr).await, 200, "{} /readyz", n.id);
    }
    up.signal(libc::SIGINT);
    let status = up.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        up.output()
    );
    for n in &nodes {
        assert!(
            up.output().contains(&format!("{} (exit code 0)", n.id)),
            "{} did not exit cleanly:\n{}",
            n.id,
            up.output()
        );
        wait_port_closed(n.http).await;
    }
}

#[tokio::test]
async fn one_node_forms_at_once_and_ctrl_c_stops_it() {
    form_then_ctrl_c(free_nodes(1), false).await;
}

#[tokio::test]
async fn three_nodes_form_a_cluster_and_ctrl_c_stops_them_all() {
    form_then_ctrl_c(free_nodes(3), true).await;
}

#[tokio::test]
async fn a_node_that_dies_is_reported_and_the_others_keep_running() {
    let nodes = free_nodes(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = config(tmp.path(), &nodes, true);
    let mut up = Up::start(tmp, &text);
    let n2 = up.node_pid("n2");
    for id in ["n1", "n2"] {
        up.wait_line(&format!("{id} | starling node {id} listening on"), DEADLINE);
    }
    unsafe {
        libc::kill(n2, libc::SIGKILL);
    }
    let report = up.wait_line("n2 exited", DEADLINE);
    assert!(report.contains("signal 9"), "{report}");
    assert!(report.contains("node n2 --config"), "{report}");
    let n1 = nodes[0].http;
    let health = reqwest::get(format!("http://{n1}/healthz")).await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    up.signal(libc::SIGINT);
    let status = up.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        up.output()
    );
    wait_port_closed(n1).await;
}

#[tokio::test]
async fn a_node_that_cannot_start_stops_the_others() {
    let nodes = free_nodes(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = config(tmp.path(), &nodes, true);
    let _squatter = TcpListener::bind(nodes[1].http).expect("hold n2's port");
    let mut up = Up::start(tmp, &text);
    let status = up.wait_exit(DEADLINE);
    assert!(!status.success(), "up succeeded:\n{}", up.output());
    assert!(
        up.output()
            .contains("node n2 exited before it started listening"),
        "{}",
        up.output()
    );
    wait_port_closed(nodes[0].http).await;
}

#[test]
fn a_missing_or_bad_config_fails_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.toml");
    let mut up = Up::run(tmp, missing);
    assert!(!up.wait_exit(DEADLINE).success());
    assert!(
        up.output().contains("cannot read config file"),
        "{}",
        up.output()
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = Up::start(tmp, "[retention]\nmax_messages = 0\n");
    assert!(!up.wait_exit(DEADLINE).success());
    assert!(
        up.output().contains("retention.max_messages"),
        "{}",
        up.output()
    );
}
