//! Whether nodes have formed a cluster: every node ready and seeing every node `up`
//! (`starling up` reports it; `starling chaos` waits for it).

use crate::Client;
use std::collections::BTreeSet;

/// What one node answered.
#[derive(Clone, Debug)]
pub struct Probe {
    pub ready: bool,
    /// The members it sees `up`; `None` if it did not answer.
    pub sees_up: Option<BTreeSet<String>>,
}

/// Asks `node` whether it is ready and whom it sees up.
pub async fn probe(node: &Client) -> Probe {
    let ready = node.ready().await;
    let sees_up = node
        .cluster()
        .await
        .ok()
        .map(|c| c.up().map(str::to_string).collect());
    Probe { ready, sees_up }
}

/// The listed nodes that are up: ready, and seen `up` by every node that answered.
pub fn nodes_up<'a>(ids: &'a [String], probes: &[Probe]) -> Vec<&'a str> {
    let seen_by_all = |id: &String| {
        probes
            .iter()
            .all(|q| q.sees_up.as_ref().is_none_or(|s| s.contains(id)))
    };
    let up = ids
        .iter()
        .zip(probes)
        .filter(|(id, p)| p.ready && seen_by_all(id));
    up.map(|(id, _)| id.as_str()).collect()
}

/// Formed: every node answered, and every node is up in every view.
pub fn formed(ids: &[String], probes: &[Probe]) -> bool {
    probes.iter().all(|p| p.sees_up.is_some()) && nodes_up(ids, probes).len() == ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ready: bool, sees: Option<&[&str]>) -> Probe {
        let sees_up = sees.map(|s| s.iter().map(|id| id.to_string()).collect());
        Probe { ready, sees_up }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_counts_when_ready_and_seen_up_by_everyone() {
        assert!(formed(&ids(&["n1"]), &[probe(true, Some(&["n1"]))]));
        let ids = ids(&["n1", "n2", "n3"]);
        let (n1, n2, n3) = (Some(&["n1"][..]), Some(&["n2"][..]), Some(&["n3"][..]));
        let alone = [probe(true, n1), probe(true, n2), probe(true, n3)];
        assert!(nodes_up(&ids, &alone).is_empty());
        let (all, two) = (Some(&["n1", "n2", "n3"][..]), Some(&["n1", "n2"][..]));
        let partial = [probe(true, all), probe(true, two), probe(false, None)];
        assert_eq!(nodes_up(&ids, &partial), ["n1", "n2"]);
        assert!(!formed(&ids, &partial));
        assert!(formed(
            &ids,
            &[probe(true, all), probe(true, all), probe(true, all)]
        ));
    }
}
