//! The chaos run's history: every publish request and reply, every delivery to every client,
//! every fault, and the final state read after healing. One JSON object per line (JSONL), in
//! the order the runner recorded them; `t_ms` is milliseconds since the run started.
//!
//! The checker ([`super::checker`]) reads nothing else, so a history can be written by hand
//! for its tests.

use serde::{Deserialize, Serialize};

/// How a client talked to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Http,
    Ws,
    Sse,
    Poll,
}

/// What a fault did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9`, later restarted (the restart is a separate `Fault` with `Restart`).
    Kill,
    /// `kill -STOP` (ends with `Cont`).
    Stop,
    /// Network partition between `nodes` and the rest (ends with `Heal`).
    Partition,
    /// SIGTERM then start again (graceful restart).
    Term,
}

/// The end of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultEnd {
    Restart,
    Cont,
    Heal,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The run's parameters (first line).
    Start {
        t_ms: u64,
        seed: u64,
        nodes: Vec<String>,
        topics: Vec<String>,
        /// Name of the consumer group every consumer client joins (one per topic).
        consumer: String,
        /// The scenario allowed faults that take a majority of the nodes down
        /// (`majority_faults`); false in histories from before the key existed.
        #[serde(default)]
        majority_faults: bool,
    },
    /// A publish was sent. `pid` is unique in the run; a retry of the same publish reuses its
    /// `id` (the idempotency key) with a new `pid`.
    PubReq {
        t_ms: u64,
        pid: u64,
        client: String,
        node: String,
        via: Transport,
        topic: String,
        id: String,
    },
    /// The publish `pid` was acknowledged.
    PubOk {
        t_ms: u64,
        pid: u64,
        topic: String,
        id: String,
        epoch: String,
        offset: u64,
        duplicate: bool,
    },
    /// The publish `pid` failed (error code or transport error) or timed out: its outcome is
    /// unknown unless a later retry with the same `id` is acknowledged.
    PubErr {
        t_ms: u64,
        pid: u64,
        topic: String,
        id: String,
        error: String,
    },
    /// A stream subscription (`sub` unique in the run, kept across reconnects of one
    /// logical subscriber) was (re)established: the server's `subscribed` reply, the SSE
    /// stream's first event, or a poll's answer whose `recovered` is false.
    Subscribed {
        t_ms: u64,
        sub: String,
        node: String,
        via: Transport,
        topic: String,
        epoch: String,
        /// `false` announces that the client's position was lost: continuing from `first`.
        recovered: bool,
        first: u64,
    },
    /// The server announced a lost position mid-stream (SSE `reset`, or a WS
    /// `recovered:false`): the subscriber continues in `epoch` from `first`.
    Reset {
        t_ms: u64,
        sub: String,
        topic: String,
        epoch: String,
        first: u64,
    },
    /// A message reached stream subscriber `sub`.
    Deliver {
        t_ms: u64,
        sub: String,
        via: Transport,
        topic: String,
        epoch: String,
        offset: u64,
        id: String,
    },
    /// A subscriber's connection ended (it will reconnect and resume).
    Disconnect {
        t_ms: u64,
        sub: String,
        reason: String,
    },
    /// A message reached a member (`sub`) of the consumer group; it acked it at once.
    ConsumerDeliver {
        t_ms: u64,
        sub: String,
        topic: String,
        epoch: String,
        offset: u64,
        id: String,
        attempt: u32,
    },
    /// A fault began.
    Fault {
        t_ms: u64,
        kind: FaultKind,
        nodes: Vec<String>,
    },
    /// A fault ended.
    FaultEnd {
        t_ms: u64,
        end: FaultEnd,
        nodes: Vec<String>,
    },
    /// Every fault was healed; the settle phase began.
    Healed { t_ms: u64 },
    /// After healing: every node was up and every topic accepted a probe publish through
    /// every node (`ok`), or the bound passed first (`ok: false`).
    Converged { t_ms: u64, ok: bool, detail: String },
    /// After settling: one message of a topic's final log, read from its owner.
    FinalLog {
        topic: String,
        epoch: String,
        offset: u64,
        id: String,
    },
    /// After settling: the topic's final meta (its epoch and the retained range).
    FinalMeta {
        topic: String,
        epoch: String,
        first: u64,
        head: u64,
    },
    /// The workload stopped; publishes after this are probes, not workload.
    End { t_ms: u64 },
}

/// Reads a JSONL history; the error names the line that is not an event.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let evs = vec![
            Event::PubReq {
                t_ms: 1,
                pid: 7,
                client: "p1".into(),
                node: "n2".into(),
                via: Transport::Ws,
                topic: "t0".into(),
                id: "p1-7".into(),
            },
            Event::Fault {
                t_ms: 2,
                kind: FaultKind::Partition,
                nodes: vec!["n1".into()],
            },
        ];
        let text: String = evs
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert!(text.starts_with("{\"ev\":\"pub_req\""));
        assert_eq!(parse(&text).unwrap(), evs);
        assert!(parse("{\"ev\":\"nope\"}").unwrap_err().contains("line 1"));
    }
}
