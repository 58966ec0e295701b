//! Topic names: 1–200 bytes of `A-Z a-z 0-9 _ - . : @`; `$`-prefixed names are the system's.

use super::error::{ApiError, ErrorCode};
use std::fmt;
use std::sync::Arc;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 200;
/// Prefix of the dead-letter topic of a topic.
pub const DLQ_PREFIX: &str = "$dlq.";

/// A validated topic name. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@')
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TOPIC_BYTES && name.bytes().all(is_topic_byte)
}

impl TopicName {
    /// Parses a name a client may read from: a user topic or a system topic
    /// (`$dlq.<user topic>`).
    pub fn parse(name: &str) -> Result<TopicName, ApiError> {
        if valid_user_name(name) {
            return Ok(TopicName(Arc::from(name)));
        }
        if let Some(rest) = name.strip_prefix(DLQ_PREFIX) {
            if valid_user_name(rest) && name.len() <= MAX_TOPIC_BYTES + DLQ_PREFIX.len() {
                return Ok(TopicName(Arc::from(name)));
            }
        }
        Err(ApiError::new(
            ErrorCode::InvalidTopic,
            "topic names are 1-200 bytes of A-Z a-z 0-9 _ - . : @",
        ))
    }

    /// Parses a name a client may publish to: system topics are refused with `forbidden`.
    pub fn parse_publishable(name: &str) -> Result<TopicName, ApiError> {
        TopicName::parse(name)?.publishable()
    }

    /// This topic, if a client may publish to it; system topics are `forbidden`.
    pub fn publishable(self) -> Result<TopicName, ApiError> {
        if self.is_system() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "topics starting with $ are reserved for the system",
            ));
        }
        Ok(self)
    }

    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["chat", "a", "A-Z_0.9:x@y", &"x".repeat(200), "$dlq.chat"] {
            assert!(TopicName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            &"x".repeat(201),
            "a b",
            "a/b",
            "é",
            "$other",
            "$dlq.",
            "$dlq.a b",
            "a,b",
            "a=b",
        ] {
            let err = TopicName::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTopic, "{bad}");
        }
    }

    #[test]
    fn system_topics_are_not_publishable() {
        let err = TopicName::parse_publishable("$dlq.chat").unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(TopicName::parse_publishable("chat").is_ok());
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_rule(s in "\\PC{0,210}") {
            let expected = !s.is_empty() && s.len() <= 200 && s.bytes().all(is_topic_byte);
            if !s.starts_with('$') {
                prop_assert_eq!(TopicName::parse(&s).is_ok(), expected);
            }
        }
    }
}
