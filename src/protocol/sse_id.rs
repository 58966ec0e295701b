//! SSE event ids: `<offset>:<epoch>` for one topic, `a=42:7f3a9c01,b=7:0a1b2c3d` for a
//! multi-topic stream. Topic names cannot contain `,` or `=`, and epochs cannot contain `:`,
//! so both forms parse without ambiguity.

use super::error::ApiError;
use super::frames::valid_epoch;
use super::topic::TopicName;

/// A position in one topic: the last offset seen and its epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPos {
    pub offset: u64,
    pub epoch: String,
}

impl EventPos {
    pub fn render(&self) -> String {
        format!("{}:{}", self.offset, self.epoch)
    }
}

fn bad(id: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Last-Event-ID `{}` is not `<offset>:<epoch>`",
        id.chars().take(64).collect::<String>()
    ))
}

/// Parses `<offset>:<epoch>`.
pub fn parse_single(id: &str) -> Result<EventPos, ApiError> {
    let (offset, epoch) = id.rsplit_once(':').ok_or_else(|| bad(id))?;
    let offset: u64 = offset.parse().map_err(|_| bad(id))?;
    if !valid_epoch(epoch) {
        return Err(bad(id));
    }
    Ok(EventPos {
        offset,
        epoch: epoch.to_string(),
    })
}

/// Parses `topic=<offset>:<epoch>,...`.
pub fn parse_multi(id: &str) -> Result<Vec<(TopicName, EventPos)>, ApiError> {
    id.split(',')
        .map(|part| {
            let (topic, pos) = part.split_once('=').ok_or_else(|| bad(id))?;
            Ok((TopicName::parse(topic)?, parse_single(pos)?))
        })
        .collect()
}

/// Renders `topic=<offset>:<epoch>,...` in the given order.
pub fn render_multi<'a>(positions: impl Iterator<Item = (&'a TopicName, &'a EventPos)>) -> String {
    let mut out = String::new();
    for (topic, pos) in positions {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(topic.as_str());
        out.push('=');
        out.push_str(&pos.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_round_trips() {
        let p = parse_single("42:7f3a9c01").unwrap();
        assert_eq!(p.offset, 42);
        assert_eq!(p.epoch, "7f3a9c01");
        assert_eq!(p.render(), "42:7f3a9c01");
    }

    #[test]
    fn bad_ids_are_rejected() {
        for bad in ["", "42", ":e", "x:e", "-1:e", "42:", "42:e-f", "1:2:3"] {
            assert!(parse_single(bad).is_err(), "{bad}");
        }
        for bad in ["a", "a=1", "a=1:e,", "a b=1:e", "=1:e"] {
            assert!(parse_multi(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn multi_topic_names_may_contain_colons() {
        let v = parse_multi("a:b=42:7f3a9c01,c@d=7:0a1b").unwrap();
        assert_eq!(v[0].0.as_str(), "a:b");
        assert_eq!(v[0].1.offset, 42);
        assert_eq!(v[1].0.as_str(), "c@d");
        assert_eq!(v[1].1.epoch, "0a1b");
    }

    proptest! {
        #[test]
        fn multi_round_trips(
            entries in proptest::collection::vec(("[a-z:@._-]{1,20}", 0u64.., "[A-Za-z0-9]{1,32}"), 1..5)
        ) {
            let parsed: Vec<(TopicName, EventPos)> = entries
                .iter()
                .map(|(t, o, e)| (TopicName::parse(t).unwrap(), EventPos { offset: *o, epoch: e.clone() }))
                .collect();
            let text = render_multi(parsed.iter().map(|(t, p)| (t, p)));
            prop_assert_eq!(parse_multi(&text).unwrap(), parsed);
        }
    }
}
