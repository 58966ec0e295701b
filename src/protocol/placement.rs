//! Placement: a stable hash, and rendezvous (highest-random-weight) hashing over a set of
//! members: every node computes the same ranking from the same set, a member leaving moves
//! only what it won, and a member joining takes only what it now wins (about 1/N). Shards
//! pick their voters with it (`replication::placement`), storage its message trees.
//!
//! The hash is spelled out here (FNV-1a, then a 64-bit finalizer) rather than taken from
//! `std`, whose hasher may change between Rust releases: nodes built by different compilers
//! must agree.

/// The owner of `topic` among `members`, or `None` if there are none.
pub fn owner<'a>(topic: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members.into_iter().max_by_key(|m| (weight(m, topic), *m))
}

/// The members in the order they would own `topic`: the owner first, then who takes over if
/// it leaves, and so on.
pub fn ranking<'a>(topic: &str, members: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ranked: Vec<&str> = members.into_iter().collect();
    ranked.sort_by_key(|m| std::cmp::Reverse((weight(m, topic), *m)));
    ranked
}

fn weight(member: &str, topic: &str) -> u64 {
    hash_bytes(member.bytes().chain([0xff]).chain(topic.bytes()))
}

/// A stable 64-bit hash of `key`, the same on every build (placement's hash, for anything
/// else that must spread keys the same way everywhere, e.g. storage's message trees).
pub fn stable_hash(key: &[u8]) -> u64 {
    hash_bytes(key.iter().copied())
}

/// FNV-1a over `bytes`, then [`mix`].
fn hash_bytes(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn topics(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("topic-{i}")).collect()
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Stored data depends on it (storage stripes): it must never change.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"user.42"), 0xb240_8c5a_d508_9e6d);
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner("t", std::iter::empty()), None);
    }

    #[test]
    fn balanced_across_three_and_five_nodes() {
        for members in [vec!["n1", "n2", "n3"], vec!["a", "b", "c", "d", "e"]] {
            let ts = topics(30_000);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for t in &ts {
                *counts
                    .entry(owner(t, members.iter().copied()).unwrap())
                    .or_default() += 1;
            }
            let fair = ts.len() / members.len();
            for m in &members {
                let c = counts.get(m).copied().unwrap_or(0);
                assert!(
                    c.abs_diff(fair) * 100 < fair * 5,
                    "{m} owns {c} of {}, fair share {fair}: {counts:?}",
                    ts.len()
                );
            }
        }
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_topics() {
        let all = ["n1", "n2", "n3", "n4"];
        let rest = ["n1", "n2", "n4"];
        let mut moved = 0;
        for t in topics(10_000) {
            let before = owner(&t, all).unwrap();
            let after = owner(&t, rest).unwrap();
            if before == "n3" {
                moved += 1;
                assert_eq!(after, ranking(&t, all)[1], "goes to the runner-up");
            } else {
                assert_eq!(before, after, "{t} moved although its owner stayed");
            }
        }
        assert!((2_000..3_000).contains(&moved), "n3 owned {moved} of 10000");
    }

    #[test]
    fn a_joining_node_takes_about_one_nth_and_only_for_itself() {
        let before_set = ["n1", "n2", "n3"];
        let after_set = ["n1", "n2", "n3", "n4"];
        let mut taken = 0;
        for t in topics(10_000) {
            let before = owner(&t, before_set).unwrap();
            let after = owner(&t, after_set).unwrap();
            if before != after {
                assert_eq!(after, "n4", "{t} moved between old members");
                taken += 1;
            }
        }
        assert!((2_000..3_000).contains(&taken), "n4 took {taken} of 10000");
    }

    proptest! {
        #[test]
        fn every_node_agrees_whatever_the_order(topic in "[a-z0-9.:_-]{1,40}", rot in 0usize..5) {
            let mut members = vec!["n1", "n2", "n3", "n4", "n5"];
            let reference = owner(&topic, members.clone());
            members.rotate_left(rot);
            prop_assert_eq!(owner(&topic, members.clone()), reference);
            let ranked = ranking(&topic, members.clone());
            prop_assert_eq!(ranked.first().copied(), reference);
            prop_assert_eq!(ranked.len(), members.len());
        }
    }
}
