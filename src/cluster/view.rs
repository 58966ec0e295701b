//! The membership view: who is in the cluster and in what state, as this node sees it.
//! Produced by [`super::membership`], read by placement, routing and `GET /v1/cluster`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Live in gossip and its authenticated cluster session is ready: it owns topics and
    /// takes routed traffic. This node itself is `Up` once it has joined (`View::ready`).
    Up,
    /// Live in gossip, but no authenticated session yet (connecting, or starting).
    Joining,
    /// The failure detector marked it dead (killed, hung, or unreachable).
    Down,
    /// Its cluster session failed authentication (wrong cookie): never admitted.
    Refused,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub http_addr: Option<SocketAddr>,
    pub gossip_addr: SocketAddr,
    pub cluster_addr: Option<SocketAddr>,
    pub status: MemberStatus,
    /// What the member announced about itself (see [`super::Announcer`]); this
    /// node's own entry has none.
    pub facts: BTreeMap<String, String>,
}

/// The whole view. Always contains this node itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// This node's id.
    pub me: String,
    /// This node has joined: it found its peers (or waited `join_timeout_ms` and found
    /// none) and may own topics and serve clients.
    pub ready: bool,
    pub members: BTreeMap<String, Member>,
}

impl View {
    /// The members that own topics: every `Up` member (this node only when ready).
    pub fn up(&self) -> impl Iterator<Item = &str> {
        self.members
            .values()
            .filter(|m| m.status == MemberStatus::Up && (m.id != self.me || self.ready))
            .map(|m| m.id.as_str())
    }

    #[cfg(test)]
    pub fn is_up(&self, id: &str) -> bool {
        self.up().any(|m| m == id)
    }
}
