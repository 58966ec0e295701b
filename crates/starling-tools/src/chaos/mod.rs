//! Chaos testing: `starling chaos` starts its own local cluster, runs a recorded workload
//! through the real endpoints while it injects faults, heals, and checks the history.
//!
//! - [`history`]: the JSONL events every part agrees on.
//! - [`scenario`]: the scenario file (TOML), validated; [`schedule`]: the faults in time
//!   order, drawn from the seed (pure). Both keep at most a minority of the nodes down at
//!   once unless the scenario sets `majority_faults`.
//! - `cluster`: the node processes and what is done to them; `netplan` (pure) and `netns`:
//!   each node in its own network namespace, partitions as routes, when run as root;
//!   `inject`: the schedule carried out; `workload`: the recorded clients; `settle`: healing, convergence, the final log.
//! - [`checker`]: judges a history (silent loss, order, divergence, acked writes kept, acks
//!   in lost epochs unless majority faults were allowed, consumer loss, convergence) and
//!   reports availability per fault kind.
//! - [`svg`]: draws a history and its report as one SVG timeline.
//!
//! A run: form the cluster → start subscribers and consumers → publishers → faults until
//! `duration` → `End` (publishers stop) → every fault ended (`Healed`) → `Converged` →
//! subscribers catch up → `FinalMeta`/`FinalLog` → nodes stopped → history written and
//! checked.

pub mod checker;
pub mod history;
pub mod scenario;
pub mod schedule;
pub mod svg;

#[cfg(unix)]
mod cluster;
#[cfg(unix)]
mod inject;
#[cfg(unix)]
mod netns;
#[cfg(unix)]
mod netplan;
#[cfg(unix)]
mod run;
#[cfg(unix)]
mod settle;
#[cfg(unix)]
mod workload;

#[cfg(unix)]
pub use run::{check_file, run, ChaosError, Network, Options};
