//! Real network isolation for `starling chaos`, the thin layer that runs `ip`: builds the
//! run's namespaces and bridge from a [`Plan`], starts nodes inside them, makes and heals
//! partitions with sink routes, and tears everything down when dropped (normal end, error
//! or Ctrl-C alike). It only ever deletes what it created.

use super::netplan::{self, Cut, Plan};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Output;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespaces need root (effective uid {0})")]
    NotRoot(u32),
    #[error("cannot run `ip {command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`ip {command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("no /24 in 10.0.0.0/8 is free of the routes in use")]
    NoSubnet,
    #[error("no node {0} in this cluster")]
    UnknownNode(String),
}

/// Whether `ip <args>` succeeded; an error names the command and its stderr.
fn checked(args: &[String], out: std::io::Result<Output>) -> Result<Output, NetnsError> {
    let command = args.join(" ");
    let out = out.map_err(|source| NetnsError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(NetnsError::Command { command, stderr })
}

fn ip(args: &[String]) -> Result<Output, NetnsError> {
    let out = std::process::Command::new("ip").args(args).output();
    checked(args, out)
}

async fn ip_async(args: &[String]) -> Result<Output, NetnsError> {
    let out = tokio::process::Command::new("ip").args(args).output().await;
    checked(args, out)
}

/// A run's namespaces while they exist.
pub struct Netns {
    plan: Plan,
    /// What undoes the setup, in creation order.
    undo: Vec<Vec<String>>,
    /// The cuts in place.
    cuts: Vec<Cut>,
}

impl Netns {
    /// Builds a namespace per node (`ids`, in order). On failure, whatever was made is
    /// removed again before the error returns.
    pub fn setup(ids: &[String]) -> Result<Netns, NetnsError> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            return Err(NetnsError::NotRoot(euid));
        }
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let routes = ip(&["-4".into(), "route".into(), "show".into()])?;
        let routes = String::from_utf8_lossy(&routes.stdout);
        let subnet = netplan::pick_subnet(seed, &routes).ok_or(NetnsError::NoSubnet)?;
        let plan = Plan::new(netplan::tag(seed), subnet, ids.to_vec());
        let mut net = Netns {
            plan,
            undo: Vec::new(),
            cuts: Vec::new(),
        };
        for step in net.plan.setup() {
            // On an error `net` drops here, which undoes what was made.
            ip(&step.args)?;
            net.undo.extend(step.undo);
        }
        tracing::info!(
            bridge = %net.plan.bridge(),
            subnet = %net.plan.ip(0),
            nodes = ids.len(),
            "network namespaces ready"
        );
        Ok(net)
    }

    /// Node `i`'s address inside its namespace.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.plan.ip(i)
    }

    /// A command that runs `exe` in node `i`'s namespace; `ip netns exec` execs in place,
    /// so the child's pid is the program's.
    pub fn command(&self, i: usize, exe: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.plan.namespace(i)])
            .arg(exe);
        command
    }

    /// Cuts `isolated` off from the rest, both ways; an empty list heals. Heals the cuts
    /// in place first, so partitions do not pile up.
    pub async fn partition(&mut self, isolated: &[String]) -> Result<(), NetnsError> {
        let inside = isolated
            .iter()
            .map(|id| {
                let i = self.plan.index(id);
                i.ok_or_else(|| NetnsError::UnknownNode(id.clone()))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        while let Some(cut) = self.cuts.last().copied() {
            ip_async(&self.plan.heal(cut)).await?;
            self.cuts.pop();
        }
        for cut in netplan::cuts(self.plan.nodes(), &inside) {
            for args in self.plan.cut(cut) {
                ip_async(&args).await?;
            }
            self.cuts.push(cut);
        }
        tracing::info!(?isolated, cuts = self.cuts.len(), "network partition set");
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for args in self.undo.iter().rev() {
            if let Err(e) = ip(args) {
                tracing::warn!(error = %e, "network teardown step failed");
            }
        }
        tracing::info!(bridge = %self.plan.bridge(), "network namespaces removed");
    }
}
