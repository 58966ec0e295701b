//! Retention decisions as pure functions: which offsets a topic keeps and which segments can
//! go. The sled log feeds in what it knows about its segments and looks up message times on
//! demand through a closure, so everything here is testable without a database.

use super::RetentionPolicy;

/// Smallest segment, in messages, whatever the retention.
const MIN_SEGMENT: u64 = 64;
/// Largest segment, in messages, whatever the retention.
const MAX_SEGMENT: u64 = 100_000;

/// One segment of a topic's log as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset of the segment (its name).
    pub start: u64,
    /// Last offset of the segment (`start..=last` are in it).
    pub last: u64,
    /// Owner time of the segment's last message.
    pub last_time_ms: u64,
}

/// What retention decided for a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    /// The new oldest retained offset.
    pub first: u64,
    /// Start offsets of the segments to drop: every one lies wholly below `first`.
    pub drop: Vec<u64>,
}

/// Messages per segment for a count limit of `max_messages`: about a tenth of it, so count
/// retention gives disk space back at 10% granularity, clamped to `64..=100_000`.
pub fn segment_size(max_messages: u64) -> u64 {
    (max_messages / 10).clamp(MIN_SEGMENT, MAX_SEGMENT)
}

/// Decides the new `first` offset and the segments to drop.
///
/// `segments` are sorted by `start`, the last one holds `head`. The new `first` is the
/// largest of `current_first`, the count cutoff (`head - max_messages + 1`, at least 1) and
/// the first offset younger than `now_ms - max_age_ms`, capped at `head + 1`; it never
/// decreases. A segment is dropped only when all its offsets are below the new `first`, and
/// the last segment never is (the head is derived from it).
///
/// `first_recent(from, to, cutoff_ms)` must return the first offset in `from..=to` (all in
/// one segment) whose time is at least `cutoff_ms`, or `None` if there is none. It is called
/// only for the segment where the age cutoff falls (once, when times never go backwards).
pub fn decide<E>(
    segments: &[SegmentInfo],
    head: u64,
    current_first: u64,
    policy: &RetentionPolicy,
    now_ms: u64,
    mut first_recent: impl FnMut(u64, u64, u64) -> Result<Option<u64>, E>,
) -> Result<RetentionDecision, E> {
    let end = head.saturating_add(1);
    let by_count = head.saturating_sub(policy.max_messages).saturating_add(1);
    let lower = current_first.max(by_count).min(end);
    let cutoff_ms = now_ms.saturating_sub(policy.max_age_ms);

    let mut by_age = end;
    for seg in segments {
        let from = seg.start.max(lower);
        let to = seg.last.min(head);
        if to < from {
            continue;
        }
        if seg.last_time_ms < cutoff_ms {
            continue;
        }
        by_age = match first_recent(from, to, cutoff_ms)? {
            Some(offset) => offset.clamp(from, to),
            None => to.saturating_add(1),
        };
        if by_age <= to {
            break;
        }
    }

    let first = current_first.max(lower.max(by_age).min(end));
    let drop = match segments.split_last() {
        Some((_, older)) => older
            .iter()
            .filter(|seg| seg.last < first)
            .map(|seg| seg.start)
            .collect(),
        None => Vec::new(),
    };
    Ok(RetentionDecision { first, drop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    /// Segments of `size` over offsets `1..=head`, message `o` written at time `o * 10`.
    fn segments(head: u64, size: u64) -> Vec<SegmentInfo> {
        let mut out = Vec::new();
        let mut start = 1;
        while start <= head {
            let last = (start + size - 1).min(head);
            out.push(SegmentInfo {
                start,
                last,
                last_time_ms: last * 10,
            });
            start = last + 1;
        }
        out
    }

    /// Times are `offset * 10`.
    fn by_time(from: u64, to: u64, cutoff: u64) -> Result<Option<u64>, Infallible> {
        Ok((from..=to).find(|o| o * 10 >= cutoff))
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
        let segs = segments(head, size);
        match decide(&segs, head, first, &policy, now, by_time) {
            Ok(d) => d,
            Err(never) => match never {},
        }
    }

    #[test]
    fn segment_size_is_a_tenth_clamped() {
        assert_eq!(segment_size(0), 64);
        assert_eq!(segment_size(10_000), 1000);
        assert_eq!(segment_size(u64::MAX), 100_000);
    }

    #[test]
    fn count_limit_drops_whole_segments_only() {
        // 10 segments of 10; keep the last 25: first = 76, segments 1..=61 go.
        let d = run(100, 10, 1, 25, u64::MAX, 1000);
        assert_eq!(d.first, 76);
        assert_eq!(d.drop, vec![1, 11, 21, 31, 41, 51, 61]);
    }

    #[test]
    fn age_limit_finds_cutoff_inside_a_segment() {
        // Times are offset * 10; at now = 1000 with max age 450, offsets >= 55 are kept.
        let d = run(100, 10, 1, 1000, 450, 1000);
        assert_eq!(d.first, 55);
        assert_eq!(d.drop, vec![1, 11, 21, 31, 41]);
    }

    #[test]
    fn everything_expired_keeps_last_segment() {
        let d = run(100, 10, 1, 1000, 10, 100_000);
        assert_eq!(d.first, 101);
        assert_eq!(d.drop, vec![1, 11, 21, 31, 41, 51, 61, 71, 81]);
    }

    #[test]
    fn empty_log_keeps_first() {
        let d = run(0, 10, 1, 10, 10, 100_000);
        assert_eq!(
            d,
            RetentionDecision {
                first: 1,
                drop: vec![]
            }
        );
    }

    #[test]
    fn first_never_moves_back() {
        let d = run(100, 10, 90, 1000, u64::MAX, 0);
        assert_eq!(d.first, 90);
    }

    #[test]
    fn lookup_errors_propagate() {
        let policy = RetentionPolicy {
            max_messages: 1000,
            max_age_ms: 10,
        };
        let segs = segments(100, 10);
        let res = decide(&segs, 100, 1, &policy, 500, |_, _, _| Err("boom"));
        assert_eq!(res, Err("boom"));
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
            let segs = segments(head, size);
            prop_assert!(d.first >= current_first);
            prop_assert!(d.first <= head + 1);
            prop_assert!(head + 1 - d.first <= max_messages);
            if let Some(last) = segs.last() {
                prop_assert!(!d.drop.contains(&last.start));
            }
            for start in &d.drop {
                let seg = segs.iter().find(|s| s.start == *start);
                prop_assert!(seg.is_some_and(|s| s.last < d.first));
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
