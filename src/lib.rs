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

// Made private, these modules show dead code that goes with their restructuring (issue 12):
// `Cluster::view`, `View::is_up` (cluster); `Member.session`, `Window::is_pending`,
// `Window::next_wakeup` (consumer); `AppState.http_addr` (http); `TopicName::shared`
// (protocol); `CloseReason::Shutdown`, `CloseReason::Malformed`, `Sessions::limits`
// (session); `Topics::cluster`, `Topics::log`, `TopicRegistry::is_empty` (topic). Each
// `expect` fails the build once its module has none left, so it cannot outlive the code.

pub mod cli;
#[expect(dead_code, reason = "issue 12, see above")]
mod cluster;
pub mod config;
#[expect(dead_code, reason = "issue 12, see above")]
mod consumer;
#[expect(dead_code, reason = "issue 12, see above")]
mod http;
mod metrics_setup;
pub mod node;
#[expect(dead_code, reason = "issue 12, see above")]
mod protocol;
#[expect(dead_code, reason = "issue 12, see above")]
mod session;
pub mod shutdown;
mod storage;
#[expect(dead_code, reason = "issue 12, see above")]
mod topic;

pub use cluster::placement;
