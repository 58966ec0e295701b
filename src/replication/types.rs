//! The openraft type configuration of the shard groups, and aliases for its types.

use super::ops::Op;

/// What one Raft log entry carries: storage writes decided by the shard leader's topic
/// actors, applied in order on every replica.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ops", self.ops.len())
    }
}

/// What applying an entry did, as its proposer learns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Applied {
    /// An `Append` of the entry did not write all its messages: their offsets were taken
    /// (by an entry of an earlier leadership that committed late) or did not continue the
    /// topic. The proposer's view of the topic is wrong.
    pub overtaken: bool,
}

openraft::declare_raft_types!(
    /// Node ids are stable hashes of node names ([`super::placement::node_id`]); a node's
    /// `BasicNode::addr` is its name.
    pub(crate) TypeConfig:
        D = Entry,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub(crate) type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub(crate) type NodeId = u64;
pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type RaftEntry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub(crate) type Metrics = openraft::RaftMetrics<TypeConfig>;
