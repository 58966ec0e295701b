//! Availability: how long each topic could not take workload publishes, by fault.
//!
//! Only workload publishes count (requests recorded before `End`), each judged by its first
//! reply (`PubOk` or `PubErr`; unanswered ones are ignored). Per topic, in order of request
//! time: a failure window opens at the `PubReq` time of a failed publish sent after the last
//! successful one, and closes at the `PubOk` time of the next publish that succeeds (or at
//! `End`, or at the last recorded time without an `End`). Ordering by request rather than by
//! reply keeps an outage whose timeouts are reported only after the topic recovered.
//!
//! A window is attributed to the fault active at its start: the latest `Fault` not yet ended
//! by a `FaultEnd` with the same nodes; if none is active, the fault that ended most recently
//! within [`RECENT_MS`] before; else `none`.

use std::collections::{BTreeMap, HashMap};

use super::{kind_name, t_ms, Availability};
use crate::chaos::history::{Event, FaultKind};

/// How long after a fault ended an outage is still blamed on it.
const RECENT_MS: u64 = 5_000;

/// One injected fault, from its `Fault` to its matching `FaultEnd` (if any).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FaultSpan {
    pub kind: FaultKind,
    pub nodes: Vec<String>,
    pub start_ms: u64,
    /// `None`: never ended in the history.
    pub end_ms: Option<u64>,
}

impl FaultSpan {
    /// `kill n2`, `partition n1,n3`.
    pub fn label(&self) -> String {
        format!("{} {}", kind_name(self.kind), self.nodes.join(","))
    }
}

fn same_nodes(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// Every fault in order of injection; a `FaultEnd` ends the earliest open fault on the same
/// set of nodes.
pub(crate) fn fault_spans(events: &[Event]) -> Vec<FaultSpan> {
    let mut spans: Vec<FaultSpan> = Vec::new();
    for e in events {
        match e {
            Event::Fault { t_ms, kind, nodes } => spans.push(FaultSpan {
                kind: *kind,
                nodes: nodes.clone(),
                start_ms: *t_ms,
                end_ms: None,
            }),
            Event::FaultEnd { t_ms, nodes, .. } => {
                if let Some(s) = spans
                    .iter_mut()
                    .find(|s| s.end_ms.is_none() && same_nodes(&s.nodes, nodes))
                {
                    s.end_ms = Some(*t_ms);
                }
            }
            _ => {}
        }
    }
    spans
}

/// The kind blamed for an outage starting at `at`.
fn blame(spans: &[FaultSpan], at: u64) -> &'static str {
    let active = spans
        .iter()
        .filter(|s| s.start_ms <= at && s.end_ms.is_none_or(|end| end > at))
        .max_by_key(|s| s.start_ms);
    let recent = || {
        spans
            .iter()
            .filter_map(|s| s.end_ms.map(|end| (end, s)))
            .filter(|(end, _)| *end <= at && at - end <= RECENT_MS)
            .max_by_key(|(end, _)| *end)
            .map(|(_, s)| s)
    };
    active.or_else(recent).map_or("none", |s| kind_name(s.kind))
}

/// One outage: (topic, start, end).
type Window<'a> = (&'a str, u64, u64);

/// One answered publish: (request time, pid, ack time or `None` if it failed).
type Sent = (u64, u64, Option<u64>);

fn windows(events: &[Event]) -> Vec<Window<'_>> {
    let end_at = events.iter().position(|e| matches!(e, Event::End { .. }));
    let workload = &events[..end_at.unwrap_or(events.len())];
    let close_at = match end_at.map(|i| &events[i]) {
        Some(Event::End { t_ms }) => *t_ms,
        _ => workload.iter().filter_map(t_ms).max().unwrap_or(0),
    };
    // The first reply to each publish: Some(ack time) or None (failed).
    let mut outcome: HashMap<u64, Option<u64>> = HashMap::new();
    for e in events {
        match e {
            Event::PubOk { t_ms, pid, .. } => {
                outcome.entry(*pid).or_insert(Some(*t_ms));
            }
            Event::PubErr { pid, .. } => {
                outcome.entry(*pid).or_insert(None);
            }
            _ => {}
        }
    }
    // Per topic, the answered workload publishes in request order.
    let mut sent: BTreeMap<&str, Vec<Sent>> = BTreeMap::new();
    for e in workload {
        if let Event::PubReq {
            t_ms, pid, topic, ..
        } = e
        {
            if let Some(acked) = outcome.get(pid) {
                sent.entry(topic).or_default().push((*t_ms, *pid, *acked));
            }
        }
    }
    let mut out = Vec::new();
    for (topic, mut pubs) in sent {
        pubs.sort_unstable();
        let mut open: Option<u64> = None;
        for (req, _, acked) in pubs {
            match (open, acked) {
                (None, None) => open = Some(req),
                (Some(start), Some(ok)) => {
                    out.push((topic, start, ok.min(close_at)));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            out.push((topic, start, close_at));
        }
    }
    out
}

pub(super) fn availability(events: &[Event]) -> Vec<Availability> {
    let spans = fault_spans(events);
    let kinds = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Partition,
        FaultKind::Term,
    ];
    let mut rows: Vec<Availability> = kinds
        .iter()
        .filter(|k| spans.iter().any(|s| s.kind == **k))
        .map(|k| kind_name(*k))
        .chain(["none"])
        .map(|kind| Availability {
            kind,
            windows: 0,
            longest_ms: 0,
            longest_topic: String::new(),
            longest_at_ms: 0,
        })
        .collect();
    for (topic, start, end) in windows(events) {
        let kind = blame(&spans, start);
        let Some(row) = rows.iter_mut().find(|r| r.kind == kind) else {
            continue;
        };
        row.windows += 1;
        let len = end.saturating_sub(start);
        if row.windows == 1 || len > row.longest_ms {
            row.longest_ms = len;
            row.longest_topic = topic.to_string();
            row.longest_at_ms = start;
        }
    }
    rows
}
