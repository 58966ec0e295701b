//! `starling chaos`: one whole run, and `--check` of a recorded history.

use super::checker::{check, majority_faults, Bounds, Report};
use super::cluster::{Cluster, ClusterError};
use super::history::{self, Event};
use super::inject::{Board, Injector};
use super::netns::{Netns, NetnsError};
use super::scenario::{Scenario, ScenarioError};
use super::workload::recorder::Recorder;
use super::workload::{Ctx, Workload, CONSUMER};
use super::{schedule, settle, svg};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The scenario `starling chaos` runs when it is given none.
const DEFAULT_SCENARIO: &str = include_str!("../../../../examples/chaos/random.toml");
/// How long the cluster may take to form at the start.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long subscribers and consumers may take to catch up after convergence.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// The convergence bound `--check` applies (a history does not record its scenario's; it
/// does record `majority_faults`, in its `Start`).
const DEFAULT_CONVERGENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    History(String),
    #[error("interrupted; the nodes were killed")]
    Interrupted,
    #[error("--net netns: {0}")]
    Net(#[from] NetnsError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

/// What the command line asked for.
#[derive(Debug, Default)]
pub struct Options {
    pub scenario: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Overrides the scenario's `duration_s`.
    pub duration: Option<Duration>,
    pub out: Option<PathBuf>,
    pub net: Network,
}

/// How partitions are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Namespaces when running as root and their setup succeeds, else the fault injector.
    #[default]
    Auto,
    /// Each node in its own network namespace; an error if that cannot be set up.
    Netns,
    /// The nodes' in-process fault injector.
    Injector,
}

/// Sets up the namespaces `net` asks for; `None` means the fault injector.
fn network(net: Network, ids: &[String]) -> Result<Option<Netns>, ChaosError> {
    match net {
        Network::Injector => Ok(None),
        Network::Netns => Ok(Some(Netns::setup(ids)?)),
        Network::Auto => match Netns::setup(ids) {
            Ok(netns) => Ok(Some(netns)),
            Err(NetnsError::NotRoot(_)) => Ok(None),
            Err(e) => {
                eprintln!("network namespaces unavailable ({e})");
                Ok(None)
            }
        },
    }
}

/// Runs a scenario; `Ok(true)` if the checker found no violation. Ctrl-C or SIGTERM kills
/// the nodes and ends the run.
pub async fn run(opts: Options) -> Result<bool, ChaosError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(io("listen for SIGTERM"))?;
    tokio::select! {
        r = run_inner(opts) => r,
        _ = tokio::signal::ctrl_c() => Err(ChaosError::Interrupted),
        _ = term.recv() => Err(ChaosError::Interrupted),
    }
}

/// Re-checks a recorded history: prints the table; `Ok(true)` if it passed.
pub fn check_file(path: &Path) -> Result<bool, ChaosError> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    let events = history::parse(&text).map_err(ChaosError::History)?;
    let report = checked(&events, DEFAULT_CONVERGENCE, majority_faults(&events));
    println!("{}", report.table());
    Ok(report.passed())
}

fn checked(events: &[Event], convergence: Duration, majority_faults: bool) -> Report {
    let bounds = Bounds {
        convergence_ms: convergence.as_millis() as u64,
        majority_faults,
    };
    check(events, &bounds)
}

fn load(opts: &Options) -> Result<Scenario, ChaosError> {
    let text = match &opts.scenario {
        Some(p) => std::fs::read_to_string(p).map_err(io(format!("read {}", p.display())))?,
        None => DEFAULT_SCENARIO.to_string(),
    };
    let mut scenario = Scenario::parse(&text)?;
    if let Some(d) = opts.duration {
        scenario.duration_s = d.as_secs().max(1);
        scenario.validate()?;
    }
    Ok(scenario)
}

