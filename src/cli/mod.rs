//! Command-line interface: `starling up`, `starling node`, `starling pub`, `starling sub`,
//! `starling bench`, `starling chaos`.

mod client;
#[cfg(unix)]
pub(crate) mod up;

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
        /// A JWT for a node with `[auth]` on (or the STARLING_TOKEN environment variable).
        #[arg(long, env = "STARLING_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
        /// A JWT for a node with `[auth]` on (or the STARLING_TOKEN environment variable).
        #[arg(long, env = "STARLING_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Recover a shard from the copy on one node, when a majority of the shard's voters lost
    /// their data for good (wiped disks). The shard's group starts anew from that node's
    /// copy and every topic of the shard gets a new epoch: messages the copy lacks are
    /// lost, and clients that resume are told (`recovered:false`). Refused while the shard
    /// has a leader a majority answers, or a majority of live voters. Run it on the node's
    /// machine (with auth off the admin API answers only loopback clients; with auth on it
    /// needs a token with admin: true).
    RecoverShard {
        /// The shard's number (`GET /v1/cluster` lists them).
        shard: u32,
        /// Say that the history this copy lacks may be lost (required).
        #[arg(long)]
        yes: bool,
        /// Recover even while voters that are not live are merely unreachable (not known
        /// to have lost their data): they drop what they did meanwhile when they return.
        #[arg(long)]
        force: bool,
        /// Node whose copy to recover from (default: the first node of the config file).
        #[arg(long)]
        url: Option<String>,
        /// A JWT for a node with `[auth]` on (or the STARLING_TOKEN environment variable).
        #[arg(long, env = "STARLING_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Drive a running node or cluster (or one it starts) with many concurrent clients and
    /// report throughput and latency: a table, and a JSON record with --json FILE.
    #[cfg(unix)]
    Bench {
        #[command(subcommand)]
        scenario: starling_tools::bench::Scenario,
    },
    /// Start a local cluster of its own, run a recorded workload while injecting faults
    /// (kill -9, kill -STOP, SIGTERM, partitions), heal, check the history, and write
    /// history.jsonl, report.svg and report.json. Exits non-zero on any violation.
    #[cfg(unix)]
    Chaos {
        /// Scenario file (TOML, see examples/chaos/); default: examples/chaos/random.toml.
        scenario: Option<PathBuf>,
        /// Seed of the random fault schedule (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the scenario's duration_s, e.g. 60s.
        #[arg(long, value_parser = starling_tools::bench::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Output directory (default: a fresh one under the system temp dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How partitions are made: netns (each node in its own network namespace; needs
        /// root), injector (the nodes' fault injector), or auto (netns when possible).
        #[arg(long, value_enum, default_value_t = Net::Auto)]
        net: Net,
        /// Only re-check this recorded history (prints the table; same exit code).
        #[arg(long, conflicts_with_all = ["scenario", "seed", "duration", "out"])]
        check: Option<PathBuf>,
    },
}

/// `starling chaos --net`.
#[cfg(unix)]
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Net {
    Auto,
    Netns,
    Injector,
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
                token,
                config,
            } => client::publish(&base_url(url, &config)?, token, &topic, &data, id).await,
            Command::Sub {
                topic,
                after,
                url,
                token,
                config,
            } => client::subscribe(&base_url(url, &config)?, token, &topic, after).await,
            Command::RecoverShard {
                shard,
                yes,
                force,
                url,
                token,
                config,
            } => client::recover_shard(&base_url(url, &config)?, token, shard, yes, force).await,
            #[cfg(unix)]
            Command::Bench { scenario } => {
                raise_fd_limit();
                let run = starling_tools::bench::run(scenario).await;
                run.map_err(|e| e.to_string())
            }
            #[cfg(unix)]
            Command::Chaos {
                scenario,
                seed,
                duration,
                out,
                net,
                check,
            } => chaos(scenario, seed, duration, out, net, check).await,
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

#[cfg(unix)]
async fn chaos(
    scenario: Option<PathBuf>,
    seed: Option<u64>,
    duration: Option<std::time::Duration>,
    out: Option<PathBuf>,
    net: Net,
    check: Option<PathBuf>,
) -> Result<(), String> {
    use starling_tools::chaos;
    let passed = match check {
        Some(history) => chaos::check_file(&history),
        None => {
            let opts = chaos::Options {
                scenario,
                seed,
                duration,
                out,
                net: match net {
                    Net::Auto => chaos::Network::Auto,
                    Net::Netns => chaos::Network::Netns,
                    Net::Injector => chaos::Network::Injector,
                },
            };
            chaos::run(opts).await
        }
    };
    match passed.map_err(|e| e.to_string())? {
        true => Ok(()),
        false => Err("the chaos check failed: see the table above".into()),
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
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        let below_max = match (lim.current, lim.maximum) {
            (Some(current), Some(max)) => current < max,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if below_max {
            lim.current = lim.maximum;
            if setrlimit(Resource::Nofile, lim).is_err() {
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
