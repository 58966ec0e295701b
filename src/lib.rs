//! Starling: a brokerless, actor-based real-time pub/sub server.
//!
//! Layers, outermost first: [`cli`] (commands), [`node`] (start/stop order), `http`
//! (transports), `session` and `topic` (delivery logic, actors), `storage` (the log),
//! `protocol` (wire types, pure). The client, the bench and the chaos tool are crates of
//! their own (`crates/`).
//!
//! The public API is what the `starling` binary and the black-box tests use: the commands
//! ([`cli`]), a node started from a [`config::Config`] with a [`shutdown::Shutdown`]
//! ([`node`]), and the topic [`placement`] every build agrees on.

#![forbid(unsafe_code)]

mod auth;
pub mod cli;
mod cluster;
pub mod config;
mod consumer;
mod delivery;
mod http;
mod metrics_setup;
pub mod node;
mod protocol;
mod replication;
mod session;
pub mod shutdown;
mod storage;
mod topic;

pub use protocol::placement;
