//! Command-line interface: `starling up`, `starling node`, `starling pub`, `starling sub`,
//! `starling bench`.

#[cfg(unix)]
mod bench;
mod client;
#[cfg(unix)]
mod up;

use crate::config::Config;
use crate::node::Node;
use crate::shutdown::Shutdown;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "starling",
    version,
    about = "Brokerless real-time pub/sub: WebSocket, SSE and HTTP polling"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start every node listed in the config file and wait until the cluster has formed.
    ///
    /// Each node runs as a child process (`starling node <id>`), its output prefixed with its
    /// id. Ctrl-C or SIGTERM stops every node gracefully. `up` supervises only the nodes it
    /// started and never restarts one: a node that exits is reported and the others keep
    /// running, so you can kill a node and restart it by hand with `starling node <id>`.
    #[cfg(unix)]
    Up {
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Start the node with this id from the config file.
    Node {
        /// Node id, as listed under [[nodes]] in the config.
        id: String,
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Publish one message (JSON) to a topic.
    Pub {
        topic: String,
        /// The message data, as JSON (a bare word is sent as a JSON string).
        data: String,
        /// Idempotency key: publishing the same id again returns the first offset.
        #[arg(long)]
        id: Option<String>,
        /// Node to talk to (default: the first node of the config file).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Subscribe to a topic over WebSocket and print each message as a JSON line.
    Sub {
        topic: String,
        /// Replay every retained message after this offset first (0 = from the oldest).
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Drive a running node or cluster (or one it starts) with many concurrent clients and
    /// report throughput and latency: a table, and a JSON record with --json FILE.
    #[cfg(unix)]
    Bench {
        #[command(subcommand)]
        scenario: bench::Scenario,
    },
}

/// Runs a parsed command; the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            #[cfg(unix)]
            Command::Up { config } => up::run(&config).await.map_err(|e| e.to_string()),
            Command::Node { id, config } => run_node(&id, &config).await,
            Command::Pub {
                topic,
                data,
                id,
                url,
                config,
            } => client::publish(&base_url(url, &config)?, &topic, &data, id).await,
            Command::Sub {
                topic,
                after,
                url,
                config,
            } => client::subscribe(&base_url(url, &config)?, &topic, after).await,
            #[cfg(unix)]
            Command::Bench { scenario } => bench::run(scenario).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, String> {
    if !path.exists() && path == std::path::Path::new("cluster.toml") {
        return Ok(Config::default());
    }
    Config::load(path).map_err(|e| e.to_string())
}

fn base_url(url: Option<String>, config: &std::path::Path) -> Result<String, String> {
    if let Some(u) = url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let c = load_config(config)?;
    let node = c.nodes.first().ok_or("the config lists no nodes")?;
    Ok(format!("http://{}", node.http_addr))
}

async fn run_node(id: &str, config: &std::path::Path) -> Result<(), String> {
    let config = load_config(config)?;
    raise_fd_limit();
    let shutdown = Shutdown::new();
    let node = Node::start(config, id, shutdown.clone())
        .await
        .map_err(|e| e.to_string())?;
    let addr = node.http_addr();
    say(&format!(
        "starling node {id} listening on http://{addr}\n  WebSocket  ws://{addr}/v1/ws\n  SSE        curl -N http://{addr}/v1/topics/<topic>/events"
    ));
    tokio::spawn(signals(shutdown));
    node.wait().await.map_err(|e| e.to_string())?;
    say(&format!("starling node {id} stopped"));
    Ok(())
}

/// Prints a line for the person at the terminal; a closed stdout is not an error.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Every connection is a file descriptor: raise the soft limit to the hard one.
fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

/// Ctrl-C and SIGTERM both start a graceful drain.
async fn signals(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested; draining");
    shutdown.trigger();
}
