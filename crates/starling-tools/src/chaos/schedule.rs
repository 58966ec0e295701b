//! The fault schedule: a scenario's script, or its random faults drawn from a seed, as a
//! time-ordered list of operations. Pure: the same scenario and seed give the same schedule.
//!
//! A random schedule keeps at most [`max_down`] nodes down at any instant (see the
//! [scenario](super::scenario) docs) unless the scenario sets `majority_faults`: a fault that
//! would take more down is not drawn, and the next draw comes one `every_s` later.

use super::history::FaultKind;
use super::scenario::{max_down, partition_down, Action, RandomFaults, Scenario};

/// No random fault starts later than this before the workload ends, so every one has
/// ended (and its node had a moment to come back) when the workload stops.
const END_MARGIN_MS: u64 = 2_000;
/// A fault that must wait for another to end starts this long after it.
const GAP_MS: u64 = 500;

/// One thing the injector does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `kill -9`.
    Kill(String),
    /// Start a killed or terminated node again.
    Restart(String),
    /// `kill -STOP`.
    Stop(String),
    /// `kill -CONT`.
    Cont(String),
    /// Cut these nodes off from the rest.
    Partition(Vec<String>),
    /// End the partition that isolated these nodes.
    Heal(Vec<String>),
    /// SIGTERM, waiting for the drain.
    Term(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Milliseconds after the workload started.
    pub at_ms: u64,
    pub op: Op,
}

/// One fault of a random schedule, from start to end.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    start_ms: u64,
    end_ms: u64,
    kind: FaultKind,
    node: String,
}

/// splitmix64: tiny, seedable, good enough to draw a schedule.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The schedule of a validated scenario.
pub fn build(scenario: &Scenario, seed: u64) -> Vec<Step> {
    let duration_ms = scenario.duration_s * 1000;
    let nodes = scenario.node_ids();
    // Without majority faults, a minority; with them, only `max_concurrent` bounds it.
    let most_down = match scenario.faults.majority_faults {
        true => nodes.len(),
        false => max_down(nodes.len()),
    };
    match &scenario.faults.random {
        Some(r) => random(r, &nodes, most_down, duration_ms, seed),
        None => scripted(scenario),
    }
}

fn scripted(scenario: &Scenario) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut isolated = Vec::new();
    for s in &scenario.faults.step {
        let at_ms = s.at_s * 1000;
        let node = s.node.clone().unwrap_or_default();
        let op = match s.action {
            Action::Kill => Op::Kill(node),
            Action::Restart => Op::Restart(node),
            Action::Stop => Op::Stop(node),
            Action::Cont => Op::Cont(node),
            Action::Partition => {
                isolated = s.nodes.clone().unwrap_or_default();
                Op::Partition(isolated.clone())
            }
            Action::Heal => Op::Heal(std::mem::take(&mut isolated)),
            Action::Term => {
                let back = at_ms + s.last_s.unwrap_or(1) * 1000;
                steps.push(Step {
                    at_ms: back,
                    op: Op::Restart(node.clone()),
                });
                Op::Term(node)
            }
        };
        steps.push(Step { at_ms, op });
    }
    steps.sort_by_key(|s| s.at_ms);
    steps
}

