//! Chaos testing: `starling chaos` starts its own local cluster, runs a recorded workload
//! through the real endpoints while it injects faults, heals, and checks the history.
//!
//! - [`history`]: the JSONL events every part agrees on.

pub mod history;
