//! Which identity this node's replicas have: a node's Raft id in every shard is its name's
//! id combined with an *incarnation* ([`placement::replica_id`]), kept in the store.
//!
//! Raft's safety rests on a voter never forgetting its votes and its log. A node whose data
//! directory was wiped has forgotten both, so it must not answer as the replica it was: it
//! takes a new incarnation, is a stranger to every shard, and each shard's leader adds it as
//! a learner and, once it caught up, puts it in its old replica's place
//! ([`super::rejoin`]). Incarnation 0 is for replicas that never answered anyone before.
//!
//! An empty store cannot tell by itself whether its node never ran or was wiped. So every
//! node announces in gossip its identity (fact [`FACT`]: `fresh`, or its incarnation) and
//! the nodes it has ever seen announce one (fact [`SEEN`], kept in its store, so it survives
//! restarts). A node with an empty store waits until it has heard from a majority of the
//! configured nodes (itself included; a node gossip marks down does not count). If any of
//! them has seen it before, it was wiped and takes a new random incarnation; if none has,
//! it never ran, and it takes 0 — whether the cluster is new or formed without it. Its
//! replicas start only once a majority lists it as seen (every node records its peers from
//! the moment it starts, so nodes starting together record each other): before it can
//! promise anything, a majority will remember it.
//!
//! What it cannot see: a wiped node whose peers that saw it are all down while it starts.
//! With a majority heard that means a majority of some shard faulty at once (the wiped node
//! and those peers), beyond what replication promises. A store written before incarnations
//! existed counts as incarnation 0, and as having seen every configured node (its peers
//! ran, and may have been promised things, before anyone recorded it).

use super::network::RaftNet;
use super::{placement, ReplicationError, ReplicationSettings};
use crate::storage::{RaftStore, StorageError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The gossip fact a node announces its replicas' identity under.
const FACT: &str = "replica";
/// The gossip fact listing the nodes this node has seen announce an identity.
const SEEN: &str = "seen";
/// The identity fact's value while a node has no identity yet.
const FRESH: &str = "fresh";
/// How often an empty node looks at the facts again while it waits, and how often a node
/// looks for peers it has not seen yet.
const RECHECK: Duration = Duration::from_millis(50);
/// How often a waiting node says so in the log.
const SAY_EVERY: Duration = Duration::from_secs(5);

/// A node's identity as it announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ad {
    /// No identity yet.
    Fresh,
    /// Its replicas are this incarnation.
    Is(u32),
}

impl Ad {
    pub(crate) fn parse(value: &str) -> Option<Ad> {
        match value {
            FRESH => Some(Ad::Fresh),
            n => n.parse().ok().map(Ad::Is),
        }
    }

    /// The incarnation, if the node has one.
    pub(crate) fn incarnation(self) -> Option<u32> {
        match self {
            Ad::Fresh => None,
            Ad::Is(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Ad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ad::Fresh => f.write_str(FRESH),
            Ad::Is(n) => write!(f, "{n}"),
        }
    }
}

/// What a peer announced, as far as this node's decision goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heard {
    /// The peer has seen this node announce an identity before.
    pub saw_me: bool,
}

/// The outcome of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Be this incarnation.
    Use(u32),
    /// Take a new incarnation: this node was seen before and lost its state.
    Rejoin,
    /// Not enough nodes heard from yet: `heard` of the `need` (this node included).
    Wait { heard: usize, need: usize },
}

/// Decides this node's incarnation from the one its store holds (`own`) and what the
/// other configured nodes announced (`peers`: `None` = not heard from), among `nodes`
/// configured nodes.
pub(crate) fn decide(own: Option<u32>, peers: &[Option<Heard>], nodes: usize) -> Decision {
    if let Some(n) = own {
        return Decision::Use(n);
    }
    if peers.iter().flatten().any(|p| p.saw_me) {
        return Decision::Rejoin;
    }
    let heard = 1 + peers.iter().flatten().count();
    let need = nodes / 2 + 1;
    if heard >= need {
        Decision::Use(0)
    } else {
        Decision::Wait { heard, need }
    }
}

/// A new incarnation: random, never 0.
pub(crate) fn new_incarnation() -> u32 {
    // The low bits of a v7 uuid are random.
    (uuid::Uuid::now_v7().as_u128() as u32).max(1)
}

/// A waiting loop's log line: at once, then every [`SAY_EVERY`].
#[derive(Default)]
pub(crate) struct Every(Option<tokio::time::Instant>);

impl Every {
    pub(crate) fn due(&mut self) -> bool {
        let due = self.0.is_none_or(|t| t.elapsed() >= SAY_EVERY);
        if due {
            self.0 = Some(tokio::time::Instant::now());
        }
        due
    }
}

