//! A chaos scenario, as data: the cluster's size, the workload, and the faults (a seeded
//! random schedule or a script). Parsed from TOML and validated with errors that name the
//! offending key.
//!
//! A node is *down* while it is killed (until restarted), stopped (until continued),
//! terminated (until started again) or on a side of a partition that is not a majority of
//! the nodes (both sides, when neither is). Every shard is a Raft group over a majority, so
//! by default at most [`max_down`] nodes (a minority) are down at any instant: a script that
//! takes more down is refused, naming the step, and a random schedule never draws such a
//! fault. `[faults] majority_faults = true` allows both.

use super::history::FaultKind;
use serde::Deserialize;

/// Why a scenario cannot be used. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Parse(String),
    #[error("scenario key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Nodes in the cluster: `n1`, `n2`, ...
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    /// How long the workload runs (faults included); settling comes after.
    pub duration_s: u64,
    /// Topics the workload publishes to: `t0`, `t1`, ...
    #[serde(default = "default_topics")]
    pub topics: usize,
    /// How long healing may take: the bound for convergence after every fault ended.
    #[serde(default = "default_convergence_s")]
    pub convergence_s: u64,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Faults,
}

fn default_nodes() -> usize {
    3
}
fn default_topics() -> usize {
    4
}
fn default_convergence_s() -> u64 {
    30
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub http_publishers: usize,
    pub ws_publishers: usize,
    /// Publishes per second, per publisher.
    pub publish_rate: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            http_publishers: 2,
            ws_publishers: 2,
            publish_rate: 20,
        }
    }
}

/// Either `random` or a list of `step`s (or neither: no faults).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub random: Option<RandomFaults>,
    pub step: Vec<ScriptStep>,
    /// Allows faults that take a majority of the nodes down at once (see the module docs).
    /// The checker then takes acks in announced-lost epochs as information, not violations.
    pub majority_faults: bool,
}

/// How many of `nodes` nodes may be down at once without `majority_faults`: a minority,
/// `(nodes - 1) / 2`.
pub fn max_down(nodes: usize) -> usize {
    nodes.saturating_sub(1) / 2
}

/// How many of `nodes` nodes a partition that cuts `isolated` of them off from the rest
/// takes down: every side that is not a majority (both, when neither is).
pub fn partition_down(nodes: usize, isolated: usize) -> usize {
    let rest = nodes.saturating_sub(isolated);
    let down = |side: usize| if 2 * side > nodes { 0 } else { side };
    down(isolated) + down(rest)
}

/// A seeded random schedule: a fault of one of `kinds` every `every_s` (a range), lasting
/// `last_s` (a range), at most `max_concurrent` at a time.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    pub kinds: Vec<FaultKind>,
    pub every_s: [u64; 2],
    pub last_s: [u64; 2],
    #[serde(default = "one")]
    pub max_concurrent: usize,
}

fn one() -> usize {
    1
}