fn random(
    r: &RandomFaults,
    nodes: &[String],
    most_down: usize,
    duration_ms: u64,
    seed: u64,
) -> Vec<Step> {
    let windows = random_windows(r, nodes, most_down, duration_ms, seed);
    let mut steps = Vec::new();
    for w in windows {
        let n = w.node;
        let (start, end) = match w.kind {
            FaultKind::Kill => (Op::Kill(n.clone()), Op::Restart(n)),
            FaultKind::Term => (Op::Term(n.clone()), Op::Restart(n)),
            FaultKind::Stop => (Op::Stop(n.clone()), Op::Cont(n)),
            FaultKind::Partition => (Op::Partition(vec![n.clone()]), Op::Heal(vec![n])),
        };
        steps.push(Step {
            at_ms: w.start_ms,
            op: start,
        });
        steps.push(Step {
            at_ms: w.end_ms,
            op: end,
        });
    }
    // Stable: at one instant, an end listed before a start stays first.
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// Nodes the `active` faults take down together (a partition overlaps no other fault).
fn down(nodes: usize, active: &[&Window]) -> usize {
    active
        .iter()
        .map(|w| match w.kind {
            FaultKind::Partition => partition_down(nodes, 1),
            _ => 1,
        })
        .sum()
}

/// Draws fault windows: a start every `every_s`, lasting `last_s`, on a node no other
/// fault holds, at most `max_concurrent` at once and at most `most_down` nodes down; a
/// partition overlaps no other fault (it is applied on every node, so all must be running).
/// A start where no kind fits is skipped.
fn random_windows(
    r: &RandomFaults,
    nodes: &[String],
    most_down: usize,
    duration_ms: u64,
    seed: u64,
) -> Vec<Window> {
    let mut rng = SplitMix64::new(seed);
    let horizon = duration_ms.saturating_sub(END_MARGIN_MS);
    let (every, last) = (r.every_s.map(|s| s * 1000), r.last_s.map(|s| s * 1000));
    let mut windows: Vec<Window> = Vec::new();
    let mut t = 0;
    loop {
        t += rng.range(every[0], every[1]);
        // Wait for room: fewer than `max_concurrent` active, none of them a partition, fewer
        // than `most_down` nodes down (every fault takes at least one down).
        loop {
            let active: Vec<&Window> = windows.iter().filter(|w| w.end_ms > t).collect();
            let full = active.len() >= r.max_concurrent
                || active.iter().any(|w| w.kind == FaultKind::Partition)
                || down(nodes.len(), &active) >= most_down;
            match active.iter().map(|w| w.end_ms).min() {
                Some(end) if full => t = end + GAP_MS,
                _ => break,
            }
        }
        let length = rng.range(last[0], last[1]);
        if t + length > horizon {
            return windows;
        }
        let active: Vec<&Window> = windows.iter().filter(|w| w.end_ms > t).collect();
        let now_down = down(nodes.len(), &active);
        let kinds: Vec<FaultKind> = r
            .kinds
            .iter()
            .copied()
            .filter(|k| match k {
                FaultKind::Partition => {
                    active.is_empty() && partition_down(nodes.len(), 1) <= most_down
                }
                _ => now_down < most_down,
            })
            .collect();
        let free: Vec<&String> = nodes
            .iter()
            .filter(|n| active.iter().all(|w| &w.node != *n))
            .collect();
        if kinds.is_empty() || free.is_empty() {
            continue;
        }
        let kind = *rng.pick(&kinds);
        let node = (*rng.pick(&free)).clone();
        windows.push(Window {
            start_ms: t,
            end_ms: t + length,
            kind,
            node,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn spec(kinds: &[FaultKind], max_concurrent: usize) -> RandomFaults {
        RandomFaults {
            kinds: kinds.to_vec(),
            every_s: [2, 5],
            last_s: [1, 4],
            max_concurrent,
        }
    }

    const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Partition,
        FaultKind::Term,
    ];

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let r = spec(&ALL, 2);
        let a = random(&r, &nodes(5), 2, 120_000, 42);
        assert_eq!(a, random(&r, &nodes(5), 2, 120_000, 42));
        assert_ne!(a, random(&r, &nodes(5), 2, 120_000, 43));
        assert!(a.len() > 10, "{a:?}");
    }

    #[test]
    fn random_faults_respect_their_bounds() {
        for seed in 0..200 {
            for max in 1..=2 {
                let r = spec(&ALL, max);
                // Majority faults allowed: `max_concurrent` alone bounds them here.
                let ws = random_windows(&r, &nodes(3), 3, 60_000, seed);
                for w in &ws {
                    assert!(w.end_ms <= 60_000 - END_MARGIN_MS, "ends too late: {w:?}");
                    assert!((1000..=4000).contains(&(w.end_ms - w.start_ms)));
                    let overlapping: Vec<&Window> = ws
                        .iter()
                        .filter(|o| o.start_ms < w.end_ms && w.start_ms < o.end_ms)
                        .collect();
                    let at_start = ws
                        .iter()
                        .filter(|o| o.start_ms <= w.start_ms && w.start_ms < o.end_ms)
                        .count();
                    assert!(at_start <= max, "seed {seed}: {ws:?}");
                    let same_node = overlapping.iter().filter(|o| o.node == w.node).count();
                    assert_eq!(same_node, 1, "a node faulted twice at once: {ws:?}");
                    if w.kind == FaultKind::Partition {
                        assert_eq!(overlapping.len(), 1, "partition overlaps: {ws:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_the_asked_kinds_are_drawn_and_every_fault_ends() {
        for seed in 0..50 {
            let steps = random(&spec(&[FaultKind::Stop], 1), &nodes(3), 1, 60_000, seed);
            assert!(!steps.is_empty());
            let stops = steps.iter().filter(|s| matches!(s.op, Op::Stop(_))).count();
            let conts = steps.iter().filter(|s| matches!(s.op, Op::Cont(_))).count();
            assert_eq!((stops, conts), (steps.len() / 2, steps.len() / 2));
            assert!(steps.windows(2).all(|p| p[0].at_ms <= p[1].at_ms));
        }
    }

    /// The most nodes down at once, after each op in turn: killed, stopped or terminated
    /// until restarted or continued, or on a side of a partition that is not a majority.
    fn peak_down(steps: &[Step], n: usize) -> usize {
        let all = nodes(n);
        let mut out: BTreeSet<&String> = BTreeSet::new();
        let mut cut: Vec<&String> = Vec::new();
        let mut peak = 0;
        for (i, s) in steps.iter().enumerate() {
            assert!(i == 0 || steps[i - 1].at_ms <= s.at_ms, "not in time order");
            match &s.op {
                Op::Kill(x) | Op::Stop(x) | Op::Term(x) => assert!(out.insert(x), "{x} twice"),
                Op::Restart(x) | Op::Cont(x) => assert!(out.remove(x), "{x} was not down"),
                Op::Partition(xs) => cut = all.iter().filter(|x| xs.contains(x)).collect(),
                Op::Heal(_) => cut.clear(),
            }
            let mut down = out.clone();
            if !cut.is_empty() {
                let rest: Vec<&String> = all.iter().filter(|x| !cut.contains(x)).collect();
                for side in [&cut, &rest] {
                    if 2 * side.len() <= n {
                        down.extend(side.iter().copied());
                    }
                }
            }
            peak = peak.max(down.len());
        }
        peak
    }

    /// Faults that overlap a lot: a start every 1-3 s, each lasting 5-10 s.
    fn crowded(n: usize, majority: bool, max_concurrent: usize) -> Scenario {
        Scenario::parse(&format!(
            "nodes = {n}\nduration_s = 600\n[faults]\nmajority_faults = {majority}\n\
             random = {{ kinds = [\"kill\", \"stop\", \"partition\", \"term\"], \
             every_s = [1, 3], last_s = [5, 10], max_concurrent = {max_concurrent} }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn random_schedules_keep_a_majority_up_at_every_instant() {
        for n in [3, 5] {
            let most = max_down(n);
            let (mut peak, mut partitions) = (0, 0);
            for seed in 0..300 {
                // The scenario's own bound, through `build`.
                let steps = build(&crowded(n, false, most), seed);
                let p = peak_down(&steps, n);
                assert!(p <= most, "n={n} seed {seed}: {p} down: {steps:?}");
                // The scheduler's bound even where `max_concurrent` would allow more.
                let steps = random(&spec(&ALL, n - 1), &nodes(n), most, 600_000, seed);
                let q = peak_down(&steps, n);
                assert!(q <= most, "n={n} seed {seed}: {q} down: {steps:?}");
                peak = peak.max(p).max(q);
                partitions += steps
                    .iter()
                    .filter(|s| matches!(s.op, Op::Partition(_)))
                    .count();
            }
            assert_eq!(peak, most, "n={n}: the bound is reached");
            assert!(partitions > 0, "n={n}: partitions are drawn too");
        }
    }

    #[test]
    fn majority_faults_may_take_a_majority_down() {
        for n in [3, 5] {
            let peak = (0..50)
                .map(|seed| peak_down(&build(&crowded(n, true, n - 1), seed), n))
                .max();
            assert_eq!(peak, Some(n - 1), "n={n}");
        }
    }

    #[test]
    fn a_script_becomes_ordered_steps_and_a_term_restarts() {
        let s = Scenario::parse(
            // Two nodes of three down at once (n2 and n1) needs majority faults.
            "duration_s = 30\n[faults]\nmajority_faults = true\n\
             [[faults.step]]\nat_s = 2\naction = \"term\"\nnode = \"n2\"\nlast_s = 5\n\
             [[faults.step]]\nat_s = 3\naction = \"stop\"\nnode = \"n1\"\n\
             [[faults.step]]\nat_s = 4\naction = \"cont\"\nnode = \"n1\"\n\
             [[faults.step]]\nat_s = 10\naction = \"partition\"\nnodes = [\"n3\"]\n\
             [[faults.step]]\nat_s = 12\naction = \"heal\"\n",
        )
        .unwrap();
        let ops: Vec<(u64, Op)> = build(&s, 1).into_iter().map(|s| (s.at_ms, s.op)).collect();
        assert_eq!(
            ops,
            vec![
                (2000, Op::Term("n2".into())),
                (3000, Op::Stop("n1".into())),
                (4000, Op::Cont("n1".into())),
                (7000, Op::Restart("n2".into())),
                (10000, Op::Partition(vec!["n3".into()])),
                (12000, Op::Heal(vec!["n3".into()])),
            ]
        );
    }
}
