//! The fault injector: carries out the schedule's operations on the cluster at their time,
//! records each fault's start and end, and ends every fault still active when asked to
//! heal.

use super::cluster::{Cluster, ClusterError};
use super::history::{Event, FaultEnd, FaultKind};
use super::schedule::{Op, Step};
use super::workload::recorder::Recorder;
use std::sync::{Arc, Mutex as SyncMutex};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A fault that has begun and not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Active {
    kind: FaultKind,
    nodes: Vec<String>,
}

pub struct Injector {
    cluster: Arc<Mutex<Cluster>>,
    rec: Arc<Recorder>,
    active: Arc<SyncMutex<Vec<Active>>>,
    errors: Vec<String>,
}

/// The active faults, for the progress line.
#[derive(Clone)]
pub struct Board(Arc<SyncMutex<Vec<Active>>>);

impl Board {
    pub fn describe(&self) -> String {
        let active = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if active.is_empty() {
            return "none".into();
        }
        let list = active
            .iter()
            .map(|a| format!("{:?} {}", a.kind, a.nodes.join("+")).to_lowercase());
        list.collect::<Vec<_>>().join(", ")
    }
}

impl Injector {
    pub fn new(cluster: Arc<Mutex<Cluster>>, rec: Arc<Recorder>) -> Injector {
        Injector {
            cluster,
            rec,
            active: Arc::new(SyncMutex::new(Vec::new())),
            errors: Vec::new(),
        }
    }

    pub fn board(&self) -> Board {
        Board(self.active.clone())
    }

    /// What could not be done (each also logged): a run with any is not a valid test.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Carries out every step at `start + at_ms`.
    pub async fn run(&mut self, steps: Vec<Step>, start: Instant) {
        for step in steps {
            tokio::time::sleep_until(start + std::time::Duration::from_millis(step.at_ms)).await;
            if let Err(e) = self.apply(&step.op).await {
                tracing::warn!(op = ?step.op, error = %e, "fault injection failed");
                self.errors.push(format!("{:?}: {e}", step.op));
            }
        }
    }

    /// Ends every fault still active: continues, restarts, heals.
    pub async fn heal_all(&mut self) {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for a in active {
            let op = match (a.kind, a.nodes.first()) {
                (FaultKind::Partition, _) => Op::Heal(a.nodes.clone()),
                (FaultKind::Stop, Some(n)) => Op::Cont(n.clone()),
                (FaultKind::Kill | FaultKind::Term, Some(n)) => Op::Restart(n.clone()),
                (_, None) => continue,
            };
            if let Err(e) = self.apply(&op).await {
                tracing::warn!(?op, error = %e, "healing failed");
                self.errors.push(format!("{op:?}: {e}"));
            }
        }
    }

    fn begin(&self, kind: FaultKind, nodes: Vec<String>) {
        tracing::info!(?kind, ?nodes, "fault begins");
        self.rec.record(|t_ms| Event::Fault {
            t_ms,
            kind,
            nodes: nodes.clone(),
        });
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.push(Active { kind, nodes });
    }

    fn end(&self, end: FaultEnd, nodes: Vec<String>) {
        tracing::info!(?end, ?nodes, "fault ends");
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| a.nodes != nodes);
        self.rec.record(|t_ms| Event::FaultEnd { t_ms, end, nodes });
    }

    async fn apply(&self, op: &Op) -> Result<(), ClusterError> {
        let mut cluster = self.cluster.lock().await;
        match op {
            Op::Kill(n) => {
                self.begin(FaultKind::Kill, vec![n.clone()]);
                cluster.kill(n).await
            }
            Op::Term(n) => {
                self.begin(FaultKind::Term, vec![n.clone()]);
                cluster.term(n).await
            }
            Op::Stop(n) => {
                self.begin(FaultKind::Stop, vec![n.clone()]);
                cluster.stop(n)
            }
            Op::Partition(nodes) => {
                self.begin(FaultKind::Partition, nodes.clone());
                cluster.partition(nodes).await
            }
            Op::Restart(n) => {
                cluster.restart(n)?;
                self.end(FaultEnd::Restart, vec![n.clone()]);
                Ok(())
            }
            Op::Cont(n) => {
                cluster.cont(n)?;
                self.end(FaultEnd::Cont, vec![n.clone()]);
                Ok(())
            }
            Op::Heal(nodes) => {
                cluster.partition(&[]).await?;
                self.end(FaultEnd::Heal, nodes.clone());
                Ok(())
            }
        }
    }
}
