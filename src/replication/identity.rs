//! Which identity this node's replicas have: a node's Raft id in every shard is its name's
//! id combined with an *incarnation* ([`placement::replica_id`]), kept in the store.
//!
//! Raft's safety rests on a voter never forgetting its votes and its log. A node whose data
//! directory was wiped has forgotten both, so it must not answer as the replica it was: it
//! takes a new incarnation, is a stranger to every shard, and each shard's leader adds it as
//! a learner and, once it caught up, puts it in its old replica's place
//! ([`super::rejoin`]). Incarnation 0 is for the replicas that form a new cluster.
//!
//! An empty store cannot tell by itself whether the cluster is new or the node was wiped,
//! so every node announces in gossip (fact [`FACT`]) what it is: `fresh` (no identity
//! yet), `forming` (an identity, but none of its replicas has seen a leader: nothing was
//! promised to anyone yet) or `holds` (a replica saw a leader; recorded in the store, so it
//! survives restarts). An empty node waits until it has heard from a majority of the
//! configured nodes (itself included): if any of them holds, the cluster exists and the
//! node takes a new random incarnation; if none does, the majority is forming a new cluster
//! and it takes 0. A node that takes 0 so waits one election timeout before its replicas
//! may vote, so that nodes started together (within about a second) all see it forming and
//! take 0 too; one that starts after the first election comes in as a new replica, which is
//! safe, only slower (the leaders replace its old replicas once it caught up).
//!
//! What it cannot see: a wiped node whose only peers that ever saw a leader are down, while
//! the rest never saw one (down since the cluster formed). That is a majority of a shard
//! faulty at once, beyond what replication promises.

use super::network::RaftNet;
use super::{placement, Leaders, ReplicationError, ReplicationSettings};
use crate::storage::{RaftStore, StorageError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The gossip fact a node announces its replicas' identity under.
pub(crate) const FACT: &str = "replica";
/// The fact's value while a node holds no Raft state.
const FRESH: &str = "fresh";
/// How often an empty node looks at the facts again while it waits.
const RECHECK: Duration = Duration::from_millis(50);
/// How often it says in the log that it is still waiting.
const SAY_EVERY: Duration = Duration::from_secs(5);

/// Prefix of a forming node's fact.
const FORMING: &str = "forming:";

/// What a node announces about its replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ad {
    /// No Raft state, no identity yet.
    Fresh,
    /// This incarnation, and none of its replicas has seen a leader.
    Forming(u32),
    /// This incarnation, and a replica saw a leader: the cluster exists.
    Holds(u32),
}

impl Ad {
    pub(crate) fn parse(value: &str) -> Option<Ad> {
        match value {
            FRESH => Some(Ad::Fresh),
            v => match v.strip_prefix(FORMING) {
                Some(n) => n.parse().ok().map(Ad::Forming),
                None => v.parse().ok().map(Ad::Holds),
            },
        }
    }

    /// The incarnation, if the node has one.
    pub(crate) fn incarnation(self) -> Option<u32> {
        match self {
            Ad::Fresh => None,
            Ad::Forming(n) | Ad::Holds(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Ad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ad::Fresh => f.write_str(FRESH),
            Ad::Forming(n) => write!(f, "{FORMING}{n}"),
            Ad::Holds(n) => write!(f, "{n}"),
        }
    }
}

/// What this node's store says before it hears from anyone: what it announces first.
fn announced(store: &RaftStore) -> Result<Ad, StorageError> {
    Ok(match store.incarnation()? {
        Some(n) if store.led()? => Ad::Holds(n),
        Some(n) => Ad::Forming(n),
        // A store from before incarnations existed: its replicas are incarnation 0.
        None if store.has_state()? => Ad::Holds(0),
        None => Ad::Fresh,
    })
}

/// The outcome of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Be this incarnation.
    Use(u32),
    /// Take a new incarnation: the cluster exists and this node lost its state.
    Rejoin,
    /// Not enough nodes heard from yet: `heard` of the `need` (this node included).
    Wait { heard: usize, need: usize },
}

/// Decides this node's incarnation from what its store says (`own`, see [`announced`]) and
/// what the other configured nodes announced (`peers`: `None` = not heard from), among
/// `nodes` configured nodes.
pub(crate) fn decide(own: Ad, peers: &[Option<Ad>], nodes: usize) -> Decision {
    if let Some(n) = own.incarnation() {
        return Decision::Use(n);
    }
    if peers.iter().any(|p| matches!(p, Some(Ad::Holds(_)))) {
        return Decision::Rejoin;
    }
    let heard = 1 + peers.iter().filter(|p| p.is_some()).count();
    let need = nodes / 2 + 1;
    if heard >= need {
        Decision::Use(0)
    } else {
        Decision::Wait { heard, need }
    }
}

/// A new incarnation: random, never 0.
fn new_incarnation() -> u32 {
    // The low bits of a v7 uuid are random.
    (uuid::Uuid::now_v7().as_u128() as u32).max(1)
}

