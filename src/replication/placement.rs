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

/// The topics `log` holds that belong to `shard` (of `shards`), in name order.
pub(crate) fn topics_of(
    log: &dyn crate::storage::TopicLog,
    shard: u32,
    shards: u32,
) -> Result<Vec<String>, crate::storage::StorageError> {
    let mut topics = log.topics()?;
    topics.retain(|t| shard_of(t, shards) == shard);
    topics.sort();
    Ok(topics)
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

/// The Raft id of incarnation `incarnation` of node `name`'s replicas: the name's stable
/// hash with the incarnation in its low 32 bits (XOR), so incarnation 0 is the hash itself
/// (the id every replica had before incarnations existed) and the high 32 bits name the node.
pub(crate) fn replica_id(name: &str, incarnation: u32) -> u64 {
    stable_hash(name.as_bytes()) ^ u64::from(incarnation)
}

/// Node names by the node part of Raft ids (whatever the incarnation).
#[derive(Debug, Default)]
pub(crate) struct Names(HashMap<u32, String>);

impl Names {
    /// `Err` names two nodes whose ids collide.
    pub(crate) fn new(nodes: &[String]) -> Result<Names, (String, String)> {
        let mut ids = HashMap::with_capacity(nodes.len());
        for name in nodes {
            if let Some(other) = ids.insert(node_part(replica_id(name, 0)), name.clone()) {
                if &other != name {
                    return Err((other, name.clone()));
                }
            }
        }
        Ok(Names(ids))
    }

    /// The node that Raft id `id` is a replica of.
    pub(crate) fn of(&self, id: u64) -> Option<&str> {
        self.0.get(&node_part(id)).map(String::as_str)
    }
}

fn node_part(id: u64) -> u32 {
    // The high half of a u64 fits a u32.
    (id >> 32) as u32
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
    fn replica_ids_name_their_node_whatever_the_incarnation() {
        let nodes = names(&["n1", "n2", "n3"]);
        let by_id = Names::new(&nodes).expect("no collision");
        for n in &nodes {
            // Incarnation 0 is the id replicas had before incarnations: stores keep working.
            assert_eq!(replica_id(n, 0), stable_hash(n.as_bytes()));
            for inc in [0, 1, 0xdead_beef, u32::MAX] {
                assert_eq!(by_id.of(replica_id(n, inc)), Some(n.as_str()), "{n} {inc}");
            }
            assert_ne!(replica_id(n, 0), replica_id(n, 1), "incarnations differ");
        }
        assert_eq!(by_id.of(replica_id("stranger", 0)), None);
        // A name listed twice is the same node, not a collision.
        assert!(Names::new(&names(&["n1", "n1"])).is_ok());
    }
}