/// What a scripted step does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill,
    Restart,
    Stop,
    Cont,
    Partition,
    Heal,
    /// SIGTERM, then start again after `last_s`.
    Term,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    pub at_s: u64,
    pub action: Action,
    /// The node of `kill`, `restart`, `stop`, `cont`, `term`.
    pub node: Option<String>,
    /// The nodes `partition` isolates from the rest.
    pub nodes: Option<Vec<String>>,
    /// How long a `term`'s node stays down.
    pub last_s: Option<u64>,
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    pub fn node_ids(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }

    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(|i| format!("t{i}")).collect()
    }

    /// Checks every key; also after `duration_s` was overridden.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if !(1..=16).contains(&self.nodes) {
            return Err(invalid("nodes", "must be 1 to 16"));
        }
        if self.duration_s == 0 {
            return Err(invalid("duration_s", "must be greater than 0"));
        }
        if !(1..=100).contains(&self.topics) {
            return Err(invalid("topics", "must be 1 to 100"));
        }
        if self.convergence_s == 0 {
            return Err(invalid("convergence_s", "must be greater than 0"));
        }
        let w = &self.workload;
        if w.http_publishers + w.ws_publishers == 0 {
            return Err(invalid(
                "workload.http_publishers",
                "at least one publisher (HTTP or WebSocket) is needed",
            ));
        }
        if !(1..=1000).contains(&w.publish_rate) {
            return Err(invalid("workload.publish_rate", "must be 1 to 1000"));
        }
        match (&self.faults.random, self.faults.step.is_empty()) {
            (Some(_), false) => Err(invalid("faults", "use either `random` or `step`, not both")),
            (Some(r), true) => self.validate_random(r),
            (None, _) => self.validate_steps(),
        }
    }

    fn validate_random(&self, r: &RandomFaults) -> Result<(), ScenarioError> {
        if r.kinds.is_empty() {
            return Err(invalid(
                "faults.random.kinds",
                "must name at least one kind",
            ));
        }
        if r.kinds.contains(&FaultKind::Partition) && self.nodes < 2 {
            return Err(invalid(
                "faults.random.kinds",
                "a partition needs at least 2 nodes",
            ));
        }
        for (key, [lo, hi]) in [("every_s", r.every_s), ("last_s", r.last_s)] {
            if lo == 0 || lo > hi {
                return Err(invalid(
                    format!("faults.random.{key}"),
                    "must be [low, high] with 0 < low <= high",
                ));
            }
        }
        if r.max_concurrent == 0 || r.max_concurrent >= self.nodes {
            return Err(invalid(
                "faults.random.max_concurrent",
                "must be at least 1 and less than `nodes` (one node stays healthy)",
            ));
        }
        let most = max_down(self.nodes);
        if !self.faults.majority_faults && most == 0 {
            return Err(invalid(
                "faults.random",
                format!(
                    "with {} nodes any fault takes a majority down: use at least 3 nodes, \
                     or set `faults.majority_faults = true`",
                    self.nodes
                ),
            ));
        }
        if !self.faults.majority_faults && r.max_concurrent > most {
            return Err(invalid(
                "faults.random.max_concurrent",
                format!(
                    "{} faults at once could take a majority of the {} nodes down: at most {most}, \
                     or set `faults.majority_faults = true`",
                    r.max_concurrent, self.nodes
                ),
            ));
        }
        Ok(())
    }

    fn validate_steps(&self) -> Result<(), ScenarioError> {
        let ids = self.node_ids();
        let mut sim = Script::new(&ids);
        let most = max_down(self.nodes);
        let mut prev = 0;
        for (i, step) in self.faults.step.iter().enumerate() {
            let key = |k: &str| format!("faults.step[{i}].{k}");
            if step.at_s < prev {
                return Err(invalid(key("at_s"), "steps must be in time order"));
            }
            prev = step.at_s;
            let end = step.at_s + step.last_s.unwrap_or(0);
            if end >= self.duration_s {
                return Err(invalid(
                    key("at_s"),
                    format!(
                        "every fault must end before the workload ends ({} s)",
                        self.duration_s
                    ),
                ));
            }
            sim.apply(step).map_err(|(k, m)| invalid(key(k), m))?;
            let down = sim.down();
            if !self.faults.majority_faults && down > most {
                return Err(invalid(
                    key("action"),
                    format!(
                        "takes {down} of {} nodes down at once (killed, stopped, terminated or \
                         cut off from a majority); at most {most} may be down, or set \
                         `faults.majority_faults = true`",
                        self.nodes
                    ),
                ));
            }
        }
        sim.finish().map_err(|m| invalid("faults.step", m))
    }
}

/// What each node is doing while a script is checked step by step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Running,
    Killed,
    Stopped,
    /// SIGTERMed; starts again at this second.
    Termed(u64),
}

struct Script<'a> {
    ids: &'a [String],
    state: Vec<NodeState>,
    /// How many nodes the partition in progress isolates.
    partitioned: Option<usize>,
}

