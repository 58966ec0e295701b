//! A single node of the bench's own: this executable run as `starling node n1` from a
//! temporary config (HTTP on a free port, data in a temporary directory), stopped with
//! SIGTERM when done.

use super::BenchError;
use crate::process::{signal, Signal};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long the node may take to print its address, and to drain when stopped.
const NODE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct OwnNode {
    child: tokio::process::Child,
    pub url: String,
    dir: PathBuf,
}

impl OwnNode {
    /// Starts a node whose config is the defaults plus `extra` (TOML sections).
    pub async fn start(tag: &str, extra: &str) -> Result<OwnNode, BenchError> {
        let dir = std::env::temp_dir().join(format!("starling-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(BenchError::io(format!("cannot create {}", dir.display())))?;
        let config = format!(
            "data_dir = {:?}\n{extra}\n[[nodes]]\nid = \"n1\"\nhttp_addr = \"127.0.0.1:0\"\n",
            dir.join("data").display().to_string()
        );
        let path = dir.join("cluster.toml");
        std::fs::write(&path, config).map_err(BenchError::io("cannot write the node's config"))?;
        let exe = std::env::current_exe().map_err(BenchError::io("cannot find this executable"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["node", "n1", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::io("cannot start a node"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup("the node has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(NODE_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return Some(rest.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::Setup("the node did not print its address".into()))?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(OwnNode {
            child,
            url: format!("http://{addr}"),
            dir,
        })
    }

    pub fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .id()
            .ok_or_else(|| BenchError::Setup("the node has exited".into()))
    }

    /// SIGTERM, then wait for the drain (killed if it takes too long).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, Signal::TERM);
        }
        if tokio::time::timeout(NODE_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
