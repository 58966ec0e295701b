//! The consumer window: a pure state machine of one consumer's position, in-flight messages
//! and redelivery schedule. No actors, no clocks (time is an argument), no I/O.
//!
//! Every offset the consumer has reached (`< next`) is in exactly one state:
//! - **done**: acked, or dead-lettered (`<= floor`, or in `done_above`);
//! - **in flight**: delivered to a holder, waiting for an ack until its deadline;
//! - **waiting**: to be (re)delivered once its `not_before` time has come.
//!
//! In flight and waiting together are "pending".

use std::collections::{BTreeMap, BTreeSet};

/// Who holds an in-flight message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    /// A connection (WebSocket or SSE); its messages return at once when it leaves.
    Member(u64),
    /// A poll's lease; it returns only when `ack_wait` expires.
    Lease,
}

/// Delivery settings of one consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_inflight: usize,
    /// Delay before redelivery after the n-th failed attempt (the last entry repeats).
    pub backoff_ms: Vec<u64>,
}

impl WindowConfig {
    fn backoff(&self, attempt: u32) -> u64 {
        let i = (attempt.max(1) - 1) as usize;
        self.backoff_ms
            .get(i)
            .or(self.backoff_ms.last())
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    attempt: u32,
    deadline_ms: u64,
    holder: Holder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    /// Deliveries made so far.
    attempts: u32,
    not_before_ms: u64,
}

/// One delivery to make: `offset`, as attempt number `attempt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub offset: u64,
    pub attempt: u32,
}

/// What [`Window::take`] picked: deliveries to make, and messages that had used up their
/// attempts and were dead-lettered instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub deliveries: Vec<Delivery>,
    pub dead: Vec<DeadLetter>,
}

/// A message that exhausted `max_deliver` attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub offset: u64,
    pub attempts: u32,
}

/// Why an ack or nack was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("offset {0} was never delivered to this consumer")]
    NotDelivered(u64),
    #[error("offset {0} is not in flight")]
    NotInFlight(u64),
}

/// What an ack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    /// Newly acked.
    Done,
    /// It was already acked or dead-lettered: nothing changed.
    Already,
}

/// Counters reported by `GET .../consumers/{name}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Offsets removed by retention before this consumer acked them.
    pub trimmed: u64,
}

/// The persisted form of a window.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub floor: u64,
    pub next: u64,
    pub done_above: Vec<u64>,
    /// Pending offsets and the deliveries each has had.
    pub pending: Vec<(u64, u32)>,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub trimmed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    floor: u64,
    done_above: BTreeSet<u64>,
    in_flight: BTreeMap<u64, InFlight>,
    /// How many of `in_flight` each holder has (holders with none are absent).
    held: BTreeMap<Holder, usize>,
    waiting: BTreeMap<u64, Waiting>,
    next: u64,
    stats: Stats,
}

impl Window {
    /// A consumer that starts after `after` (everything up to it counts as done).
    pub fn starting_after(after: u64) -> Window {
        Window {
            floor: after,
            done_above: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            held: BTreeMap::new(),
            waiting: BTreeMap::new(),
            next: after + 1,
            stats: Stats::default(),
        }
    }

    /// Restores a window; what was in flight is ready for redelivery at once.
    pub fn restore(s: &Snapshot) -> Window {
        let mut w = Window::starting_after(s.floor);
        w.next = s.next.max(s.floor + 1);
        w.done_above = s
            .done_above
            .iter()
            .copied()
            .filter(|o| *o > s.floor && *o < w.next)
            .collect();
        for &(offset, attempts) in &s.pending {
            if offset > s.floor && offset < w.next && !w.done_above.contains(&offset) {
                w.waiting.insert(
                    offset,
                    Waiting {
                        attempts,
                        not_before_ms: 0,
                    },
                );
            }
        }
        // Offsets reached but in no state (a snapshot taken between a delivery and its
        // record) are delivered again rather than lost.
        for o in s.floor + 1..w.next {
            if !w.done_above.contains(&o) && !w.waiting.contains_key(&o) {
                w.waiting.insert(
                    o,
                    Waiting {
                        attempts: 0,
                        not_before_ms: 0,
                    },
                );
            }
        }
        w.stats = Stats {
            redelivered: s.redelivered,
            dead_lettered: s.dead_lettered,
            trimmed: s.trimmed,
        };
        w
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut pending: Vec<(u64, u32)> = self
            .in_flight
            .iter()
            .map(|(o, f)| (*o, f.attempt))
            .collect();
        pending.extend(self.waiting.iter().map(|(o, w)| (*o, w.attempts)));
        pending.sort_unstable();
        Snapshot {
            floor: self.floor,
            next: self.next,
            done_above: self.done_above.iter().copied().collect(),
            pending,
            redelivered: self.stats.redelivered,
            dead_lettered: self.stats.dead_lettered,
            trimmed: self.stats.trimmed,
        }
    }

