//! Ownership for the cluster layer: a topic is owned by the leader of its shard.

use super::Replication;
use crate::cluster::port::Owners;
use std::sync::Arc;
use tokio::sync::watch;

/// [`Owners`] from this node's Raft groups.
pub(crate) struct ShardOwners {
    replication: Replication,
    changes: watch::Receiver<u64>,
}

impl ShardOwners {
    /// Follows the leaders of this node's shards; the forwarding task ends with them.
    pub fn new(replication: Replication) -> Arc<ShardOwners> {
        let (tx, changes) = watch::channel(0u64);
        let mut leaders = replication.leaders();
        tokio::spawn(async move {
            while leaders.changed().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Arc::new(ShardOwners {
            replication,
            changes,
        })
    }
}

impl Owners for ShardOwners {
    fn owner(&self, topic: &str) -> Option<String> {
        self.replication.leader(self.replication.shard_of(topic))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}
