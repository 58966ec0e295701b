//! Topic patterns and what they grant (pure: no I/O, tested without sockets).
//!
//! A pattern is `.`-separated segments: a literal, `*` (exactly one segment), `>` (one or
//! more trailing segments; only last), or a literal containing `{sub}`, which stands for
//! the token's subject, compared literally (a subject never acts as a wildcard, and one
//! containing `.` never matches a segment). `*` and `>` never match a topic starting with
//! `$`: a system topic (dead letters) needs a pattern whose first segment names it.

use std::fmt;

/// Why a pattern is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum PatternError {
    #[error("a pattern is 1-200 bytes")]
    Length,
    #[error(
        "segment {0} is empty (patterns are `.`-separated, like `chat.*` or `user.{{sub}}.>`)"
    )]
    EmptySegment(usize),
    #[error("`>` may only be the last segment")]
    InnerTail,
    #[error("`*` and `>` must be whole segments")]
    PartialWildcard,
    #[error("a `{{` that is not `{{sub}}`")]
    BadPlaceholder,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    /// Literal text, with `{sub}` where the subject goes.
    Literal(String),
    One,
    Tail,
}

/// One parsed topic pattern.
#[derive(Clone, PartialEq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() || text.len() > 200 {
            return Err(PatternError::Length);
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "" => return Err(PatternError::EmptySegment(i + 1)),
                "*" => Segment::One,
                ">" if i + 1 == parts.len() => Segment::Tail,
                ">" => return Err(PatternError::InnerTail),
                p if p.contains('*') || p.contains('>') => {
                    return Err(PatternError::PartialWildcard)
                }
                p if p.replace("{sub}", "").contains(['{', '}']) => {
                    return Err(PatternError::BadPlaceholder)
                }
                p => Segment::Literal(p.to_string()),
            });
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// Whether `topic` matches, for a client whose subject is `sub`.
    pub(crate) fn matches(&self, topic: &str, sub: Option<&str>) -> bool {
        let system = topic.starts_with('$');
        let mut parts = topic.split('.');
        for (i, seg) in self.segments.iter().enumerate() {
            if system && i == 0 && !matches!(seg, Segment::Literal(_)) {
                return false;
            }
            match seg {
                Segment::Tail => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    let Some(part) = parts.next() else {
                        return false;
                    };
                    if !literal_matches(lit, part, sub) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// `lit` with `{sub}` replaced by `sub`, compared to `part`; with no subject a
/// placeholder never matches.
fn literal_matches(lit: &str, part: &str, sub: Option<&str>) -> bool {
    if !lit.contains("{sub}") {
        return lit == part;
    }
    match sub {
        Some(sub) if !sub.is_empty() && !sub.contains('.') => lit.replace("{sub}", sub) == part,
        _ => false,
    }
}

/// What a client may do: publish and subscribe patterns, and admin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants {
    pub(crate) publish: Vec<Pattern>,
    pub(crate) subscribe: Vec<Pattern>,
    pub(crate) admin: bool,
}

impl Grants {
    /// Parses `publish` and `subscribe` pattern lists.
    pub(crate) fn parse(
        publish: &[String],
        subscribe: &[String],
        admin: bool,
    ) -> Result<Grants, (String, PatternError)> {
        let parse = |list: &[String]| -> Result<Vec<Pattern>, (String, PatternError)> {
            list.iter()
                .map(|p| Pattern::parse(p).map_err(|e| (p.clone(), e)))
                .collect()
        };
        Ok(Grants {
            publish: parse(publish)?,
            subscribe: parse(subscribe)?,
            admin,
        })
    }

    pub(crate) fn may_publish(&self, topic: &str, sub: Option<&str>) -> bool {
        self.publish.iter().any(|p| p.matches(topic, sub))
    }

    pub(crate) fn may_subscribe(&self, topic: &str, sub: Option<&str>) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic, sub))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && !self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, topic: &str, sub: Option<&str>) -> bool {
        Pattern::parse(pattern).unwrap().matches(topic, sub)
    }

    #[test]
    fn the_contracts_patterns() {
        let table = [
            ("chat", "chat", None, true),
            ("chat", "chat.x", None, false),
            ("chat.*", "chat.room1", None, true),
            ("chat.*", "chat", None, false),
            ("chat.*", "chat.a.b", None, false),
            ("chat.>", "chat.a", None, true),
            ("chat.>", "chat.a.b.c", None, true),
            ("chat.>", "chat", None, false),
            ("*.news", "eu.news", None, true),
            (">", "anything.at.all", None, true),
            ("user.{sub}", "user.alice", Some("alice"), true),
            ("user.{sub}", "user.bob", Some("alice"), false),
            ("user.{sub}", "user.alice", None, false),
            ("user.{sub}.>", "user.alice.inbox", Some("alice"), true),
            ("dm-{sub}", "dm-alice", Some("alice"), true),
            // A subject is a literal, never a wildcard or two segments.
            ("user.{sub}", "user.x", Some("*"), false),
            ("user.{sub}", "user.a.b", Some("a.b"), false),
            // `$` topics need an explicit first segment.
            (">", "$dlq.chat", None, false),
            ("*.chat", "$dlq.chat", None, false),
            ("$dlq.>", "$dlq.chat", None, true),
            ("$dlq.chat", "$dlq.chat", None, true),
        ];
        for (pattern, topic, sub, expected) in table {
            assert_eq!(
                m(pattern, topic, sub),
                expected,
                "{pattern} ~ {topic} ({sub:?})"
            );
        }
    }

    #[test]
    fn unusable_patterns_are_refused() {
        for (p, e) in [
            ("", PatternError::Length),
            ("a..b", PatternError::EmptySegment(2)),
            ("a.>.b", PatternError::InnerTail),
            ("a*", PatternError::PartialWildcard),
            ("a.{user}", PatternError::BadPlaceholder),
        ] {
            assert_eq!(Pattern::parse(p), Err(e), "{p}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}"
    }

    proptest! {
        /// A pattern made from a topic by replacing any segments with `*`, or a suffix with
        /// `>`, matches it; a literal pattern matches only itself.
        #[test]
        fn wildcards_match_what_they_stand_for(
            parts in proptest::collection::vec(segment(), 1..6),
            stars in proptest::collection::vec(any::<bool>(), 6),
            tail in 0usize..6,
            other in proptest::collection::vec(segment(), 1..6),
        ) {
            let topic = parts.join(".");
            let mut pat: Vec<String> = parts
                .iter()
                .zip(&stars)
                .map(|(p, s)| if *s { "*".to_string() } else { p.clone() })
                .collect();
            prop_assert!(m(&pat.join("."), &topic, None));
            if tail < pat.len() {
                pat.truncate(tail);
                pat.push(">".into());
                prop_assert!(m(&pat.join("."), &topic, None));
            }
            let other = other.join(".");
            prop_assert_eq!(m(&topic, &other, None), topic == other);
            // A system topic is never matched through a wildcard in front.
            let system = format!("${topic}");
            prop_assert!(!m(">", &system, None));
            if parts.len() > 1 {
                let star = format!("*.{}", parts[1..].join("."));
                prop_assert!(!m(&star, &system, None));
            }
        }
    }
}
