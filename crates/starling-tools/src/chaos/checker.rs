//! The chaos checker: reads a run's [`history`](super::history) and says whether Starling
//! kept its promises. Pure code: [`check`] takes the events in history order and returns a
//! [`Report`]; nothing here touches a socket or a clock.
//!
//! The checks (every count must be 0 for the run to pass):
//!
//! - **silent loss**: per stream subscriber and topic (`sub`, `topic`), walk its events in
//!   history order keeping a position (epoch, last offset). The first `Subscribed` sets it to
//!   (epoch, first − 1) (a subscriber starts from `after=0`); so do a `Subscribed` with
//!   `recovered: false` and every `Reset` (announcements). A later `Subscribed` with
//!   `recovered: true` is a resume and keeps the position; if its epoch differs from the
//!   position's, the epoch changed unannounced (one loss; the position moves to the new epoch).
//!   A `Deliver` in the position's epoch with offset > last + 1 is a hole (one loss; the
//!   missing offsets are counted too); a `Deliver` in another epoch than the position's is an
//!   unannounced epoch change (one loss). A `Deliver` before any `Subscribed`/`Reset` of its
//!   subscriber is checked against (its epoch, 0).
//! - **order**: a `Deliver` whose offset is ≤ the last offset delivered to that subscriber in
//!   the same epoch (a duplicate or a step backwards).
//! - **divergence**: one (topic, epoch, offset) carrying two different ids anywhere among
//!   `PubOk`, `Deliver`, `ConsumerDeliver` and `FinalLog` (counted once per offset).
//! - **acked missing from final log**: every acknowledged (topic, epoch, offset) in the
//!   topic's final epoch (`FinalMeta`) at or above its `first` must be in the `FinalLog` with
//!   the acknowledged id. Acks below `first` are counted as "trimmed by retention"
//!   (informational). A topic with acks but no `FinalMeta` is one violation (its final state
//!   could not be read).
//! - **acked in lost epochs**: an acknowledged (topic, epoch, offset) in an epoch that is not
//!   the topic's final one. An acknowledged publish is on a majority of its shard's voters,
//!   so with at most a minority of the nodes down no epoch may be lost: each such offset is
//!   a violation. When the run allowed majority faults ([`Bounds::majority_faults`]) the
//!   check is skipped and the offsets are only counted ("acked in announced-lost epochs"):
//!   an epoch change is allowed then, and the stream checks make sure it was announced.
//! - **consumer loss**: every acknowledged id in its topic's final epoch must reach the
//!   consumer group (some `ConsumerDeliver` of that topic with that id). Skipped when
//!   `Start.consumer` is empty (without a `Start`: checked for topics that have a
//!   `ConsumerDeliver`). Ids delivered more than once are counted as duplicates
//!   (informational: consumer delivery is at least once).
//! - **convergence**: a `Converged` with `ok: true` at most [`Bounds::convergence_ms`] after
//!   `Healed`; either event missing is a failure.
//!
//! Reported, not judged: **availability** and summary counts. Per topic, workload publishes
//! (requested before `End`) are taken in request order; a failure window opens at the request
//! of a failed publish after the last successful one and closes at the ack of the next
//! successful one (or at `End`). It is blamed on the fault active at its start (the latest
//! `Fault` without a matching `FaultEnd` on the same nodes), else on one that ended within 5 s
//! before, else on `none`; the report gives per fault kind the number of windows and the
//! longest one.

mod avail;
mod log;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::history::{Event, FaultKind, Transport};
pub(crate) use avail::fault_spans;

/// Limits the run is judged against.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Longest allowed time from `Healed` to `Converged`.
    pub convergence_ms: u64,
    /// The scenario allowed faults that take a majority of the nodes down
    /// (`majority_faults`): acks in lost epochs are then counted, not violations.
    pub majority_faults: bool,
}

/// How many examples of one failing check the report keeps (its count is always exact).
const MAX_EXAMPLES: usize = 20;

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    /// Violations found (0 = pass).
    pub count: u64,
    /// The check did not apply to this run (e.g. no consumer group).
    pub skipped: bool,
    /// The first violations, as short sentences.
    pub examples: Vec<String>,
}

impl CheckResult {
    fn new(name: &'static str) -> Self {
        CheckResult {
            name,
            count: 0,
            skipped: false,
            examples: Vec::new(),
        }
    }

