//! Pure placement of shards: which shard a topic is in, which nodes are its voters, and
//! each node's Raft id. Every node computes the same answers from the same configuration,
//! with the hash every build agrees on ([`crate::protocol::placement`]).

use crate::protocol::placement::{ranking, stable_hash};
use std::collections::HashMap;

/// The shard of `topic` among `shards` (> 0).
pub(crate) fn shard_of(topic: &str, shards: u32) -> u32 {
    // The remainder is below `shards`, a u32.
    (stable_hash(topic.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The voters of `shard`: `factor` of `nodes` by rendezvous (all of them when there are
/// fewer), the preferred leader first.
pub(crate) fn voters(shard: u32, nodes: &[String], factor: usize) -> Vec<String> {
    let key = format!("shard:{shard}");
    ranking(&key, nodes.iter().map(String::as_str))
        .into_iter()
        .take(factor.max(1))
        .map(str::to_string)
        .collect()
}

/// The Raft id of node `name`.
pub(crate) fn node_id(name: &str) -> u64 {
    stable_hash(name.as_bytes())
}

/// Raft id -> name for every node; `Err` names two nodes whose ids collide.
pub(crate) fn node_ids(nodes: &[String]) -> Result<HashMap<u64, String>, (String, String)> {
    let mut ids = HashMap::with_capacity(nodes.len());
    for name in nodes {
        if let Some(other) = ids.insert(node_id(name), name.clone()) {
            if &other != name {
                return Err((other, name.clone()));
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shard_of_is_stable_and_in_range() {
        // Pinned values: a change of hash would move every topic to another shard.
        let table = [
            ("orders", 16, 9),
            ("a", 1, 0),
            ("chat.room-7", 64, 7),
            ("", 8, 3),
        ];
        for (topic, shards, want) in table {
            assert_eq!(shard_of(topic, shards), want, "{topic} of {shards}");
            assert!(shard_of(topic, shards) < shards);
        }
        assert_eq!(
            u64::from(shard_of("orders", 16)),
            stable_hash(b"orders") % 16,
            "the shard is the stable hash modulo the count"
        );
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("topic-{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn voters_table() {
        let three = names(&["n1", "n2", "n3"]);
        let five = names(&["n1", "n2", "n3", "n4", "n5"]);
        let one = names(&["solo"]);
        // (shard, nodes, factor, expected count)
        let table: [(u32, &Vec<String>, usize, usize); 5] = [
            (0, &three, 3, 3),
            (1, &five, 3, 3),
            (2, &three, 5, 3), // fewer nodes than the factor: all of them
            (3, &one, 3, 1),
            (4, &five, 1, 1),
        ];
        for (shard, nodes, factor, count) in table {
            let v = voters(shard, nodes, factor);
            assert_eq!(v.len(), count, "shard {shard}: {v:?}");
            let mut dedup = v.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), v.len(), "distinct voters: {v:?}");
            assert!(v.iter().all(|n| nodes.contains(n)));
            // Every node agrees, whatever the order of its configuration.
            let mut rev = nodes.clone();
            rev.reverse();
            assert_eq!(voters(shard, &rev, factor), v, "order-independent");
        }
    }

    #[test]
    fn preferred_leaders_spread_over_the_nodes() {
        let three = names(&["n1", "n2", "n3"]);
        let mut firsts: HashMap<String, usize> = HashMap::new();
        for shard in 0..300 {
            *firsts
                .entry(voters(shard, &three, 3)[0].clone())
                .or_default() += 1;
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
        assert!(firsts.values().all(|c| (70..130).contains(c)), "{firsts:?}");
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let nodes = names(&["n1", "n2", "n3"]);
        let ids = node_ids(&nodes).expect("no collision");
        assert_eq!(ids.len(), 3);
        for n in &nodes {
            assert_eq!(ids.get(&node_id(n)), Some(n));
            assert_eq!(node_id(n), stable_hash(n.as_bytes()));
        }
        // A name listed twice is the same node, not a collision.
        assert!(node_ids(&names(&["n1", "n1"])).is_ok());
    }
}
