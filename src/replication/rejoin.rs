//! Keeping a shard's membership in step with the replicas the configured nodes have now.
//!
//! Every configured node is a member of every shard: a voter where placement picks it, a
//! learner elsewhere. A node announces its replicas' incarnation ([`super::identity`]); when
//! that differs from the replica a shard's membership holds for it (the node was wiped, or
//! joined a cluster formed without it), the shard's leader adds the new replica as a
//! learner, lets it catch up (log or snapshot), then replaces the old one in one membership
//! change (joint consensus, so the voters stay a majority throughout). Voter *names* never
//! change; only Raft changes who holds each name's place.

use super::types::NodeId;
use std::collections::{BTreeSet, HashMap};

/// How far behind the leader's last entry a new replica may be when it takes a voter's
/// place (it catches up the rest as a voter).
pub(crate) const CATCH_UP_SLACK: u64 = 256;

/// One member of a shard as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberSeen {
    pub id: NodeId,
    pub node: String,
    pub voter: bool,
}

/// What a shard's leader does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Add `id`, a replica of `node`, as a learner (it catches up from the leader).
    AddLearner { id: NodeId, node: String },
    /// Make `voters` the voters, removing the replicas they replace from the group.
    SetVoters {
        voters: BTreeSet<NodeId>,
        removed: BTreeSet<NodeId>,
    },
    /// Remove learners that are replicas a node no longer has.
    Remove(BTreeSet<NodeId>),
}