    /// Records one violation.
    fn violation(&mut self, example: String) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example);
        }
    }

    pub fn passed(&self) -> bool {
        self.count == 0
    }
}

/// Counts that explain a verdict but are not violations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Info {
    /// Offsets missing from the silent-loss holes.
    pub missing_offsets: u64,
    /// Distinct acknowledged offsets in an epoch that is not the topic's final one.
    pub acked_in_lost_epochs: u64,
    /// Distinct acknowledged offsets below the final `first`.
    pub trimmed_by_retention: u64,
    /// Consumer-group deliveries of an id already delivered.
    pub consumer_duplicates: u64,
}

/// Publish outages attributed to one kind of fault.
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    /// `kill`, `stop`, `partition`, `term` or `none`.
    pub kind: &'static str,
    pub windows: u64,
    pub longest_ms: u64,
    /// Topic and start (ms since the run began) of the longest window.
    pub longest_topic: String,
    pub longest_at_ms: u64,
}

/// What happened in the run, in numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub events: u64,
    pub publishes_sent: u64,
    pub publishes_acked: u64,
    pub publishes_failed: u64,
    pub deliveries: u64,
    /// Stream deliveries per transport (`ws`, `sse`, `poll`, `http`).
    pub deliveries_by_transport: BTreeMap<&'static str, u64>,
    pub consumer_deliveries: u64,
    pub faults_by_kind: BTreeMap<&'static str, u64>,
    /// The largest `t_ms` in the history.
    pub duration_ms: u64,
}

/// The checker's verdict on a run; serialized as the runner's `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run allowed majority faults ([`Bounds::majority_faults`]).
    pub majority_faults: bool,
    pub checks: Vec<CheckResult>,
    pub info: Info,
    pub availability: Vec<Availability>,
    pub summary: Summary,
}

/// Checks a history (events in the order they were recorded).
pub fn check(events: &[Event], bounds: &Bounds) -> Report {
    let mut info = Info::default();
    let (silent, order) = stream::check(events, &mut info);
    let (missing, lost) = log::acked_missing(events, bounds.majority_faults, &mut info);
    let checks = vec![
        silent,
        order,
        log::divergence(events),
        missing,
        lost,
        log::consumer_loss(events, &mut info),
        convergence(events, bounds),
    ];
    Report {
        majority_faults: bounds.majority_faults,
        checks,
        info,
        availability: avail::availability(events),
        summary: summary(events),
    }
}

/// Whether a recorded run allowed majority faults (its `Start`; false without one).
pub fn majority_faults(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::Start {
                majority_faults: true,
                ..
            }
        )
    })
}

impl Report {
    /// False when any check found a violation.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(CheckResult::passed)
    }

    /// A short human table: whether majority faults were allowed, the checks, up to 3
    /// examples of each failing one, availability per fault kind and the summary counts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "majority faults: {}\n",
            match self.majority_faults {
                true => "allowed (acks in announced-lost epochs are only counted)",
                false => "not allowed (an ack in a lost epoch is a violation)",
            }
        );
        let _ = writeln!(out, "{:<30} {:>7}  result", "check", "count");
        for c in &self.checks {
            let verdict = match (c.skipped, c.passed()) {
                (true, _) => "SKIP",
                (false, true) => "PASS",
                (false, false) => "FAIL",
            };
            let _ = writeln!(out, "{:<30} {:>7}  {verdict}", c.name, c.count);
        }
        for c in self.checks.iter().filter(|c| !c.passed()) {
            let _ = writeln!(out, "\n{} (first {}):", c.name, c.examples.len().min(3));
            for e in c.examples.iter().take(3) {
                let _ = writeln!(out, "  - {e}");
            }
        }
        let _ = writeln!(
            out,
            "\navailability (publish outages by fault active at start):"
        );
        let _ = writeln!(
            out,
            "  {:<10} {:>7} {:>11}  longest at",
            "fault", "windows", "longest_ms"
        );
        for a in &self.availability {
            let at = if a.windows == 0 {
                "-".to_string()
            } else {
                format!("{} t={}ms", a.longest_topic, a.longest_at_ms)
            };
            let _ = writeln!(
                out,
                "  {:<10} {:>7} {:>11}  {at}",
                a.kind, a.windows, a.longest_ms
            );
        }
        let s = &self.summary;
        let i = &self.info;
        let _ = writeln!(
            out,
            "\nsummary: {} events over {:.1} s; publishes sent {} acked {} failed {}",
            s.events,
            s.duration_ms as f64 / 1000.0,
            s.publishes_sent,
            s.publishes_acked,
            s.publishes_failed
        );
        let _ = writeln!(
            out,
            "  stream deliveries {} ({}); consumer deliveries {}",
            s.deliveries,
            join_counts(&s.deliveries_by_transport),
            s.consumer_deliveries
        );
        let _ = writeln!(out, "  faults: {}", join_counts(&s.faults_by_kind));
        let _ =
            writeln!(
            out,
            "  missing offsets {}; acked in announced-lost epochs {}; trimmed by retention {}; \
             consumer duplicates {}",
            i.missing_offsets, i.acked_in_lost_epochs, i.trimmed_by_retention, i.consumer_duplicates
        );
        out
    }
}

