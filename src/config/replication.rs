//! `[replication]`: how topics are sharded into Raft groups and how many copies each keeps.

use super::{invalid, ConfigError};
use serde::Deserialize;

/// Topics are hashed into `shards` Raft groups; each group's voters are `factor` of the
/// configured nodes (all of them when fewer are configured).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Raft groups topics are hashed into. Fixed when the cluster's data is created: a node
    /// refuses to start on data written with another count.
    pub shards: u32,
    /// Voters per shard: an acknowledged publish is on a majority of them.
    pub factor: usize,
    /// A shard's leader sends a heartbeat this often.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range calls an election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            shards: 16,
            factor: 3,
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1_000,
        }
    }
}

impl ReplicationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > 1024 {
            return Err(invalid("replication.shards", "must be between 1 and 1024"));
        }
        if self.factor == 0 || self.factor > 7 {
            return Err(invalid("replication.factor", "must be between 1 and 7"));
        }
        if self.heartbeat_ms == 0 {
            return Err(invalid(
                "replication.heartbeat_ms",
                "must be greater than 0",
            ));
        }
        if self.election_min_ms < 3 * self.heartbeat_ms {
            return Err(invalid(
                "replication.election_min_ms",
                "must be at least 3 x replication.heartbeat_ms",
            ));
        }
        if self.election_max_ms <= self.election_min_ms {
            return Err(invalid(
                "replication.election_max_ms",
                "must be greater than replication.election_min_ms",
            ));
        }
        Ok(())
    }
}
