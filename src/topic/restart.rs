//! The restart decision for a failed topic actor, as a pure function of the topic's recent
//! failures: the one place that decides whether, and when, a topic restarts.
//!
//! Within any `window`, a topic restarts at most `max_restarts` times; the first restart is
//! immediate (a single crash should cost a subscriber nothing it notices), each further one
//! waits twice as long as the one before, from `backoff_base` up to `backoff_max`. One more
//! failure within the window and the topic stays stopped: every use is refused as
//! unavailable until `cool_down` has passed, and the first use after that starts it again
//! with a clean record.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often, and how fast, a failing topic is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub cool_down: Duration,
}

impl RestartPolicy {
    /// The node's policy. A restart costs a wait for the shard (a read of the leader's
    /// commit index through a majority) and a reload from storage, so a topic that fails on
    /// every start (a corrupt record) must not loop: 5 restarts a minute bounds it at 5
    /// reloads instead of hundreds a second. The
    /// waits (0, 100, 200, 400, 800 ms: 1.5 s in all) give a passing fault, a flush failure
    /// during a disk hiccup or a peer that is restarting, time to clear before giving up,
    /// while a lone crash restarts at once. After giving up, 30 s of quiet before the next
    /// use may try again: long enough that a client retrying in a loop costs one attempt
    /// per half minute, short enough that a repaired fault is picked up without a restart
    /// of the node.
    pub const NODE: RestartPolicy = RestartPolicy {
        max_restarts: 5,
        window: Duration::from_secs(60),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        cool_down: Duration::from_secs(30),
    };

    /// The wait before the restart that follows `earlier` restarts within the window.
    fn backoff(&self, earlier: usize) -> Duration {
        match earlier {
            0 => Duration::ZERO,
            n => {
                let doublings = u32::try_from(n - 1).unwrap_or(u32::MAX).min(16);
                self.backoff_base
                    .saturating_mul(1 << doublings)
                    .min(self.backoff_max)
            }
        }
    }
}

/// What to do about a failed topic actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart it after this wait; `attempt` counts restarts within the window (1-based).
    Restart { after: Duration, attempt: usize },
    /// Leave it stopped, refusing every use, until then.
    GiveUp { until: Instant },
}

/// The recent restarts of one topic.
#[derive(Clone, Debug, Default)]
pub struct Restarts {
    recent: VecDeque<Instant>,
}

impl Restarts {
    /// Records a failure at `now` and decides what follows.
    pub fn failed(&mut self, policy: &RestartPolicy, now: Instant) -> Decision {
        self.forget_before(policy, now);
        let earlier = self.recent.len();
        if earlier >= policy.max_restarts {
            self.recent.clear();
            return Decision::GiveUp {
                until: now + policy.cool_down,
            };
        }
        self.recent.push_back(now);
        Decision::Restart {
            after: policy.backoff(earlier),
            attempt: earlier + 1,
        }
    }

    /// Whether no restart is recent any more (the record can be dropped).
    pub fn is_stale(&mut self, policy: &RestartPolicy, now: Instant) -> bool {
        self.forget_before(policy, now);
        self.recent.is_empty()
    }

    fn forget_before(&mut self, policy: &RestartPolicy, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= policy.window)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn restart(after_ms: u64, attempt: usize) -> Option<(Duration, usize)> {
        Some((MS(after_ms), attempt))
    }

    /// Failures at these ms offsets, and the decision each gets under the node's policy
    /// (`None`: give up, until `cool_down` after that failure).
    #[test]
    fn decisions_follow_the_table() {
        type Case = (&'static str, Vec<(u64, Option<(Duration, usize)>)>);
        let cases: Vec<Case> = vec![
            ("a lone failure restarts at once", vec![(0, restart(0, 1))]),
            (
                "a tight loop backs off exponentially, then gives up",
                vec![
                    (0, restart(0, 1)),
                    (10, restart(100, 2)),
                    (120, restart(200, 3)),
                    (330, restart(400, 4)),
                    (740, restart(800, 5)),
                    (1_550, None),
                ],
            ),
            (
                "failures a window apart each restart at once",
                vec![
                    (0, restart(0, 1)),
                    (60_000, restart(0, 1)),
                    (120_000, restart(0, 1)),
                ],
            ),
            (
                "only the failures within the window count",
                vec![
                    (0, restart(0, 1)),
                    (30_000, restart(100, 2)),
                    (60_000, restart(100, 2)),
                    (60_001, restart(200, 3)),
                ],
            ),
            (
                "after giving up the record starts clean",
                vec![
                    (0, restart(0, 1)),
                    (1, restart(100, 2)),
                    (2, restart(200, 3)),
                    (3, restart(400, 4)),
                    (4, restart(800, 5)),
                    (5, None),
                    (40_000, restart(0, 1)),
                ],
            ),
        ];
        let policy = RestartPolicy::NODE;
        for (name, failures) in cases {
            let (t0, mut restarts) = (Instant::now(), Restarts::default());
            for (at, expected) in failures {
                let now = t0 + MS(at);
                let expected = match expected {
                    Some((after, attempt)) => Decision::Restart { after, attempt },
                    None => Decision::GiveUp {
                        until: now + policy.cool_down,
                    },
                };
                assert_eq!(
                    restarts.failed(&policy, now),
                    expected,
                    "{name}, at {at} ms"
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RestartPolicy {
            max_restarts: 100,
            ..RestartPolicy::NODE
        };
        let waits: Vec<Duration> = [0, 1, 2, 6, 7, 50, 99].map(|n| policy.backoff(n)).into();
        assert_eq!(
            waits,
            [0, 100, 200, 3_200, 5_000, 5_000, 5_000].map(MS).to_vec()
        );
    }

    #[test]
    fn a_record_is_stale_once_the_window_passed() {
        let (policy, t0, mut r) = (RestartPolicy::NODE, Instant::now(), Restarts::default());
        r.failed(&policy, t0);
        assert!(!r.is_stale(&policy, t0 + MS(59_999)));
        assert!(r.is_stale(&policy, t0 + policy.window));
    }
}
