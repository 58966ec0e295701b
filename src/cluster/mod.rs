//! The cluster: membership by gossip with failure detection ([`membership`]), topic
//! placement by rendezvous hashing ([`placement`]), and node-to-node routing over
//! ractor_cluster ([`router`]).
//!
//! Only one actor per node is remotable: the [`router::NodeRouter`], registered in the
//! process group [`router_group`] of its node id. Topic and session actors stay local.

pub mod client;
pub mod faults;
mod gossip;
mod links;
pub mod membership;
pub mod placement;
pub mod router;
mod status;
pub mod view;
pub mod wire;

/// The `ractor::pg` group that holds node `id`'s router (one member).
pub fn router_group(id: &str) -> String {
    format!("starling.router.{id}")
}