/// Decides (waiting for the peers' facts if the store is empty), records and announces this
/// node's incarnation; returns it and whether a replica here has seen a leader.
pub(crate) async fn resolve(
    settings: &ReplicationSettings,
    store: &RaftStore,
    net: &dyn RaftNet,
) -> Result<(u32, bool), ReplicationError> {
    let own = announced(store)?;
    net.announce(FACT, &own.to_string()).await;
    let started = tokio::time::Instant::now();
    let mut said = started;
    let incarnation = loop {
        let peers: Vec<Option<Ad>> = settings
            .nodes
            .iter()
            .filter(|n| **n != settings.me)
            .map(|n| net.fact(n, FACT).as_deref().and_then(Ad::parse))
            .collect();
        match decide(own, &peers, settings.nodes.len()) {
            Decision::Use(n) => break n,
            Decision::Rejoin => {
                let n = new_incarnation();
                tracing::warn!(
                    node = settings.me,
                    incarnation = n,
                    "this node's data directory is empty but the cluster exists: rejoining as a new replica of every shard (the leaders add it and catch it up)"
                );
                break n;
            }
            Decision::Wait { heard, need } => {
                if said.elapsed() >= SAY_EVERY || said == started {
                    said = tokio::time::Instant::now();
                    tracing::info!(
                        node = settings.me,
                        heard,
                        need,
                        "empty data directory: waiting to hear from a majority of the configured nodes, to tell a new cluster from a wiped node"
                    );
                }
                tokio::time::sleep(RECHECK).await;
            }
        }
    };
    if store.incarnation()? != Some(incarnation) {
        store.set_incarnation(incarnation)?;
    }
    let led = own == Ad::Holds(incarnation);
    let ad = if led {
        Ad::Holds(incarnation)
    } else {
        Ad::Forming(incarnation)
    };
    net.announce(FACT, &ad.to_string()).await;
    if own == Ad::Fresh && incarnation == 0 {
        // Forming a new cluster: give the nodes started with this one time to see it.
        tokio::time::sleep(Duration::from_millis(settings.election_max_ms)).await;
    }
    tracing::info!(
        node = settings.me,
        incarnation,
        id = placement::replica_id(&settings.me, incarnation),
        "replica identity"
    );
    Ok((incarnation, led))
}

/// Waits until one of this node's replicas knows a leader, then records that and announces
/// that this node holds (see the module docs).
pub(crate) async fn confirm(
    store: RaftStore,
    net: Arc<dyn RaftNet>,
    incarnation: u32,
    mut leaders: watch::Receiver<Arc<Leaders>>,
) {
    if leaders
        .wait_for(|l| l.by_shard.iter().any(Option::is_some))
        .await
        .is_err()
    {
        return;
    }
    match tokio::task::spawn_blocking(move || store.set_led()).await {
        Ok(Ok(())) => {
            net.announce(FACT, &Ad::Holds(incarnation).to_string())
                .await
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record that a leader was seen"),
        Err(e) => tracing::warn!(error = %e, "cannot record that a leader was seen"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ads_round_trip() {
        for ad in [
            Ad::Fresh,
            Ad::Holds(0),
            Ad::Holds(u32::MAX),
            Ad::Forming(0),
            Ad::Forming(7),
        ] {
            assert_eq!(Ad::parse(&ad.to_string()), Some(ad));
        }
        assert_eq!(Ad::parse("nonsense"), None);
        assert_eq!(Ad::parse("-1"), None);
        assert_eq!(Ad::parse("forming:x"), None);
    }

    #[test]
    fn decisions() {
        use Ad::{Forming, Fresh, Holds};
        use Decision::{Rejoin, Use, Wait};
        // (own, peers, configured nodes, decision)
        let table: Vec<(Ad, Vec<Option<Ad>>, usize, Decision)> = vec![
            // A store with state keeps its identity, whatever the peers say.
            (Holds(7), vec![None, None], 3, Use(7)),
            (Holds(0), vec![Some(Holds(9)), None], 3, Use(0)),
            (Forming(3), vec![Some(Holds(9)), None], 3, Use(3)),
            // One node: nobody to wait for.
            (Fresh, vec![], 1, Use(0)),
            // A new cluster: a majority heard from, all fresh.
            (Fresh, vec![Some(Fresh), None], 3, Use(0)),
            (Fresh, vec![Some(Fresh), Some(Fresh)], 3, Use(0)),
            // Peers that took 0 but saw no leader yet: still forming, this node joins them.
            (Fresh, vec![Some(Forming(0)), None], 3, Use(0)),
            (Fresh, vec![Some(Forming(0)), Some(Forming(0))], 3, Use(0)),
            (Fresh, vec![None, None], 3, Wait { heard: 1, need: 2 }),
            (
                Fresh,
                vec![Some(Fresh), None, None, None],
                5,
                Wait { heard: 2, need: 3 },
            ),
            (
                Fresh,
                vec![Some(Fresh), None, None],
                4,
                Wait { heard: 2, need: 3 },
            ),
            // Anyone holding state: the cluster exists, this node was wiped (or joins late).
            (Fresh, vec![Some(Holds(0)), None], 3, Rejoin),
            (Fresh, vec![None, None, None, Some(Holds(3))], 5, Rejoin),
            (Fresh, vec![Some(Fresh), Some(Holds(0))], 3, Rejoin),
        ];
        for (own, peers, nodes, want) in table {
            assert_eq!(
                decide(own, &peers, nodes),
                want,
                "{own:?} {peers:?} of {nodes}"
            );
        }
    }

    #[test]
    fn new_incarnations_are_never_zero_and_differ() {
        let a: std::collections::HashSet<u32> = (0..100).map(|_| new_incarnation()).collect();
        assert!(!a.contains(&0));
        assert!(a.len() > 90, "{} distinct of 100", a.len());
    }
}
