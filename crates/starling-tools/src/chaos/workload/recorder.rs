//! The history as it is recorded: every event with its time since the run started, in the
//! order it happened, plus the live counters the progress line shows and the positions the
//! settle phase waits on.

use crate::chaos::history::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Counts since the start, for the progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub acked: u64,
    pub delivered: u64,
    pub failures: u64,
}

/// Where one stream subscriber is: its topic and the last (epoch, offset) delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub last: Option<(String, u64)>,
}

pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    positions: Mutex<HashMap<String, Position>>,
    next_pid: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    failures: AtomicU64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            positions: Mutex::new(HashMap::new()),
            next_pid: AtomicU64::new(1),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the run started.
    pub fn t_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A new publish request id, unique in the run.
    pub fn pid(&self) -> u64 {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    /// Records the event `make` builds from the current `t_ms`.
    pub fn record(&self, make: impl FnOnce(u64) -> Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let event = make(self.t_ms());
        let counter = match &event {
            Event::PubOk { .. } => Some(&self.acked),
            Event::Deliver { .. } | Event::ConsumerDeliver { .. } => Some(&self.delivered),
            Event::PubErr { .. } | Event::Disconnect { .. } => Some(&self.failures),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Event::Deliver {
            sub, epoch, offset, ..
        } = &event
        {
            let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = positions.get_mut(sub) {
                p.last = Some((epoch.clone(), *offset));
            }
        }
        events.push(event);
    }

    /// Makes a stream subscriber known, so the settle phase waits for it.
    pub fn register(&self, sub: &str, topic: &str) {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let p = Position {
            topic: topic.to_string(),
            last: None,
        };
        positions.insert(sub.to_string(), p);
    }

    /// Every stream subscriber's position.
    pub fn positions(&self) -> Vec<(String, Position)> {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = positions
            .iter()
            .map(|(s, p)| (s.clone(), p.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn counts(&self) -> Counts {
        Counts {
            acked: self.acked.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// The history so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_move_positions_and_counters() {
        let r = Recorder::new();
        r.register("s1", "t0");
        r.record(|t_ms| Event::Deliver {
            t_ms,
            sub: "s1".into(),
            via: crate::chaos::history::Transport::Ws,
            topic: "t0".into(),
            epoch: "e1".into(),
            offset: 4,
            id: "p-1".into(),
        });
        r.record(|t_ms| Event::Healed { t_ms });
        assert_eq!(r.positions()[0].1.last, Some(("e1".into(), 4)));
        assert_eq!(r.counts().delivered, 1);
        assert_eq!(r.events().len(), 2);
    }
}