type StepError = (&'static str, String);

impl<'a> Script<'a> {
    fn new(ids: &'a [String]) -> Self {
        Script {
            ids,
            state: vec![NodeState::Running; ids.len()],
            partitioned: None,
        }
    }

    /// Nodes down now: not running, or cut off from a majority.
    fn down(&self) -> usize {
        let stopped = self
            .state
            .iter()
            .filter(|s| **s != NodeState::Running)
            .count();
        // A partition overlaps no other fault, so the two never count a node twice.
        stopped
            + self
                .partitioned
                .map_or(0, |k| partition_down(self.ids.len(), k))
    }

    fn node(&self, step: &ScriptStep) -> Result<usize, StepError> {
        let id = step
            .node
            .as_deref()
            .ok_or(("node", "this action needs `node`".to_string()))?;
        self.ids
            .iter()
            .position(|n| n == id)
            .ok_or(("node", format!("no node {id} in this cluster")))
    }

    fn expect(&self, n: usize, want: NodeState, what: &str) -> Result<(), StepError> {
        if self.state[n] != want {
            return Err(("action", format!("{} is not {what}", self.ids[n])));
        }
        Ok(())
    }

    fn quiet(&self) -> Result<(), StepError> {
        if self.partitioned.is_some() {
            return Err((
                "action",
                "no other fault may run during a partition".to_string(),
            ));
        }
        Ok(())
    }

    fn apply(&mut self, step: &ScriptStep) -> Result<(), StepError> {
        use NodeState::*;
        for s in &mut self.state {
            if matches!(*s, Termed(until) if until <= step.at_s) {
                *s = Running;
            }
        }
        if step.last_s.is_some() && step.action != Action::Term {
            return Err(("last_s", "only a `term` step takes `last_s`".into()));
        }
        match step.action {
            Action::Kill | Action::Stop | Action::Term => {
                self.quiet()?;
                let n = self.node(step)?;
                self.expect(n, Running, "running")?;
                self.state[n] = match (step.action, step.last_s) {
                    (Action::Stop, _) => Stopped,
                    (Action::Kill, _) => Killed,
                    (_, Some(last)) if last > 0 => Termed(step.at_s + last),
                    _ => return Err(("last_s", "a `term` step needs `last_s` > 0".into())),
                };
            }
            Action::Restart => {
                let n = self.node(step)?;
                self.expect(n, Killed, "killed")?;
                self.state[n] = Running;
            }
            Action::Cont => {
                let n = self.node(step)?;
                self.expect(n, Stopped, "stopped")?;
                self.state[n] = Running;
            }
            Action::Partition => {
                self.quiet()?;
                if self.state.iter().any(|s| *s != Running) {
                    return Err(("action", "a partition needs every node running".into()));
                }
                let nodes = step.nodes.as_deref().unwrap_or_default();
                if nodes.is_empty() || nodes.len() >= self.ids.len() {
                    return Err(("nodes", "must name some, but not all, nodes".into()));
                }
                if let Some(bad) = nodes.iter().find(|n| !self.ids.contains(n)) {
                    return Err(("nodes", format!("no node {bad} in this cluster")));
                }
                self.partitioned = Some(nodes.len());
            }
            Action::Heal => {
                if self.partitioned.take().is_none() {
                    return Err(("action", "no partition to heal".into()));
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if self.partitioned.is_some() {
            return Err("the partition is never healed: add a `heal` step".into());
        }
        for (id, s) in self.ids.iter().zip(&self.state) {
            match s {
                NodeState::Killed => return Err(format!("{id} is never restarted")),
                NodeState::Stopped => return Err(format!("{id} is never continued (`cont`)")),
                NodeState::Running | NodeState::Termed(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Scenario::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn shipped_scenarios_parse() {
        for text in [
            include_str!("../../../../examples/chaos/random.toml"),
            include_str!("../../../../examples/chaos/kill-restart.toml"),
            include_str!("../../../../examples/chaos/hang.toml"),
            include_str!("../../../../examples/chaos/partition.toml"),
            include_str!("../../../../examples/chaos/ci.toml"),
        ] {
            Scenario::parse(text).expect("shipped scenario");
        }
    }

    #[test]
    fn defaults_fill_the_rest() {
        let s = Scenario::parse("duration_s = 10").unwrap();
        assert_eq!((s.nodes, s.topics, s.convergence_s), (3, 4, 30));
        assert_eq!(s.workload, Workload::default());
        assert_eq!(s.node_ids(), ["n1", "n2", "n3"]);
        assert_eq!(s.topic_names()[3], "t3");
    }

    #[test]
    fn an_unknown_or_bad_key_is_named() {
        assert!(err("duration_s = 10\nnodez = 3").contains("nodez"));
        assert!(err("duration_s = 10\n[workload]\nrate = 3").contains("rate"));
        assert!(err("nodes = 3").contains("duration_s"));
        assert!(err("duration_s = 10\ntopics = 0").contains("`topics`"));
        let r = "duration_s = 30\n[faults]\nrandom = { kinds = [\"kill\"], every_s = [5, 2], last_s = [1, 2] }";
        assert!(err(r).contains("faults.random.every_s"));
        let r = "duration_s = 30\n[faults]\nrandom = { kinds = [\"explode\"], every_s = [1, 2], last_s = [1, 2] }";
        assert!(err(r).contains("explode"));
        let r = "duration_s = 30\n[faults]\nrandom = { kinds = [\"kill\"], every_s = [1, 2], last_s = [1, 2], max_concurrent = 3 }";
        assert!(err(r).contains("max_concurrent"));
    }

    #[test]
    fn scripts_are_checked_step_by_step() {
        let head = "duration_s = 20\n";
        let step = |s: &str| format!("{head}[[faults.step]]\n{s}\n");
        assert!(err(&step("at_s = 1\naction = \"kill\"\nnode = \"n9\"")).contains("step[0].node"));
        assert!(
            err(&step("at_s = 1\naction = \"kill\"\nnode = \"n2\"")).contains("never restarted")
        );
        assert!(err(&step("at_s = 1\naction = \"cont\"\nnode = \"n2\"")).contains("not stopped"));
        assert!(err(&step("at_s = 25\naction = \"heal\"")).contains("step[0].at_s"));
        assert!(err(&step("at_s = 5\naction = \"term\"\nnode = \"n1\"")).contains("last_s"));
        assert!(err(&step(
            "at_s = 15\naction = \"term\"\nnode = \"n1\"\nlast_s = 5"
        ))
        .contains("before the workload ends"));
        assert!(err(&step("at_s = 1\naction = \"boom\"")).contains("boom"));
        let overlap = format!(
            "{head}[[faults.step]]\nat_s = 1\naction = \"partition\"\nnodes = [\"n1\"]\n\
             [[faults.step]]\nat_s = 2\naction = \"kill\"\nnode = \"n2\"\n"
        );
        assert!(err(&overlap).contains("step[1].action"));
        let ok = format!(
            "{head}[[faults.step]]\nat_s = 1\naction = \"stop\"\nnode = \"n2\"\n\
             [[faults.step]]\nat_s = 3\naction = \"cont\"\nnode = \"n2\"\n\
             [[faults.step]]\nat_s = 4\naction = \"term\"\nnode = \"n3\"\nlast_s = 2\n"
        );
        Scenario::parse(&ok).expect("valid script");
    }

    /// A script of `steps` (`at_s`, action, node or nodes) on `nodes` nodes.
    fn script(nodes: usize, majority: bool, steps: &[(u64, &str, &str)]) -> String {
        let mut text = format!("nodes = {nodes}\nduration_s = 60\n[faults]\n");
        if majority {
            text.push_str("majority_faults = true\n");
        }
        for (at, action, node) in steps {
            text.push_str(&format!(
                "[[faults.step]]\nat_s = {at}\naction = \"{action}\"\n"
            ));
            match *action {
                "partition" => text.push_str(&format!("nodes = [{node}]\n")),
                "term" => text.push_str(&format!("node = \"{node}\"\nlast_s = 5\n")),
                "heal" => {}
                _ => text.push_str(&format!("node = \"{node}\"\n")),
            }
        }
        text
    }

    #[test]
    fn a_script_taking_a_majority_down_is_refused_naming_the_step() {
        let refused = |nodes, steps: &[(u64, &str, &str)], at: usize, down: &str| {
            let e = err(&script(nodes, false, steps));
            assert!(e.contains(&format!("faults.step[{at}].action")), "{e}");
            assert!(e.contains(down) && e.contains("majority_faults"), "{e}");
            Scenario::parse(&script(nodes, true, steps)).expect("allowed with majority faults");
        };
        let two_killed = [(1, "kill", "n1"), (2, "kill", "n2"), (3, "restart", "n1")];
        refused(
            3,
            &[two_killed.as_slice(), &[(4, "restart", "n2")]].concat(),
            1,
            "2 of 3",
        );
        // A term holds its node down for `last_s`; a stop until `cont`.
        let t = [(1, "term", "n1"), (3, "stop", "n2"), (4, "cont", "n2")];
        refused(3, &t, 1, "2 of 3");
        let t = [(1, "kill", "n1"), (2, "stop", "n2"), (3, "term", "n3")];
        refused(
            5,
            &[&t[..], &[(9, "restart", "n1"), (9, "cont", "n2")]].concat(),
            2,
            "3 of 5",
        );
        // An even split leaves no majority: every node is down.
        refused(
            4,
            &[(1, "partition", "\"n1\", \"n2\""), (2, "heal", "")],
            0,
            "4 of 4",
        );
        // Within the bound: one of three at a time, two of five, a 3/2 split of five.
        for (nodes, steps) in [
            (
                3,
                vec![(1, "term", "n1"), (6, "stop", "n2"), (7, "cont", "n2")],
            ),
            (
                5,
                vec![
                    (1, "kill", "n1"),
                    (2, "stop", "n2"),
                    (3, "cont", "n2"),
                    (3, "restart", "n1"),
                ],
            ),
            (
                5,
                vec![(1, "kill", "n1"), (2, "term", "n3"), (4, "restart", "n1")],
            ),
            (5, vec![(1, "partition", "\"n4\", \"n5\""), (2, "heal", "")]),
            (3, vec![(1, "partition", "\"n1\", \"n2\""), (2, "heal", "")]),
        ] {
            let text = script(nodes, false, &steps);
            Scenario::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn random_faults_that_could_take_a_majority_down_are_refused() {
        let random = |nodes, majority, max| {
            format!(
                "nodes = {nodes}\nduration_s = 60\n[faults]\nmajority_faults = {majority}\n\
                 random = {{ kinds = [\"kill\"], every_s = [1, 2], last_s = [1, 2], \
                 max_concurrent = {max} }}\n"
            )
        };
        assert!(err(&random(3, false, 2)).contains("faults.random.max_concurrent"));
        assert!(err(&random(2, false, 1)).contains("majority_faults"));
        Scenario::parse(&random(5, false, 2)).expect("two of five");
        Scenario::parse(&random(3, true, 2)).expect("allowed");
        Scenario::parse(&random(2, true, 1)).expect("allowed");
    }

    #[test]
    fn partitions_take_down_every_side_without_a_majority() {
        assert_eq!(
            (1..=7).map(max_down).collect::<Vec<_>>(),
            [0, 0, 1, 1, 2, 2, 3]
        );
        assert_eq!(partition_down(3, 1), 1);
        assert_eq!(partition_down(3, 2), 1);
        assert_eq!(partition_down(5, 2), 2);
        assert_eq!(partition_down(4, 2), 4);
        assert_eq!(partition_down(2, 1), 2);
    }
}
