//! Per-subscription consumer settings, checked against the configured bounds.

use super::window::WindowConfig;
use crate::config::ConsumersConfig;
use crate::protocol::ApiError;

/// What a subscription asked for; `None` takes the configured default.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ConsumerOptions {
    pub ack_wait_ms: Option<u64>,
    pub max_deliver: Option<u32>,
    pub max_inflight: Option<usize>,
    pub backoff_ms: Option<Vec<u64>>,
}

/// Most redelivery delays a consumer may list.
const MAX_BACKOFF_STEPS: usize = 16;

impl ConsumerOptions {
    /// The window settings from the configured defaults, or a `bad_request` naming the
    /// value out of bounds.
    pub fn resolve(&self, c: &ConsumersConfig) -> Result<WindowConfig, ApiError> {
        let defaults = WindowConfig {
            ack_wait_ms: c.ack_wait_ms,
            max_deliver: c.max_deliver,
            max_inflight: c.max_inflight,
            backoff_ms: c.backoff_ms.clone(),
        };
        self.apply(&defaults, c)
    }

    /// `base` with the values this subscription set, checked against the bounds.
    pub fn apply(
        &self,
        base: &WindowConfig,
        c: &ConsumersConfig,
    ) -> Result<WindowConfig, ApiError> {
        let ack_wait_ms = self.ack_wait_ms.unwrap_or(base.ack_wait_ms);
        if !(c.min_ack_wait_ms..=c.max_ack_wait_ms).contains(&ack_wait_ms) {
            return Err(ApiError::bad_request(format!(
                "`ack_wait_ms` must be {}..={}",
                c.min_ack_wait_ms, c.max_ack_wait_ms
            )));
        }
        let max_deliver = self.max_deliver.unwrap_or(base.max_deliver);
        if max_deliver == 0 || max_deliver > c.max_deliver_limit {
            return Err(ApiError::bad_request(format!(
                "`max_deliver` must be 1..={}",
                c.max_deliver_limit
            )));
        }
        let max_inflight = self.max_inflight.unwrap_or(base.max_inflight);
        if max_inflight == 0 || max_inflight > c.max_inflight_limit {
            return Err(ApiError::bad_request(format!(
                "`max_inflight` must be 1..={}",
                c.max_inflight_limit
            )));
        }
        let backoff_ms = self
            .backoff_ms
            .clone()
            .unwrap_or_else(|| base.backoff_ms.clone());
        if backoff_ms.is_empty()
            || backoff_ms.len() > MAX_BACKOFF_STEPS
            || backoff_ms.iter().any(|d| *d > c.max_ack_wait_ms)
        {
            return Err(ApiError::bad_request(format!(
                "`backoff_ms` must list 1..={MAX_BACKOFF_STEPS} delays of at most {} ms",
                c.max_ack_wait_ms
            )));
        }
        Ok(WindowConfig {
            ack_wait_ms,
            max_deliver,
            max_inflight,
            backoff_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_within_bounds() {
        let c = ConsumersConfig::default();
        let w = ConsumerOptions::default().resolve(&c).unwrap();
        assert_eq!(w.ack_wait_ms, c.ack_wait_ms);
        assert_eq!(w.max_inflight, c.max_inflight);
        let o = ConsumerOptions {
            ack_wait_ms: Some(500),
            max_deliver: Some(2),
            max_inflight: Some(7),
            backoff_ms: Some(vec![10, 20]),
        };
        let w = o.resolve(&c).unwrap();
        assert_eq!((w.ack_wait_ms, w.max_deliver, w.max_inflight), (500, 2, 7));
        assert_eq!(w.backoff_ms, vec![10, 20]);
        // Settings not given keep what the consumer had.
        let kept = ConsumerOptions::default().apply(&w, &c).unwrap();
        assert_eq!(kept, w);
    }

    #[test]
    fn out_of_bounds_names_the_setting() {
        let c = ConsumersConfig::default();
        for (o, name) in [
            (
                ConsumerOptions {
                    ack_wait_ms: Some(1),
                    ..Default::default()
                },
                "ack_wait_ms",
            ),
            (
                ConsumerOptions {
                    max_deliver: Some(0),
                    ..Default::default()
                },
                "max_deliver",
            ),
            (
                ConsumerOptions {
                    max_inflight: Some(1_000_000),
                    ..Default::default()
                },
                "max_inflight",
            ),
            (
                ConsumerOptions {
                    backoff_ms: Some(vec![]),
                    ..Default::default()
                },
                "backoff_ms",
            ),
            (
                ConsumerOptions {
                    backoff_ms: Some(vec![u64::MAX]),
                    ..Default::default()
                },
                "backoff_ms",
            ),
        ] {
            let e = o.resolve(&c).unwrap_err();
            assert!(e.message.contains(name), "{e}");
        }
    }
}
