//! Retention decisions as pure functions: which offsets a topic keeps and which of its chunks
//! can go. The sled log looks up message times and chunk starts on demand through closures,
//! so everything here is testable without a database.

use super::RetentionPolicy;

/// What retention decided for a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    /// The new oldest retained offset.
    pub first: u64,
    /// Every chunk starting below this offset lies wholly below `first` and is deleted; the
    /// chunk holding the head never is (the head is derived from it at open).
    pub delete_below: u64,
}

/// Decides the new `first` offset and which chunks to delete.
///
/// The new `first` is the largest of `current_first`, the count cutoff
/// (`head - max_messages + 1`, at least 1) and the first offset younger than
/// `now_ms - max_age_ms`, capped at `head + 1`; it never decreases.
///
/// `first_recent(from, to, cutoff_ms)` must return the first offset in `from..=to` whose
/// time is at least `cutoff_ms`, or `None` if there is none (owner times never go backwards
/// within a topic, so a binary search does). `chunk_start(offset)` must return the first
/// offset of the chunk holding `offset`, or `None` if no chunk holds it. Chunks are
/// contiguous, so every chunk starting below the one holding `min(first, head)` lies wholly
/// below `first`.
pub fn decide<E>(
    head: u64,
    current_first: u64,
    policy: &RetentionPolicy,
    now_ms: u64,
    first_recent: impl FnOnce(u64, u64, u64) -> Result<Option<u64>, E>,
    chunk_start: impl FnOnce(u64) -> Result<Option<u64>, E>,
) -> Result<RetentionDecision, E> {
    let end = head.saturating_add(1);
    let by_count = head.saturating_sub(policy.max_messages).saturating_add(1);
    let lower = current_first.max(by_count).min(end);
    let cutoff_ms = now_ms.saturating_sub(policy.max_age_ms);
    let by_age = if cutoff_ms == 0 || lower > head {
        lower
    } else {
        match first_recent(lower, head, cutoff_ms)? {
            Some(offset) => offset.clamp(lower, end),
            None => end,
        }
    };
    let first = current_first.max(lower.max(by_age).min(end));
    let delete_below = match head {
        0 => 0,
        _ => chunk_start(first.min(head))?.unwrap_or(0).min(first),
    };
    Ok(RetentionDecision {
        first,
        delete_below,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    /// Times are `offset * 10`.
    fn by_time(from: u64, to: u64, cutoff: u64) -> Result<Option<u64>, Infallible> {
        Ok((from..=to).find(|o| o * 10 >= cutoff))
    }

    /// Chunks of `size` offsets from 1: the start of the one holding `offset`.
    fn chunk_of(size: u64) -> impl Fn(u64) -> Result<Option<u64>, Infallible> {
        move |offset| Ok((offset >= 1).then(|| (offset - 1) / size * size + 1))
    }

    fn run(
        head: u64,
        size: u64,
        first: u64,
        max_messages: u64,
        max_age_ms: u64,
        now: u64,
    ) -> RetentionDecision {
        let policy = RetentionPolicy {
            max_messages,
            max_age_ms,
        };
        match decide(head, first, &policy, now, by_time, chunk_of(size)) {
            Ok(d) => d,
            Err(never) => match never {},
        }
    }

    #[test]
    fn count_limit_deletes_whole_chunks_only() {
        // 10 chunks of 10; keep the last 25: first = 76, chunks 1..=61 go (71 holds 76).
        let d = run(100, 10, 1, 25, u64::MAX, 1000);
        assert_eq!(
            d,
            RetentionDecision {
                first: 76,
                delete_below: 71
            }
        );
    }

    #[test]
    fn age_limit_finds_cutoff_inside_a_chunk() {
        // Times are offset * 10; at now = 1000 with max age 450, offsets >= 55 are kept.
        let d = run(100, 10, 1, 1000, 450, 1000);
        assert_eq!((d.first, d.delete_below), (55, 51));
    }

    #[test]
    fn everything_expired_keeps_the_chunk_holding_the_head() {
        let d = run(100, 10, 1, 1000, 10, 100_000);
        assert_eq!((d.first, d.delete_below), (101, 91));
    }

    #[test]
    fn empty_log_keeps_first_and_deletes_nothing() {
        let d = run(0, 10, 1, 10, 10, 100_000);
        assert_eq!(
            d,
            RetentionDecision {
                first: 1,
                delete_below: 0
            }
        );
    }

    #[test]
    fn first_never_moves_back() {
        let d = run(100, 10, 90, 1000, u64::MAX, 0);
        assert_eq!((d.first, d.delete_below), (90, 81));
    }

    #[test]
    fn lookup_errors_propagate() {
        let policy = RetentionPolicy {
            max_messages: 1000,
            max_age_ms: 10,
        };
        let res = decide(100, 1, &policy, 500, |_, _, _| Err("boom"), |_| Ok(None));
        assert_eq!(res, Err("boom"));
        let policy = RetentionPolicy {
            max_messages: 10,
            max_age_ms: u64::MAX,
        };
        let res = decide(100, 1, &policy, 500, by_time_str, |_| Err("bang"));
        assert_eq!(res, Err("bang"));
    }

    fn by_time_str(from: u64, to: u64, cutoff: u64) -> Result<Option<u64>, &'static str> {
        Ok((from..=to).find(|o| o * 10 >= cutoff))
    }

    proptest! {
        #[test]
        fn decisions_are_safe(
            head in 0u64..500,
            size in 1u64..50,
            first_back in 0u64..600,
            max_messages in 0u64..600,
            max_age_ms in 0u64..6000,
            now in 0u64..10_000,
        ) {
            let current_first = (head + 1).saturating_sub(first_back).max(1);
            let d = run(head, size, current_first, max_messages, max_age_ms, now);
            prop_assert!(d.first >= current_first);
            prop_assert!(d.first <= head + 1);
            prop_assert!(head + 1 - d.first <= max_messages);
            // Deleted chunks lie wholly below first; the chunk holding the head stays.
            prop_assert!(d.delete_below <= d.first);
            if head > 0 {
                let head_chunk = (head - 1) / size * size + 1;
                prop_assert!(d.delete_below <= head_chunk);
                // Nothing is kept that could go: the chunk holding first (or the head's).
                let keep_chunk = (d.first.min(head) - 1) / size * size + 1;
                prop_assert_eq!(d.delete_below, keep_chunk);
            }
            // Every retained message is young enough, every trimmed one beyond current_first
            // was either over the count or too old.
            let cutoff = now.saturating_sub(max_age_ms);
            for o in d.first..=head {
                prop_assert!(o * 10 >= cutoff);
            }
            if d.first > current_first && d.first <= head {
                let o = d.first - 1;
                prop_assert!(o * 10 < cutoff || head - o + 1 > max_messages);
            }
        }
    }
}
