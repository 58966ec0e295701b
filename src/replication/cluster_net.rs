//! [`RaftNet`] over the cluster's link: a Raft message is a [`Call::Raft`] to the peer's
//! router, answered by its replica of the shard. Facts ride on gossip.

use super::network::NetError;
use super::RaftNet;
use crate::cluster::client::Cluster;
use crate::cluster::port::CallError;
use crate::cluster::view::MemberStatus;
use crate::cluster::wire::{Call, Reply};
use crate::cluster::Announcer;
use std::time::Duration;

pub(crate) struct ClusterRaftNet {
    pub cluster: Cluster,
    /// Sets this node's facts in gossip.
    pub announcer: Announcer,
}

#[async_trait::async_trait]
impl RaftNet for ClusterRaftNet {
    async fn call(
        &self,
        node: &str,
        shard: u32,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let call = Call::Raft { shard, request };
        match self.cluster.call_within(node, &call, timeout).await {
            Ok(Reply::Raft(bytes)) => Ok(bytes),
            Ok(Reply::Error { message, .. }) => Err(NetError::Failed(message)),
            Ok(_) => Err(NetError::Failed(format!("{node}: unexpected answer"))),
            Err(CallError::NoRoute(n)) => Err(NetError::Unreachable(n)),
            Err(e) => Err(NetError::Failed(e.to_string())),
        }
    }

    fn fact(&self, node: &str, key: &str) -> Option<String> {
        let view = self.cluster.watch();
        let view = view.borrow();
        let member = view.members.get(node)?;
        // Gossip keeps a dead node's last facts for a while: they say nothing about now.
        // A member whose cluster cookie was refused is no peer at all.
        if matches!(member.status, MemberStatus::Down | MemberStatus::Refused) {
            return None;
        }
        member.facts.get(key).cloned()
    }

    async fn announce(&self, key: &str, value: &str) {
        self.announcer.set(key, value).await;
    }
}
