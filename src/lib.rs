//! Starling: a brokerless, actor-based real-time pub/sub server.
//!
//! Layers, outermost first: [`cli`] (commands), [`node`] (start/stop order), [`http`]
//! (transports), [`session`] and [`topic`] (delivery logic, actors), [`storage`] (the
//! log), [`protocol`] (wire types, pure). The client, the bench and the chaos tool are
//! crates of their own (`crates/`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod http;
mod metrics_setup;
pub mod node;
pub mod protocol;
pub mod session;
pub mod shutdown;
pub mod storage;
pub mod topic;
