//! Chaos testing: `starling chaos` starts its own local cluster, runs a recorded workload
//! through the real endpoints while it injects faults, heals, and checks the history.
//!
//! - [`history`]: the JSONL events every part agrees on.
//! - [`checker`]: judges a history (silent loss, order, divergence, acked writes kept,
//!   consumer loss, convergence) and reports availability per fault kind.
//! - [`svg`]: draws a history and its report as one SVG timeline.

pub mod checker;
pub mod history;
pub mod svg;