    /// Every offset up to here is acked or dead-lettered.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The next offset never delivered.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn pending(&self) -> usize {
        self.in_flight.len() + self.waiting.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many messages `holder` has in flight.
    pub fn held(&self, holder: Holder) -> usize {
        self.held.get(&holder).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `offset` is done (acked or dead-lettered).
    pub fn is_done(&self, offset: u64) -> bool {
        offset <= self.floor || self.done_above.contains(&offset)
    }

    /// Whether `offset` is pending (in flight or waiting).
    #[cfg(test)]
    pub fn is_pending(&self, offset: u64) -> bool {
        self.in_flight.contains_key(&offset) || self.waiting.contains_key(&offset)
    }

    /// The holder of an in-flight offset.
    pub fn holder(&self, offset: u64) -> Option<Holder> {
        self.in_flight.get(&offset).map(|f| f.holder)
    }

    fn mark_done(&mut self, offset: u64) {
        if offset <= self.floor {
            return;
        }
        self.done_above.insert(offset);
        while self.done_above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
    }

    /// Picks up to `max` deliveries for `holder` at `now_ms` with messages up to `head`:
    /// redeliveries that are due first (oldest offset first), then new offsets, never
    /// more than `max_inflight` in flight.
    pub fn take(
        &mut self,
        cfg: &WindowConfig,
        holder: Holder,
        now_ms: u64,
        head: u64,
        max: usize,
    ) -> Taken {
        let room = cfg
            .max_inflight
            .saturating_sub(self.in_flight.len())
            .min(max);
        let mut out = Taken::default();
        let due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.not_before_ms <= now_ms)
            .map(|(o, _)| *o)
            .collect();
        for offset in due {
            if out.deliveries.len() >= room {
                break;
            }
            let Some(w) = self.waiting.remove(&offset) else {
                continue;
            };
            if w.attempts >= cfg.max_deliver {
                // Used up (after a restart, or a lowered max_deliver).
                self.stats.dead_lettered += 1;
                self.mark_done(offset);
                out.dead.push(DeadLetter {
                    offset,
                    attempts: w.attempts,
                });
                continue;
            }
            let attempt = w.attempts + 1;
            if attempt > 1 {
                self.stats.redelivered += 1;
            }
            self.fly(cfg, offset, attempt, holder, now_ms);
            out.deliveries.push(Delivery { offset, attempt });
        }
        while out.deliveries.len() < room && self.next <= head {
            let offset = self.next;
            self.next += 1;
            self.fly(cfg, offset, 1, holder, now_ms);
            out.deliveries.push(Delivery { offset, attempt: 1 });
        }
        out
    }

    fn fly(&mut self, cfg: &WindowConfig, offset: u64, attempt: u32, holder: Holder, now_ms: u64) {
        let f = InFlight {
            attempt,
            deadline_ms: now_ms.saturating_add(cfg.ack_wait_ms),
            holder,
        };
        if let Some(old) = self.in_flight.insert(offset, f) {
            self.unhold(old.holder);
        }
        *self.held.entry(holder).or_insert(0) += 1;
    }

    /// Takes `offset` out of flight (every removal goes through here, so `held` stays true).
    fn land(&mut self, offset: u64) -> Option<InFlight> {
        let f = self.in_flight.remove(&offset)?;
        self.unhold(f.holder);
        Some(f)
    }

