//! `starling bench <scenario>`: a load generator that drives a running node or cluster (or
//! one it starts itself) through its real endpoints, shows progress on stderr, and prints
//! a table plus, with `--json FILE`, one JSON record.
//!
//! Latency is measured open loop: publishes go out on a fixed schedule whatever happened to
//! earlier ones, each carrying its wall-clock send time (so subscribers in another
//! generator process on the same machine can measure it too), and every figure comes from
//! an HDR histogram. Only messages sent inside the measuring window count; the warm-up and
//! the drain after it do not.
//!
//! Files: `args` (flags), `clients` (connections, stamps, progress), `publish` and
//! `subscribe` (the load's two ends), `spawn` (a node of its own), `report` (table and
//! JSON), one file per scenario, and `nats` + `nats_proto` (`--target nats`: the same load
//! against a NATS server, for the comparison).

mod args;
mod clients;
mod connections;
mod consumer;
mod durable;
mod failover;
mod fanout;
mod nats;
mod nats_proto;
mod publish;
mod report;
mod spawn;
mod subscribe;

pub use args::{parse_duration, Scenario};

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl BenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Runs one scenario to the end.
pub async fn run(scenario: Scenario) -> Result<(), BenchError> {
    let (report, json) = match scenario {
        Scenario::Fanout(a) => (fanout::run(&a).await?, a.out.json),
        Scenario::Durable(a) => (durable::run(&a).await?, a.out.json),
        Scenario::Consumer(a) => (consumer::run(&a).await?, a.out.json),
        Scenario::Connections(a) => (connections::run(&a).await?, a.out.json),
        Scenario::Failover(a) => (failover::run(&a).await?, a.out.json),
    };
    report.print();
    if let Some(path) = json {
        report.write_json(&path)?;
        eprintln!("JSON record written to {}", path.display());
    }
    Ok(())
}
