//! Where a subscription starts: the pure decision behind `recovered` and SSE `reset`.
//!
//! `after = N` asks for every retained offset > N; `after = 0` for the oldest retained;
//! none for live only. A position that cannot be honoured exactly (trimmed history, another
//! epoch, an offset the topic never reached) continues from `first` and says so.

use super::error::ApiError;
use super::frames::Position;

/// What a topic is now: its epoch and the range of retained offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub epoch: String,
    /// Oldest retained offset; `head + 1` when nothing is retained.
    pub first: u64,
    /// Last offset assigned; 0 before the first message.
    pub head: u64,
}

/// Why a subscriber's position could not be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Messages after the position were removed by retention.
    Trimmed,
    /// The position belongs to another epoch (the topic's history was lost).
    EpochChanged,
    /// The position is past the topic's head (in an epoch the client did not name).
    BeyondHead,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Trimmed => "trimmed",
            ResetReason::EpochChanged => "epoch_changed",
            ResetReason::BeyondHead => "beyond_head",
        }
    }
}

/// The outcome: deliver from `start`; `reset` is `Some` when `recovered` is false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePlan {
    pub start: u64,
    pub reset: Option<ResetReason>,
}

impl ResumePlan {
    pub fn recovered(&self) -> bool {
        self.reset.is_none()
    }
}

/// Decides where to start. An `after` beyond the head in the client's own (current) epoch
/// is a client error.
pub fn plan(pos: &Position, meta: &TopicMeta) -> Result<ResumePlan, ApiError> {
    let reset = |reason| {
        Ok(ResumePlan {
            start: meta.first,
            reset: Some(reason),
        })
    };
    let Some(after) = pos.after else {
        return Ok(ResumePlan {
            start: meta.head + 1,
            reset: None,
        });
    };
    let same_epoch = match &pos.epoch {
        Some(e) if *e != meta.epoch => return reset(ResetReason::EpochChanged),
        Some(_) => true,
        None => false,
    };
    if after > meta.head {
        if same_epoch {
            return Err(ApiError::bad_request(format!(
                "`after` {after} is beyond the topic's head {}",
                meta.head
            )));
        }
        return reset(ResetReason::BeyondHead);
    }
    if after == 0 {
        return Ok(ResumePlan {
            start: meta.first,
            reset: None,
        });
    }
    if after + 1 < meta.first {
        return reset(ResetReason::Trimmed);
    }
    Ok(ResumePlan {
        start: after + 1,
        reset: None,
    })
}

/// A new epoch: 16 random alphanumerics.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first: u64, head: u64) -> TopicMeta {
        TopicMeta {
            epoch: "e1".into(),
            first,
            head,
        }
    }

    fn pos(after: Option<u64>, epoch: Option<&str>) -> Position {
        Position {
            after,
            epoch: epoch.map(str::to_string),
        }
    }

    #[test]
    fn live_only_starts_after_head() {
        let p = plan(&pos(None, None), &meta(1, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 11,
                reset: None
            }
        );
    }

    #[test]
    fn exact_resume_continues_after_the_position() {
        let p = plan(&pos(Some(4), Some("e1")), &meta(1, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 5,
                reset: None
            }
        );
        let p = plan(&pos(Some(10), None), &meta(1, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 11,
                reset: None
            }
        );
        // resuming right at the retention edge loses nothing
        let p = plan(&pos(Some(4), None), &meta(5, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 5,
                reset: None
            }
        );
    }

    #[test]
    fn after_zero_means_oldest_retained() {
        let p = plan(&pos(Some(0), None), &meta(5, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 5,
                reset: None
            }
        );
    }

    #[test]
    fn trimmed_history_is_announced() {
        let p = plan(&pos(Some(2), Some("e1")), &meta(5, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 5,
                reset: Some(ResetReason::Trimmed)
            }
        );
    }

    #[test]
    fn another_epoch_is_announced() {
        let p = plan(&pos(Some(7), Some("old")), &meta(1, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 1,
                reset: Some(ResetReason::EpochChanged)
            }
        );
    }

    #[test]
    fn beyond_head_is_an_error_in_the_same_epoch_and_a_reset_otherwise() {
        assert!(plan(&pos(Some(11), Some("e1")), &meta(1, 10)).is_err());
        let p = plan(&pos(Some(11), None), &meta(1, 10)).unwrap();
        assert_eq!(
            p,
            ResumePlan {
                start: 1,
                reset: Some(ResetReason::BeyondHead)
            }
        );
    }
}