    fn unhold(&mut self, holder: Holder) {
        if let Some(n) = self.held.get_mut(&holder) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&holder);
            }
        }
    }

    /// Acks one offset. Already-done offsets are accepted and change nothing.
    pub fn ack(&mut self, offset: u64) -> Result<Acked, AckError> {
        if self.is_done(offset) {
            return Ok(Acked::Already);
        }
        if offset >= self.next {
            return Err(AckError::NotDelivered(offset));
        }
        self.land(offset);
        self.waiting.remove(&offset);
        self.mark_done(offset);
        Ok(Acked::Done)
    }

    /// Acks every delivered offset up to `upto`. Refused whole if `upto` was never delivered.
    pub fn ack_upto(&mut self, upto: u64) -> Result<usize, AckError> {
        if upto >= self.next {
            return Err(AckError::NotDelivered(upto));
        }
        let mut n = 0;
        let pending: Vec<u64> = self
            .in_flight
            .range(..=upto)
            .map(|(o, _)| *o)
            .chain(self.waiting.range(..=upto).map(|(o, _)| *o))
            .collect();
        for o in pending {
            self.land(o);
            self.waiting.remove(&o);
            n += 1;
        }
        // Everything up to `upto` is now done (it was acked, dead, or just acked).
        self.done_above.retain(|o| *o > upto);
        self.floor = self.floor.max(upto);
        while self.done_above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        Ok(n)
    }

    /// Asks for redelivery of an in-flight offset after `delay_ms`. An offset on its last
    /// attempt is dead-lettered instead.
    pub fn nack(
        &mut self,
        cfg: &WindowConfig,
        offset: u64,
        delay_ms: u64,
        now_ms: u64,
    ) -> Result<Option<DeadLetter>, AckError> {
        if self.is_done(offset) || offset >= self.next {
            return Err(AckError::NotInFlight(offset));
        }
        let Some(f) = self.land(offset) else {
            return Err(AckError::NotInFlight(offset));
        };
        Ok(self.retry_or_dead(cfg, offset, f.attempt, now_ms.saturating_add(delay_ms)))
    }

    fn retry_or_dead(
        &mut self,
        cfg: &WindowConfig,
        offset: u64,
        attempts: u32,
        not_before_ms: u64,
    ) -> Option<DeadLetter> {
        if attempts >= cfg.max_deliver {
            self.stats.dead_lettered += 1;
            self.mark_done(offset);
            return Some(DeadLetter { offset, attempts });
        }
        self.waiting.insert(
            offset,
            Waiting {
                attempts,
                not_before_ms,
            },
        );
        None
    }

    /// Handles deadlines at `now_ms`: expired messages wait for redelivery with backoff, or
    /// are dead-lettered after `max_deliver` attempts.
    pub fn expire(&mut self, cfg: &WindowConfig, now_ms: u64) -> Vec<DeadLetter> {
        let expired: Vec<(u64, u32)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline_ms <= now_ms)
            .map(|(o, f)| (*o, f.attempt))
            .collect();
        let mut dead = Vec::new();
        for (offset, attempt) in expired {
            self.land(offset);
            let not_before = now_ms.saturating_add(cfg.backoff(attempt));
            dead.extend(self.retry_or_dead(cfg, offset, attempt, not_before));
        }
        dead
    }

    /// Takes back a delivery that could not be handed over: it is due again at once, and
    /// the attempt does not count.
    pub fn unfly(&mut self, offset: u64) {
        if let Some(f) = self.land(offset) {
            if f.attempt > 1 {
                self.stats.redelivered = self.stats.redelivered.saturating_sub(1);
            }
            self.waiting.insert(
                offset,
                Waiting {
                    attempts: f.attempt - 1,
                    not_before_ms: 0,
                },
            );
        }
    }

    /// A holder left: what it held is due for redelivery at once, or dead-lettered if it
    /// was on its last attempt.
    pub fn release(&mut self, cfg: &WindowConfig, holder: Holder) -> Vec<DeadLetter> {
        let held: Vec<(u64, u32)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.holder == holder)
            .map(|(o, f)| (*o, f.attempt))
            .collect();
        let mut dead = Vec::new();
        for (offset, attempts) in held {
            self.land(offset);
            dead.extend(self.retry_or_dead(cfg, offset, attempts, 0));
        }
        dead
    }

    /// Retention removed everything below `first`: offsets not yet done are counted as
    /// trimmed and dropped, and undelivered ones are skipped.
    pub fn trim(&mut self, first: u64) {
        if first <= self.floor + 1 {
            return;
        }
        let upto = first - 1;
        let lost = (self.floor + 1..=upto.min(self.next.saturating_sub(1)))
            .filter(|o| !self.done_above.contains(o))
            .count() as u64
            + upto.saturating_sub(self.next.saturating_sub(1).max(self.floor));
        self.stats.trimmed += lost;
        let gone: Vec<u64> = self.in_flight.range(..=upto).map(|(o, _)| *o).collect();
        for o in gone {
            self.land(o);
        }
        self.waiting.retain(|o, _| *o > upto);
        self.done_above.retain(|o| *o > upto);
        self.floor = upto;
        self.next = self.next.max(first);
        while self.done_above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