/// The steps towards a membership holding, for each configured node, the replica it has now.
///
/// `members`: the shard's membership; `configs`: its voter sets (two while a change is half
/// done, a joint config: then the only step is to finish it); `wanted`: each configured node and the replica it
/// announced (`None`: not heard, nothing is done about it); `matched`: the last log index
/// each replica holds as the leader knows it; `last`: the leader's last log index; `voting`:
/// the nodes placement makes the shard's voters (a group started anew by a recovery from a
/// minority has only its recovering node as voter: each other one's replica becomes a voter
/// once it caught up). Learners come first (several at once); at most one membership
/// change, since openraft runs one at a time.
pub(crate) fn plan(
    members: &[MemberSeen],
    configs: &[BTreeSet<NodeId>],
    wanted: &[(String, Option<NodeId>)],
    matched: &HashMap<NodeId, u64>,
    last: u64,
    voting: &BTreeSet<String>,
) -> Vec<Step> {
    if let [.., _, target] = configs {
        let removed = configs
            .iter()
            .flatten()
            .filter(|id| !target.contains(id))
            .copied()
            .collect();
        return vec![Step::SetVoters {
            voters: target.clone(),
            removed,
        }];
    }
    let mut steps = Vec::new();
    let mut change = None;
    let voters: BTreeSet<NodeId> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let ready = |id: &NodeId| matched.get(id).is_some_and(|m| *m + CATCH_UP_SLACK >= last);
    for (node, want) in wanted {
        let Some(want) = *want else { continue };
        let mine: Vec<&MemberSeen> = members.iter().filter(|m| &m.node == node).collect();
        if !mine.iter().any(|m| m.id == want) {
            steps.push(Step::AddLearner {
                id: want,
                node: node.clone(),
            });
            continue;
        }
        if change.is_some() {
            continue;
        }
        let stale: BTreeSet<NodeId> = mine.iter().map(|m| m.id).filter(|id| *id != want).collect();
        if stale.is_empty() {
            continue;
        }
        if stale.iter().any(|id| voters.contains(id)) {
            if ready(&want) {
                let mut next: BTreeSet<NodeId> = voters
                    .iter()
                    .copied()
                    .filter(|v| !stale.contains(v))
                    .collect();
                next.insert(want);
                change = Some(Step::SetVoters {
                    voters: next,
                    removed: stale,
                });
            }
        } else {
            change = Some(Step::Remove(stale));
        }
    }
    if change.is_none() {
        // A voting node none of whose replicas votes: its caught-up replica becomes one.
        change = wanted.iter().find_map(|(node, want)| {
            let want = (*want)?;
            let votes = members.iter().any(|m| &m.node == node && m.voter);
            let learner = members.iter().any(|m| m.id == want);
            (voting.contains(node) && !votes && learner && ready(&want)).then(|| {
                let mut next = voters.clone();
                next.insert(want);
                Step::SetVoters {
                    voters: next,
                    removed: BTreeSet::new(),
                }
            })
        });
    }
    steps.extend(change);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, node: &str, voter: bool) -> MemberSeen {
        MemberSeen {
            id,
            node: node.to_string(),
            voter,
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn wanted(w: &[(&str, Option<NodeId>)]) -> Vec<(String, Option<NodeId>)> {
        w.iter().map(|(n, id)| (n.to_string(), *id)).collect()
    }

    #[test]
    fn plans() {
        // Voters a=10, b=20, c=30 (replicas of a, b, c); d=40 a learner.
        let formed = vec![
            member(10, "a", true),
            member(20, "b", true),
            member(30, "c", true),
            member(40, "d", false),
        ];
        let all_caught_up: HashMap<NodeId, u64> =
            [(20, 1000), (30, 1000), (31, 1000), (40, 1000), (41, 900)].into();
        let nothing_known: HashMap<NodeId, u64> = HashMap::new();
        let behind: HashMap<NodeId, u64> = HashMap::from([(31, 500)]);
        let at_slack: HashMap<NodeId, u64> = HashMap::from([(31, 1000 - CATCH_UP_SLACK)]);
        let steady = wanted(&[
            ("a", Some(10)),
            ("b", Some(20)),
            ("c", Some(30)),
            ("d", Some(40)),
        ]);
        type Wanted = Vec<(String, Option<NodeId>)>;
        type Case<'a> = (
            &'a str,
            Vec<MemberSeen>,
            Wanted,
            &'a HashMap<NodeId, u64>,
            Vec<Step>,
        );
        let cases: Vec<Case> = vec![
            (
                "every node has the replica it announced",
                formed.clone(),
                steady.clone(),
                &all_caught_up,
                vec![],
            ),
            (
                "unheard nodes are left alone",
                formed.clone(),
                wanted(&[("a", Some(10)), ("c", None), ("d", None)]),
                &all_caught_up,
                vec![],
            ),
            (
                "c came back wiped as 31: add it as a learner",
                formed.clone(),
                wanted(&[
                    ("a", Some(10)),
                    ("b", Some(20)),
                    ("c", Some(31)),
                    ("d", Some(40)),
                ]),
                &nothing_known,
                vec![Step::AddLearner {
                    id: 31,
                    node: "c".into(),
                }],
            ),
            (
                "31 added but not caught up: wait",
                [formed.clone(), vec![member(31, "c", false)]].concat(),
                wanted(&[("c", Some(31))]),
                &behind,
                vec![],
            ),
            (
                "31 caught up: it takes 30's place",
                [formed.clone(), vec![member(31, "c", false)]].concat(),
                wanted(&[("c", Some(31))]),
                &all_caught_up,
                vec![Step::SetVoters {
                    voters: set(&[10, 20, 31]),
                    removed: set(&[30]),
                }],
            ),
            (
                "within the slack counts as caught up",
                [formed.clone(), vec![member(31, "c", false)]].concat(),
                wanted(&[("c", Some(31))]),
                &at_slack,
                vec![Step::SetVoters {
                    voters: set(&[10, 20, 31]),
                    removed: set(&[30]),
                }],
            ),
            (
                "a learner node's new replica replaces its old one",
                [formed.clone(), vec![member(41, "d", false)]].concat(),
                wanted(&[("d", Some(41))]),
                &all_caught_up,
                vec![Step::Remove(set(&[40]))],
            ),
            (
                "a left-over joint config: both replicas voters, the stale one goes",
                [formed.clone(), vec![member(31, "c", true)]].concat(),
                wanted(&[("c", Some(31))]),
                &all_caught_up,
                vec![Step::SetVoters {
                    voters: set(&[10, 20, 31]),
                    removed: set(&[30]),
                }],
            ),
            (
                "learners for several nodes at once, one change at a time",
                [
                    formed.clone(),
                    vec![member(31, "c", false), member(41, "d", false)],
                ]
                .concat(),
                wanted(&[("b", Some(21)), ("c", Some(31)), ("d", Some(41))]),
                &all_caught_up,
                vec![
                    Step::AddLearner {
                        id: 21,
                        node: "b".into(),
                    },
                    Step::SetVoters {
                        voters: set(&[10, 20, 31]),
                        removed: set(&[30]),
                    },
                ],
            ),
            (
                "a configured node missing from the group is added",
                formed[..3].to_vec(),
                steady,
                &all_caught_up,
                vec![Step::AddLearner {
                    id: 40,
                    node: "d".into(),
                }],
            ),
        ];
        let voting: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        for (what, members, wanted, matched, want) in cases {
            let voters: BTreeSet<NodeId> =
                members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            assert_eq!(
                plan(&members, &[voters], &wanted, matched, 1000, &voting),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn a_group_started_anew_takes_the_voting_nodes_back_one_at_a_time() {
        // A recovery left a (11) the only voter; b's new replica caught up, c's did not,
        // d is no voting node.
        let members = vec![
            member(11, "a", true),
            member(21, "b", false),
            member(31, "c", false),
            member(41, "d", false),
        ];
        let voting: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let wanted = wanted(&[
            ("a", Some(11)),
            ("b", Some(21)),
            ("c", Some(31)),
            ("d", Some(41)),
        ]);
        let matched: HashMap<NodeId, u64> = [(21, 1000), (31, 10), (41, 1000)].into();
        let step = |voters: &[NodeId]| Step::SetVoters {
            voters: set(voters),
            removed: BTreeSet::new(),
        };
        let configs = [set(&[11])];
        assert_eq!(
            plan(&members, &configs, &wanted, &matched, 1000, &voting),
            vec![step(&[11, 21])]
        );
        // Once b votes, c is next when it caught up; d never.
        let mut members = members;
        members[1].voter = true;
        let configs = [set(&[11, 21])];
        assert_eq!(
            plan(&members, &configs, &wanted, &matched, 1000, &voting),
            vec![]
        );
        let matched: HashMap<NodeId, u64> = [(21, 1000), (31, 1000), (41, 1000)].into();
        assert_eq!(
            plan(&members, &configs, &wanted, &matched, 1000, &voting),
            vec![step(&[11, 21, 31])]
        );
    }

    #[test]
    fn a_change_left_half_done_is_finished_first() {
        // Joint config {10,20,30} + {10,20,31} (a leader died mid-change), and meanwhile
        // b came back as 21: first the joint config is finished, nothing else.
        let members = vec![
            member(10, "a", true),
            member(20, "b", true),
            member(30, "c", true),
            member(31, "c", true),
        ];
        let configs = [set(&[10, 20, 30]), set(&[10, 20, 31])];
        let wanted = wanted(&[("b", Some(21)), ("c", Some(31))]);
        let caught_up: HashMap<NodeId, u64> = [(20, 1000), (31, 1000)].into();
        let voting: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(
            plan(&members, &configs, &wanted, &caught_up, 1000, &voting),
            vec![Step::SetVoters {
                voters: set(&[10, 20, 31]),
                removed: set(&[30])
            }]
        );
    }
}
