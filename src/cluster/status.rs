//! The pure core of membership: from what gossip and the cluster transport say about each
//! peer, derive every member's status and whether this node has joined. No sockets, no
//! clock of its own: the caller passes the time elapsed since start.

use super::view::{Member, MemberStatus, View};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Gossip's verdict on a peer (its newest generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The failure detector holds it live.
    Live,
    /// Not live yet, but just heard of, or beating again since it was declared dead: it is
    /// starting or coming back. Blocks readiness; never `Up`.
    Pending,
    /// Declared dead by the failure detector, and silent since.
    Dead,
}

/// One peer as gossip knows it (its newest generation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipPeer {
    pub id: String,
    /// The peer's start time: a restarted peer is a new generation.
    pub generation: u64,
    pub liveness: Liveness,
    pub gossip_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub cluster_addr: Option<SocketAddr>,
    /// What the peer announced about itself ([`super::Announcer`]).
    pub facts: BTreeMap<String, String>,
}

/// The cluster session (ractor_cluster) with one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkState {
    /// No session, or one that is still authenticating.
    #[default]
    Connecting,
    /// Authenticated, and the initial state exchange is done.
    Ready,
    /// Its sessions keep failing authentication (cookie mismatch).
    Refused,
}

/// Everything known about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFacts {
    pub gossip: GossipPeer,
    pub link: LinkState,
    /// Its router is reachable through the session (or this node checks no routers).
    pub router: bool,
}

/// What readiness depends on besides the peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// Gossip seeds other than this node.
    pub seeds: Vec<SocketAddr>,
    pub elapsed: Duration,
    pub timeout: Duration,
    /// Readiness, once reached, is kept.
    pub was_ready: bool,
}

/// A peer's status as this node sees it.
pub fn status(peer: &PeerFacts) -> MemberStatus {
    match (peer.gossip.liveness, peer.link) {
        (Liveness::Dead, _) => MemberStatus::Down,
        (_, LinkState::Refused) => MemberStatus::Refused,
        (Liveness::Live, LinkState::Ready) if peer.router => MemberStatus::Up,
        _ => MemberStatus::Joining,
    }
}

