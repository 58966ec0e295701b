//! Starling: a brokerless, actor-based real-time pub/sub server.
//!
//! Layers, outermost first: [`cli`] (commands), [`node`] (start/stop order), [`http`]
//! (transports), [`session`] and [`topic`] (delivery logic, actors), [`storage`] (the
//! log), [`protocol`] (wire types, pure).

#[cfg(unix)]
pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod http;
mod metrics_setup;
pub mod node;
pub mod protocol;
pub mod session;
pub mod shutdown;
pub mod storage;
pub mod topic;