fn out_dir(opts: &Options) -> Result<PathBuf, ChaosError> {
    let dir = match &opts.out {
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let name = format!("starling-chaos-{stamp}-{}", std::process::id());
            std::env::temp_dir().join(name)
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    Ok(dir)
}

async fn run_inner(opts: Options) -> Result<bool, ChaosError> {
    let scenario = load(&opts)?;
    let seed = opts.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(1, |d| d.as_nanos() as u64)
    });
    let out = out_dir(&opts)?;
    let (ids, topics) = (scenario.node_ids(), scenario.topic_names());
    eprintln!(
        "starling chaos: seed {seed}, {} nodes, {} topics, {} s{}; output in {}",
        ids.len(),
        topics.len(),
        scenario.duration_s,
        match scenario.faults.majority_faults {
            true => ", majority faults allowed",
            false => "",
        },
        out.display()
    );
    let steps = schedule::build(&scenario, seed);
    for s in &steps {
        eprintln!("  at {:>6.1} s: {:?}", s.at_ms as f64 / 1000.0, s.op);
    }
    let netns = network(opts.net, &ids)?;
    let (network, described) = match netns.is_some() {
        true => ("netns", "netns (each node in its own namespace)"),
        false => ("injector", "fault injector"),
    };
    eprintln!("network: {described}");
    let cluster = Cluster::start(&out, &ids, netns)?;
    eprintln!("cluster config: {}", cluster.config_path().display());
    cluster.wait_formed(FORM_TIMEOUT).await?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| io("build an HTTP client")(std::io::Error::other(e)))?;
    let rec = Arc::new(Recorder::new());
    let ctx = Ctx {
        rec: rec.clone(),
        nodes: Arc::new(cluster.urls()),
        http,
    };
    let start = Instant::now();
    rec.record(|t_ms| Event::Start {
        t_ms,
        seed,
        nodes: ids.clone(),
        topics: topics.clone(),
        consumer: CONSUMER.to_string(),
        majority_faults: scenario.faults.majority_faults,
    });
    let cluster = Arc::new(Mutex::new(cluster));
    let mut workload = Workload::start(&ctx, &scenario).await;
    let mut injector = Injector::new(cluster.clone(), rec.clone());
    let progress = tokio::spawn(progress(rec.clone(), injector.board()));
    injector.run(steps, start).await;
    tokio::time::sleep_until(start + Duration::from_secs(scenario.duration_s)).await;

    workload.stop_publishers().await;
    rec.record(|t_ms| Event::End { t_ms });
    injector.heal_all().await;
    rec.record(|t_ms| Event::Healed { t_ms });
    let convergence = Duration::from_secs(scenario.convergence_s);
    let (ok, detail) = settle::converge(&ctx, &cluster, &topics, convergence).await;
    eprintln!("converged: {ok} ({detail})");
    rec.record(|t_ms| Event::Converged { t_ms, ok, detail });
    if let Err(behind) = settle::catch_up(&ctx, &topics, CATCH_UP_TIMEOUT).await {
        eprintln!("not caught up after {CATCH_UP_TIMEOUT:?}: {behind}");
    }
    let final_state = settle::final_state(&ctx, &topics).await;
    workload.stop().await;
    progress.abort();
    cluster.lock().await.shutdown().await;
    if let Err(e) = &final_state {
        eprintln!("final state incomplete: {e}");
    }

    let events = rec.events();
    let report = checked(&events, convergence, scenario.faults.majority_faults);
    write_outputs(&out, &events, &report, network)?;
    let faults_ok = injector.errors().is_empty();
    for e in injector.errors() {
        eprintln!("fault injection failed: {e}");
    }
    Ok(report.passed() && faults_ok && final_state.is_ok())
}

/// `report.json`: the report and how partitions were made.
#[derive(serde::Serialize)]
struct ReportFile<'a> {
    network: &'a str,
    #[serde(flatten)]
    report: &'a Report,
}

fn write_outputs(
    out: &Path,
    events: &[Event],
    report: &Report,
    network: &str,
) -> Result<(), ChaosError> {
    let mut text = String::new();
    for e in events {
        let line = serde_json::to_string(e).map_err(|e| ChaosError::History(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    let (history, svg_path, json) = (
        out.join("history.jsonl"),
        out.join("report.svg"),
        out.join("report.json"),
    );
    std::fs::write(&history, text).map_err(io("write the history"))?;
    std::fs::write(&svg_path, svg::timeline(events, report)).map_err(io("write the SVG"))?;
    let file = ReportFile { network, report };
    let report_json =
        serde_json::to_string_pretty(&file).map_err(|e| ChaosError::History(e.to_string()))?;
    std::fs::write(&json, report_json).map_err(io("write the JSON report"))?;
    println!("{}", report.table());
    println!("history: {}", history.display());
    println!("report:  {}", svg_path.display());
    println!("json:    {}", json.display());
    println!("nodes:   {}", out.join("nodes").display());
    Ok(())
}

/// One line per second on stderr: elapsed, acked/s, deliveries/s, failures, active faults.
async fn progress(rec: Arc<Recorder>, board: Board) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = rec.counts();
    loop {
        tick.tick().await;
        let now = rec.counts();
        eprintln!(
            "[{:>4} s] acked {}/s, delivered {}/s, failures {}, faults: {}",
            rec.t_ms() / 1000,
            now.acked - last.acked,
            now.delivered - last.delivered,
            now.failures,
            board.describe()
        );
        last = now;
    }
}