/// The view: this node (`me`, always `Up`; rendered `joining` until ready) and every peer.
///
/// Ready once every peer that is alive in gossip is `Up` or `Refused` and some seed
/// answered (or there is no other seed), or once the join timeout passed; then for good.
pub fn derive(me: Member, peers: &[PeerFacts], join: &Join) -> View {
    let mut members = BTreeMap::new();
    let mut settled = true;
    let mut seed_answered = join.seeds.is_empty();
    for peer in peers {
        let status = status(peer);
        settled &= status != MemberStatus::Joining;
        seed_answered |=
            peer.gossip.liveness == Liveness::Live && join.seeds.contains(&peer.gossip.gossip_addr);
        let g = &peer.gossip;
        members.insert(
            g.id.clone(),
            Member {
                id: g.id.clone(),
                http_addr: g.http_addr,
                gossip_addr: g.gossip_addr,
                cluster_addr: g.cluster_addr,
                status,
                facts: g.facts.clone(),
            },
        );
    }
    let ready = join.was_ready || join.elapsed >= join.timeout || (settled && seed_answered);
    let me_id = me.id.clone();
    members.insert(
        me_id.clone(),
        Member {
            status: MemberStatus::Up,
            ..me
        },
    );
    View {
        me: me_id,
        ready,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn me() -> Member {
        Member {
            id: "n1".into(),
            http_addr: Some(addr(8001)),
            gossip_addr: addr(7001),
            cluster_addr: Some(addr(6001)),
            status: MemberStatus::Joining,
            facts: Default::default(),
        }
    }

    fn peer(n: u16, liveness: Liveness, link: LinkState) -> PeerFacts {
        PeerFacts {
            gossip: GossipPeer {
                id: format!("n{n}"),
                generation: 1,
                liveness,
                gossip_addr: addr(7000 + n),
                http_addr: Some(addr(8000 + n)),
                cluster_addr: Some(addr(6000 + n)),
                facts: Default::default(),
            },
            link,
            router: true,
        }
    }

    fn join(seeds: &[u16], elapsed_ms: u64) -> Join {
        Join {
            seeds: seeds.iter().map(|&p| addr(7000 + p)).collect(),
            elapsed: Duration::from_millis(elapsed_ms),
            timeout: Duration::from_millis(3000),
            was_ready: false,
        }
    }

    fn statuses(view: &View) -> Vec<(&str, MemberStatus)> {
        view.members
            .values()
            .map(|m| (m.id.as_str(), m.status))
            .collect()
    }

    #[test]
    fn up_needs_live_gossip_a_ready_session_and_the_router() {
        use LinkState::*;
        use Liveness::*;
        assert_eq!(status(&peer(2, Live, Ready)), MemberStatus::Up);
        assert_eq!(status(&peer(2, Live, Connecting)), MemberStatus::Joining);
        assert_eq!(status(&peer(2, Pending, Ready)), MemberStatus::Joining);
        assert_eq!(status(&peer(2, Dead, Ready)), MemberStatus::Down);
        assert_eq!(status(&peer(2, Dead, Refused)), MemberStatus::Down);
        assert_eq!(status(&peer(2, Live, Refused)), MemberStatus::Refused);
        let mut no_router = peer(2, Live, Ready);
        no_router.router = false;
        assert_eq!(status(&no_router), MemberStatus::Joining);
    }

    #[test]
    fn ready_when_every_live_peer_is_up_and_a_seed_answered() {
        use LinkState::*;
        use Liveness::*;
        let peers = [peer(2, Live, Ready), peer(3, Live, Connecting)];
        let view = derive(me(), &peers, &join(&[2, 3], 100));
        assert!(!view.ready);
        assert_eq!(
            statuses(&view),
            [
                ("n1", MemberStatus::Up),
                ("n2", MemberStatus::Up),
                ("n3", MemberStatus::Joining)
            ]
        );
        let peers = [peer(2, Live, Ready), peer(3, Live, Ready)];
        assert!(derive(me(), &peers, &join(&[2, 3], 100)).ready);
    }

    #[test]
    fn a_starting_peer_blocks_readiness_a_dead_or_refused_one_does_not() {
        use LinkState::*;
        use Liveness::*;
        let peers = [peer(2, Live, Ready), peer(3, Pending, Connecting)];
        assert!(!derive(me(), &peers, &join(&[2, 3], 100)).ready);
        let peers = [peer(2, Live, Ready), peer(3, Dead, Connecting)];
        assert!(derive(me(), &peers, &join(&[2, 3], 100)).ready);
        let peers = [peer(2, Live, Ready), peer(3, Live, Refused)];
        assert!(derive(me(), &peers, &join(&[2, 3], 100)).ready);
    }

    #[test]
    fn no_answering_seed_waits_for_the_join_timeout() {
        use LinkState::*;
        use Liveness::*;
        // The only live peer is not a seed: no seed answered yet.
        let peers = [peer(2, Dead, Connecting), peer(4, Live, Ready)];
        assert!(!derive(me(), &peers, &join(&[2], 100)).ready);
        assert!(derive(me(), &peers, &join(&[2], 3000)).ready);
        assert!(derive(me(), &[], &join(&[2, 3], 3000)).ready);
        assert!(!derive(me(), &[], &join(&[2, 3], 2999)).ready);
    }

    #[test]
    fn without_other_seeds_a_node_is_ready_once_its_live_peers_are_up() {
        use LinkState::*;
        use Liveness::*;
        assert!(derive(me(), &[], &join(&[], 0)).ready);
        assert!(!derive(me(), &[peer(2, Live, Connecting)], &join(&[], 0)).ready);
    }

    #[test]
    fn readiness_is_kept() {
        use LinkState::*;
        use Liveness::*;
        let mut j = join(&[2], 100);
        j.was_ready = true;
        let view = derive(me(), &[peer(2, Live, Connecting)], &j);
        assert!(view.ready);
        assert_eq!(view.members["n2"].status, MemberStatus::Joining);
    }

    #[test]
    fn the_view_carries_the_gossiped_addresses() {
        let view = derive(
            me(),
            &[peer(2, Liveness::Live, LinkState::Ready)],
            &join(&[], 0),
        );
        let n2 = &view.members["n2"];
        assert_eq!(n2.http_addr, Some(addr(8002)));
        assert_eq!(n2.gossip_addr, addr(7002));
        assert_eq!(n2.cluster_addr, Some(addr(6002)));
        assert_eq!(view.me, "n1");
        assert_eq!(view.members["n1"].status, MemberStatus::Up);
    }
}
