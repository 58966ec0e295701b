//! The cluster: membership by gossip with failure detection ([`membership`]), who owns a
//! topic as the layer above says ([`port::Owners`]), and node-to-node messages over
//! ractor_cluster ([`router`]). It knows nothing of topics, sessions or consumers: the
//! layers above serve what arrives through the [`port::Inbound`] port and send through
//! [`client::Cluster`] (a [`port::Transport`]: the router, or [`sim`]'s in-memory twin in
//! tests).
//!
//! Only one actor per node is remotable: the [`router::NodeRouter`], registered in the
//! process group [`router_group`] of its node id. Topic and session actors stay local.

mod announce;
pub mod client;
pub mod faults;
mod gossip;
mod links;
pub mod membership;
pub mod port;
pub mod router;
#[cfg(test)]
pub mod sim;
mod status;
pub mod view;
pub mod wire;

pub use announce::Announcer;

/// The `ractor::pg` group that holds node `id`'s router (one member).
pub fn router_group(id: &str) -> String {
    format!("starling.router.{id}")
}