/// The names in a [`SEEN`] fact.
fn seen_in(fact: Option<String>) -> BTreeSet<String> {
    fact.map(|f| {
        f.split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

fn joined(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a store call off the async threads (it may flush).
async fn blocking<T: Send + 'static>(
    store: &RaftStore,
    f: impl FnOnce(&RaftStore) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|_| StorageError::Cancelled)?
}

/// A store written before incarnations existed (Raft state, no incarnation): records every
/// other configured node as seen, since they may have been promised things before anyone
/// kept track. Call before [`remember_peers`] and [`resolve`].
pub(crate) async fn upgrade(
    settings: &ReplicationSettings,
    store: &RaftStore,
) -> Result<(), StorageError> {
    let others: Vec<String> = settings
        .nodes
        .iter()
        .filter(|n| **n != settings.me)
        .cloned()
        .collect();
    blocking(store, move |s| {
        if s.incarnation()?.is_none() && s.has_state()? && s.seen()?.is_empty() {
            s.set_seen(&others)?;
        }
        Ok(())
    })
    .await
}

/// The incarnation node `node` announced, if it has one and this node heard it.
pub(crate) fn incarnation_of(net: &dyn RaftNet, node: &str) -> Option<u32> {
    let ad = net.fact(node, FACT)?;
    Ad::parse(&ad)?.incarnation()
}

/// The gossip fact naming the incarnation of a node's replica of `shard` where it has one
/// of its own (its copy of that shard was dropped, see [`super::heal`]).
pub(crate) fn shard_fact(shard: u32) -> String {
    format!("{FACT}.{shard}")
}

/// The incarnation of node `node`'s replica of `shard`, as it announced it: the shard's own
/// if it has one, else the node's.
pub(crate) fn replica_incarnation(net: &dyn RaftNet, node: &str, shard: u32) -> Option<u32> {
    match net.fact(node, &shard_fact(shard)) {
        Some(own) => own.parse().ok(),
        None => incarnation_of(net, node),
    }
}

/// The Raft id of node `node`'s replica of `shard`, as it announced it (see
/// [`replica_incarnation`]).
pub(crate) fn announced_replica(net: &dyn RaftNet, node: &str, shard: u32) -> Option<u64> {
    replica_incarnation(net, node, shard).map(|i| placement::replica_id(node, i))
}

/// The gossip fact naming a node's generation of `shard`, where it is above 0 (see
/// [`super::recover`]).
pub(crate) fn generation_fact(shard: u32) -> String {
    format!("generation.{shard}")
}

/// The generation of `shard` node `node` announced (0 if none).
pub(crate) fn generation_of(net: &dyn RaftNet, node: &str, shard: u32) -> u64 {
    net.fact(node, &generation_fact(shard))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// The gossip fact by which a node says its copy of `shard` is damaged ("1") or not.
pub(crate) fn damaged_fact(shard: u32) -> String {
    format!("damaged.{shard}")
}

/// Whether node `node` announces a damaged copy of `shard`.
pub(crate) fn damaged_of(net: &dyn RaftNet, node: &str, shard: u32) -> bool {
    net.fact(node, &damaged_fact(shard)).as_deref() == Some("1")
}

/// The other configured nodes whose facts this node has (gossip does not mark them down).
fn heard<'a>(
    settings: &'a ReplicationSettings,
    net: &'a dyn RaftNet,
) -> impl Iterator<Item = (&'a String, Ad, BTreeSet<String>)> + 'a {
    settings
        .nodes
        .iter()
        .filter(|n| **n != settings.me)
        .filter_map(move |n| {
            let ad = net.fact(n, FACT).as_deref().and_then(Ad::parse)?;
            Some((n, ad, seen_in(net.fact(n, SEEN))))
        })
}

/// Decides (waiting for the peers' facts if the store is empty), records and announces this
/// node's incarnation.
pub(crate) async fn resolve(
    settings: &ReplicationSettings,
    store: &RaftStore,
    net: &dyn RaftNet,
) -> Result<u32, ReplicationError> {
    let (own, has_state) = blocking(store, |s| {
        let has_state = s.has_state()?;
        let own = match s.incarnation()? {
            Some(n) => Some(n),
            // A store from before incarnations existed: its replicas are incarnation 0.
            None if has_state => Some(0),
            None => None,
        };
        Ok((own, has_state))
    })
    .await?;
    net.announce(FACT, &own.map_or(Ad::Fresh, Ad::Is).to_string())
        .await;
    let started = tokio::time::Instant::now();
    let mut say = Every::default();
    let incarnation = loop {
        let peers: Vec<Option<Heard>> = heard(settings, net)
            .map(|(_, _, seen)| {
                Some(Heard {
                    saw_me: seen.contains(&settings.me),
                })
            })
            .collect();
        match decide(own, &peers, settings.nodes.len()) {
            Decision::Use(n) => break n,
            Decision::Rejoin => {
                let n = new_incarnation();
                tracing::warn!(
                    node = settings.me,
                    incarnation = n,
                    "this node's data directory is empty but its peers have seen it before: rejoining as a new replica of every shard (the shard leaders add it and catch it up)"
                );
                break n;
            }
            Decision::Wait { heard, need } => {
                if say.due() {
                    tracing::info!(
                        node = settings.me,
                        heard,
                        need,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "empty data directory: waiting to hear from a majority of the configured nodes, to tell a node that never ran from a wiped one"
                    );
                }
                tokio::time::sleep(RECHECK).await;
            }
        }
    };
    if blocking(store, |s| s.incarnation()).await? != Some(incarnation) {
        blocking(store, move |s| s.set_incarnation(incarnation)).await?;
    }
    net.announce(FACT, &Ad::Is(incarnation).to_string()).await;
    if !has_state {
        // No replica here has answered anyone yet: first a majority must remember this node.
        let need = settings.nodes.len() / 2 + 1;
        let mut say = Every::default();
        loop {
            let knows_me = heard(settings, net)
                .filter(|(_, _, seen)| seen.contains(&settings.me))
                .count();
            if 1 + knows_me >= need {
                break;
            }
            if say.due() {
                tracing::info!(
                    node = settings.me,
                    knows_me,
                    need,
                    "waiting for a majority of the configured nodes to record this node"
                );
            }
            tokio::time::sleep(RECHECK).await;
        }
    }
    tracing::info!(
        node = settings.me,
        incarnation,
        id = placement::replica_id(&settings.me, incarnation),
        "replica identity"
    );
    Ok(incarnation)
}

/// The peers this node has seen so far (see [`remember_peers`]).
pub(crate) async fn seen(store: &RaftStore) -> Result<Vec<String>, StorageError> {
    blocking(store, |s| s.seen()).await
}

/// Records (durably) and announces every configured peer this node sees announce an
/// identity, starting from `seen`, for as long as the node runs.
pub(crate) async fn remember_peers(
    settings: ReplicationSettings,
    store: RaftStore,
    net: Arc<dyn RaftNet>,
    seen: Vec<String>,
) {
    let mut seen: BTreeSet<String> = seen.into_iter().collect();
    net.announce(SEEN, &joined(&seen)).await;
    let mut ticks = tokio::time::interval(RECHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let new: Vec<&String> = settings
            .nodes
            .iter()
            .filter(|n| **n != settings.me && !seen.contains(*n))
            .filter(|n| incarnation_of(net.as_ref(), n).is_some())
            .collect();
        if new.is_empty() {
            continue;
        }
        let mut next = seen.clone();
        next.extend(new.into_iter().cloned());
        let names: Vec<String> = next.iter().cloned().collect();
        match blocking(&store, move |s| s.set_seen(&names)).await {
            Ok(()) => {
                net.announce(SEEN, &joined(&next)).await;
                seen = next;
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the nodes seen; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ads_round_trip() {
        for ad in [Ad::Fresh, Ad::Is(0), Ad::Is(u32::MAX)] {
            assert_eq!(Ad::parse(&ad.to_string()), Some(ad));
        }
        assert_eq!(Ad::parse("nonsense"), None);
        assert_eq!(Ad::parse("-1"), None);
        assert_eq!(
            seen_in(Some("n1,,n3".into())),
            BTreeSet::from(["n1".to_string(), "n3".to_string()])
        );
        assert!(seen_in(None).is_empty());
    }

    #[test]
    fn decisions() {
        use Decision::{Rejoin, Use, Wait};
        let new = Some(Heard { saw_me: false });
        let knows = Some(Heard { saw_me: true });
        // (own, peers, configured nodes, decision)
        type Case = (Option<u32>, Vec<Option<Heard>>, usize, Decision);
        let table: Vec<Case> = vec![
            // A store with an identity keeps it, whatever the peers say.
            (Some(7), vec![None, None], 3, Use(7)),
            (Some(0), vec![knows, None], 3, Use(0)),
            // One node: nobody to wait for.
            (None, vec![], 1, Use(0)),
            // Never seen by a majority heard from: a new cluster, or one formed without it.
            (None, vec![new, None], 3, Use(0)),
            (None, vec![new, new], 3, Use(0)),
            (None, vec![new, new, None, None], 5, Use(0)),
            (None, vec![None, None], 3, Wait { heard: 1, need: 2 }),
            (
                None,
                vec![new, None, None, None],
                5,
                Wait { heard: 2, need: 3 },
            ),
            (None, vec![new, None, None], 4, Wait { heard: 2, need: 3 }),
            // Anyone who saw it before: it was wiped.
            (None, vec![knows, None], 3, Rejoin),
            (None, vec![None, None, None, knows], 5, Rejoin),
            (None, vec![new, knows], 3, Rejoin),
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
        let a: BTreeSet<u32> = (0..100).map(|_| new_incarnation()).collect();
        assert!(!a.contains(&0));
        assert!(a.len() > 90, "{} distinct of 100", a.len());
    }
}
