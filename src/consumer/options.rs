//! Consumer settings a subscription, poll or `PUT` names, checked against the configured
//! bounds and, for a group that exists, against the group's own.

use super::window::WindowConfig;
use crate::config::ConsumersConfig;
use crate::protocol::consumer::ConsumerOptions;

/// Why settings were refused (a `bad_request` at the edge).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A value outside the configured bounds.
    #[error("`{name}` must be {range}")]
    OutOfBounds { name: &'static str, range: String },
    /// A member named a group setting other than the group's.
    #[error(
        "`{name}` {asked} differs from the consumer group's {has}: a subscription cannot change \
         a group's settings; leave it out, or change the group with PUT {route}"
    )]
    DiffersFromGroup {
        name: &'static str,
        asked: String,
        has: String,
        route: String,
    },
    /// A member asked for a wider window than the group's.
    #[error(
        "`max_inflight` must be 1..={group_max} (the consumer group's): a member may only \
         narrow its own window; change the group's with PUT {route}"
    )]
    WiderThanGroup { group_max: usize, route: String },
}

fn out_of_bounds(name: &'static str, range: String) -> SettingsError {
    SettingsError::OutOfBounds { name, range }
}

/// Most redelivery delays a consumer may list.
const MAX_BACKOFF_STEPS: usize = 16;

impl ConsumerOptions {
    /// The window settings from the configured defaults, or a `bad_request` naming the
    /// value out of bounds.
    pub fn resolve(&self, c: &ConsumersConfig) -> Result<WindowConfig, SettingsError> {
        let defaults = WindowConfig {
            ack_wait_ms: c.ack_wait_ms,
            max_deliver: c.max_deliver,
            max_inflight: c.max_inflight,
            backoff_ms: c.backoff_ms.clone(),
        };
        self.apply(&defaults, c)
    }

    /// Whether no setting is named.
    pub fn is_empty(&self) -> bool {
        *self == ConsumerOptions::default()
    }

    /// For a member (or poll) of the existing group with settings `group`: every group
    /// setting it names must be the group's own, since only `PUT <route>` changes them, and
    /// its `max_inflight` may only narrow its own window. Returns that cap, if named.
    pub fn check_join(
        &self,
        group: &WindowConfig,
        route: &str,
    ) -> Result<Option<usize>, SettingsError> {
        let differs =
            |name: &'static str, asked: String, has: String| SettingsError::DiffersFromGroup {
                name,
                asked,
                has,
                route: route.to_string(),
            };
        if let Some(v) = self.ack_wait_ms.filter(|v| *v != group.ack_wait_ms) {
            let has = group.ack_wait_ms.to_string();
            return Err(differs("ack_wait_ms", v.to_string(), has));
        }
        if let Some(v) = self.max_deliver.filter(|v| *v != group.max_deliver) {
            let has = group.max_deliver.to_string();
            return Err(differs("max_deliver", v.to_string(), has));
        }
        if let Some(v) = self.backoff_ms.as_ref().filter(|v| **v != group.backoff_ms) {
            let has = format!("{:?}", group.backoff_ms);
            return Err(differs("backoff_ms", format!("{v:?}"), has));
        }
        match self.max_inflight {
            Some(n) if n == 0 || n > group.max_inflight => Err(SettingsError::WiderThanGroup {
                group_max: group.max_inflight,
                route: route.to_string(),
            }),
            cap => Ok(cap),
        }
    }

    /// `base` with the values named here, checked against the bounds.
    pub fn apply(
        &self,
        base: &WindowConfig,
        c: &ConsumersConfig,
    ) -> Result<WindowConfig, SettingsError> {
        let ack_wait_ms = self.ack_wait_ms.unwrap_or(base.ack_wait_ms);
        if !(c.min_ack_wait_ms..=c.max_ack_wait_ms).contains(&ack_wait_ms) {
            let range = format!("{}..={}", c.min_ack_wait_ms, c.max_ack_wait_ms);
            return Err(out_of_bounds("ack_wait_ms", range));
        }
        let max_deliver = self.max_deliver.unwrap_or(base.max_deliver);
        if max_deliver == 0 || max_deliver > c.max_deliver_limit {
            return Err(out_of_bounds(
                "max_deliver",
                format!("1..={}", c.max_deliver_limit),
            ));
        }
        let max_inflight = self.max_inflight.unwrap_or(base.max_inflight);
        if max_inflight == 0 || max_inflight > c.max_inflight_limit {
            return Err(out_of_bounds(
                "max_inflight",
                format!("1..={}", c.max_inflight_limit),
            ));
        }
        let backoff_ms = self
            .backoff_ms
            .clone()
            .unwrap_or_else(|| base.backoff_ms.clone());
        if backoff_ms.is_empty()
            || backoff_ms.len() > MAX_BACKOFF_STEPS
            || backoff_ms.iter().any(|d| *d > c.max_ack_wait_ms)
        {
            let range = format!(
                "a list of 1..={MAX_BACKOFF_STEPS} delays of at most {} ms",
                c.max_ack_wait_ms
            );
            return Err(out_of_bounds("backoff_ms", range));
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
    fn joining_a_group_may_repeat_its_settings_and_narrow_its_own_window() {
        let group = ConsumerOptions::default()
            .resolve(&ConsumersConfig::default())
            .unwrap();
        let same = ConsumerOptions {
            ack_wait_ms: Some(group.ack_wait_ms),
            max_deliver: Some(group.max_deliver),
            backoff_ms: Some(group.backoff_ms.clone()),
            max_inflight: None,
        };
        assert_eq!(same.check_join(&group, "PUT-ROUTE"), Ok(None));
        let narrow = ConsumerOptions {
            max_inflight: Some(3),
            ..Default::default()
        };
        assert_eq!(narrow.check_join(&group, "PUT-ROUTE"), Ok(Some(3)));
        let whole = ConsumerOptions {
            max_inflight: Some(group.max_inflight),
            ..Default::default()
        };
        assert_eq!(whole.check_join(&group, "PUT-ROUTE"), Ok(Some(100)));
    }

    #[test]
    fn joining_with_other_settings_names_the_setting_and_the_route() {
        let group = ConsumerOptions::default()
            .resolve(&ConsumersConfig::default())
            .unwrap();
        for (o, name) in [
            (
                ConsumerOptions {
                    ack_wait_ms: Some(100),
                    ..Default::default()
                },
                "ack_wait_ms",
            ),
            (
                ConsumerOptions {
                    max_deliver: Some(1),
                    ..Default::default()
                },
                "max_deliver",
            ),
            (
                ConsumerOptions {
                    backoff_ms: Some(vec![0]),
                    ..Default::default()
                },
                "backoff_ms",
            ),
            (
                ConsumerOptions {
                    max_inflight: Some(101),
                    ..Default::default()
                },
                "max_inflight",
            ),
            (
                ConsumerOptions {
                    max_inflight: Some(0),
                    ..Default::default()
                },
                "max_inflight",
            ),
        ] {
            let e = o.check_join(&group, "PUT-ROUTE").unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
            assert!(e.contains("PUT-ROUTE"), "{e}");
        }
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
            assert!(
                matches!(&e, SettingsError::OutOfBounds { name: n, .. } if *n == name),
                "{e}"
            );
        }
    }
}