/// `a 3, b 4`, or `none`.
fn join_counts(m: &BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}

fn convergence(events: &[Event], bounds: &Bounds) -> CheckResult {
    let mut c = CheckResult::new("convergence");
    let healed = events.iter().find_map(|e| match e {
        Event::Healed { t_ms } => Some(*t_ms),
        _ => None,
    });
    let converged = events.iter().find_map(|e| match e {
        Event::Converged { t_ms, ok, detail } => Some((*t_ms, *ok, detail)),
        _ => None,
    });
    match (healed, converged) {
        (None, _) => c.violation("no healed event".into()),
        (Some(_), None) => c.violation("no converged event".into()),
        (Some(_), Some((t, false, detail))) => {
            c.violation(format!("not converged at t={t}ms: {detail}"))
        }
        (Some(h), Some((t, true, _))) => {
            let took = t.saturating_sub(h);
            if took > bounds.convergence_ms {
                c.violation(format!(
                    "converged {took} ms after healing, bound {} ms",
                    bounds.convergence_ms
                ));
            }
        }
    }
    c
}

pub(crate) fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Http => "http",
        Transport::Ws => "ws",
        Transport::Sse => "sse",
        Transport::Poll => "poll",
    }
}

pub(crate) fn kind_name(k: FaultKind) -> &'static str {
    match k {
        FaultKind::Kill => "kill",
        FaultKind::Stop => "stop",
        FaultKind::Partition => "partition",
        FaultKind::Term => "term",
    }
}

/// The event's time, if it has one (the final-state events do not).
pub(crate) fn t_ms(e: &Event) -> Option<u64> {
    match e {
        Event::Start { t_ms, .. }
        | Event::PubReq { t_ms, .. }
        | Event::PubOk { t_ms, .. }
        | Event::PubErr { t_ms, .. }
        | Event::Subscribed { t_ms, .. }
        | Event::Reset { t_ms, .. }
        | Event::Deliver { t_ms, .. }
        | Event::Disconnect { t_ms, .. }
        | Event::ConsumerDeliver { t_ms, .. }
        | Event::Fault { t_ms, .. }
        | Event::FaultEnd { t_ms, .. }
        | Event::Healed { t_ms }
        | Event::Converged { t_ms, .. }
        | Event::End { t_ms } => Some(*t_ms),
        Event::FinalLog { .. } | Event::FinalMeta { .. } => None,
    }
}

fn summary(events: &[Event]) -> Summary {
    let mut s = Summary {
        events: events.len() as u64,
        ..Summary::default()
    };
    for e in events {
        s.duration_ms = s.duration_ms.max(t_ms(e).unwrap_or(0));
        match e {
            Event::PubReq { .. } => s.publishes_sent += 1,
            Event::PubOk { .. } => s.publishes_acked += 1,
            Event::PubErr { .. } => s.publishes_failed += 1,
            Event::Deliver { via, .. } => {
                s.deliveries += 1;
                *s.deliveries_by_transport
                    .entry(transport_name(*via))
                    .or_default() += 1;
            }
            Event::ConsumerDeliver { .. } => s.consumer_deliveries += 1,
            Event::Fault { kind, .. } => {
                *s.faults_by_kind.entry(kind_name(*kind)).or_default() += 1
            }
            _ => {}
        }
    }
    s
}
