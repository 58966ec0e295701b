//! The storage writes a shard leader proposes, and their apply onto a replica's
//! [`TopicLog`].
//!
//! Every op carries what the leader decided (offsets, ids, times), so apply is
//! deterministic, and is idempotent, because entries are applied again after a crash that
//! came between an entry's writes and the record of its application: `Create` keeps an
//! existing topic, `Append` skips the messages at or below the topic's head, the rest
//! overwrite, and `Retention` counts its `max_messages` without the messages its entry
//! appends after it.

use crate::protocol::publish_id::unscoped;
use crate::storage::{RetentionPolicy, StorageError, StoredMessage, TopicLog};
use std::collections::HashMap;

/// One storage write, as the shard leader decided it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Op {
    /// `TopicLog::create(topic, epoch, 0)` unless the topic exists.
    Create {
        topic: String,
        epoch: String,
    },
    /// Messages continuing the topic's head; those at or below it are skipped.
    Append {
        topic: String,
        #[serde(with = "messages")]
        msgs: Vec<StoredMessage>,
    },
    /// `TopicLog::remember_id` for each (id, offset), at the leader's time.
    RememberIds {
        topic: String,
        ids: Vec<(String, u64)>,
        time_ms: u64,
    },
    SaveConsumer {
        topic: String,
        name: String,
        state: Vec<u8>,
    },
    DeleteConsumer {
        topic: String,
        name: String,
    },
    /// `TopicLog::apply_retention` at the leader's time.
    Retention {
        topic: String,
        max_messages: u64,
        max_age_ms: u64,
        now_ms: u64,
    },
    /// `TopicLog::expire_ids` at the leader's time.
    ExpireIds {
        now_ms: u64,
    },
}

impl Op {
    /// The topic this op writes, if it is about one.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Op::Create { topic, .. }
            | Op::Append { topic, .. }
            | Op::RememberIds { topic, .. }
            | Op::SaveConsumer { topic, .. }
            | Op::DeleteConsumer { topic, .. }
            | Op::Retention { topic, .. } => Some(topic),
            Op::ExpireIds { .. } => None,
        }
    }

    /// Applies this op to `log` on its own (see [`apply_entry`] for an entry's ops).
    #[cfg(test)]
    pub fn apply(&self, log: &dyn TopicLog) -> Result<(), StorageError> {
        self.apply_before(log, &[])
    }

    /// Applies this op, followed in its entry by `later`.
    fn apply_before(&self, log: &dyn TopicLog, later: &[Op]) -> Result<(), StorageError> {
        match self {
            Op::Create { topic, epoch } => {
                if log.meta(topic)?.is_none() {
                    log.create(topic, epoch, 0)?;
                }
                Ok(())
            }
            Op::Append { topic, msgs } => append_fresh(log, topic, msgs).map(|_| ()),
            Op::RememberIds {
                topic,
                ids,
                time_ms,
            } => ids
                .iter()
                .try_for_each(|(id, offset)| log.remember_id(topic, id, *offset, *time_ms)),
            Op::SaveConsumer { topic, name, state } => log.save_consumer(topic, name, state),
            Op::DeleteConsumer { topic, name } => log.delete_consumer(topic, name),
            Op::Retention {
                topic,
                max_messages,
                max_age_ms,
                now_ms,
            } => {
                // Replayed after a crash, the entry's later appends are already stored:
                // the count the leader meant excludes them.
                let head = log.meta(topic)?.map_or(0, |m| m.head);
                let replayed = appended(later, topic).filter(|m| m.offset <= head).count();
                let policy = RetentionPolicy {
                    max_messages: max_messages.saturating_add(replayed as u64),
                    max_age_ms: *max_age_ms,
                };
                log.apply_retention(topic, &policy, *now_ms).map(|_| ())
            }
            Op::ExpireIds { now_ms } => log.expire_ids(*now_ms),
        }
    }
}

/// The messages `ops` append to `topic`.
fn appended<'a>(ops: &'a [Op], topic: &'a str) -> impl Iterator<Item = &'a StoredMessage> + 'a {
    ops.iter().flat_map(move |op| match op {
        Op::Append { topic: t, msgs } if t == topic => msgs.as_slice(),
        _ => &[],
    })
}

/// What [`apply_entry`] did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The ops that could not apply, by position.
    pub skipped: Vec<(usize, StorageError)>,
    /// Some `Append` did not write all its messages (see [`super::types::Applied`]).
    pub overtaken: bool,
}

/// Applies an entry's ops in order; an op that cannot apply to this state (a gap, a missing
/// topic) is skipped. Returns what it did, or the first storage failure: a replica that
/// cannot write must stop rather than diverge. Applying the entry again (after a crash)
/// leaves the same state.
///
/// A publish id is remembered only for an offset that holds that id's message, so an
/// `Append` skipped because its offsets were taken (a stale owner's entry) can never make a
/// retry of its publish look like a duplicate of another message.
pub(crate) fn apply_entry(ops: &[Op], log: &dyn TopicLog) -> Result<Outcome, StorageError> {
    let mut outcome = Outcome::default();
    // What this entry's appends wrote: (topic, offset) -> id.
    let mut written: HashMap<(&str, u64), &str> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let later = ops.get(i + 1..).unwrap_or_default();
        let result = match op {
            Op::Append { topic, msgs } => append_fresh(log, topic, msgs).map(|fresh| {
                outcome.overtaken |= fresh.len() < msgs.len();
                for m in fresh {
                    written.insert((topic.as_str(), m.offset), m.id.as_str());
                }
            }),
            Op::RememberIds {
                topic,
                ids,
                time_ms,
            } => remember_stored(log, topic, ids, *time_ms, &written),
            _ => op.apply_before(log, later),
        };
        match result {
            Ok(()) => {}
            Err(e @ (StorageError::Sled(_) | StorageError::Corrupt { .. })) => return Err(e),
            Err(e) => {
                outcome.overtaken |= matches!(op, Op::Append { .. });
                outcome.skipped.push((i, e));
            }
        }
    }
    Ok(outcome)
}

/// Appends the messages of `msgs` above the topic's head (those at or below it are stored
/// already: an entry applied again after a crash, or offsets a stale owner lost); returns
/// the ones it wrote.
fn append_fresh<'a>(
    log: &dyn TopicLog,
    topic: &str,
    msgs: &'a [StoredMessage],
) -> Result<&'a [StoredMessage], StorageError> {
    let meta = log
        .meta(topic)?
        .ok_or_else(|| StorageError::NoSuchTopic(topic.to_string()))?;
    let fresh = msgs.get(msgs.partition_point(|m| m.offset <= meta.head)..);
    match fresh {
        Some(rest) if !rest.is_empty() => log.append(topic, rest).map(|()| rest),
        _ => Ok(&[]),
    }
}

/// Remembers each of `ids` whose offset holds the message with that id: known at once for
/// what this entry wrote (`written`), read back from storage only for the rest (an entry
/// applied again after a crash).
fn remember_stored(
    log: &dyn TopicLog,
    topic: &str,
    ids: &[(String, u64)],
    time_ms: u64,
    written: &HashMap<(&str, u64), &str>,
) -> Result<(), StorageError> {
    let (ours, rest): (Vec<_>, Vec<_>) = ids
        .iter()
        .partition(|(id, offset)| written.get(&(topic, *offset)) == Some(&unscoped(id)));
    let stored: HashMap<u64, String> = match (
        rest.iter().map(|(_, o)| *o).min(),
        rest.iter().map(|(_, o)| *o).max(),
    ) {
        (Some(from), Some(to)) => log
            .read(topic, from, to, usize::MAX, usize::MAX)?
            .into_iter()
            .map(|m| (m.offset, m.id))
            .collect(),
        _ => HashMap::new(),
    };
    for (id, offset) in ours {
        log.remember_id(topic, id, *offset, time_ms)?;
    }
    for (id, offset) in rest {
        if stored.get(offset).map(String::as_str) == Some(unscoped(id)) {
            log.remember_id(topic, id, *offset, time_ms)?;
        } else {
            tracing::warn!(
                topic,
                id,
                offset,
                "publish id not remembered: its offset holds another message"
            );
        }
    }
    Ok(())
}

/// [`StoredMessage`] as serde sees it (the storage type stays free of serde).
#[derive(serde::Serialize, serde::Deserialize)]
struct WireMessage {
    offset: u64,
    id: String,
    time_ms: u64,
    data: Vec<u8>,
}

pub(super) mod messages {
    use super::WireMessage;
    use crate::storage::StoredMessage;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(msgs: &[StoredMessage], s: S) -> Result<S::Ok, S::Error> {
        let wire: Vec<WireMessage> = msgs
            .iter()
            .map(|m| WireMessage {
                offset: m.offset,
                id: m.id.clone(),
                time_ms: m.time_ms,
                data: m.data.to_vec(),
            })
            .collect();
        wire.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StoredMessage>, D::Error> {
        let wire = Vec::<WireMessage>::deserialize(d)?;
        Ok(wire
            .into_iter()
            .map(|m| StoredMessage {
                offset: m.offset,
                id: m.id,
                time_ms: m.time_ms,
                data: m.data.into(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SledLog, SledOptions};

    fn msg(offset: u64, id: &str) -> StoredMessage {
        StoredMessage {
            offset,
            id: id.into(),
            time_ms: offset,
            data: bytes::Bytes::from_static(b"1"),
        }
    }

    fn publish(topic: &str, msgs: Vec<StoredMessage>) -> Vec<Op> {
        let ids = msgs.iter().map(|m| (m.id.clone(), m.offset)).collect();
        vec![
            Op::Append {
                topic: topic.into(),
                msgs,
            },
            Op::RememberIds {
                topic: topic.into(),
                ids,
                time_ms: 10,
            },
        ]
    }

    /// What tells a leader's topic actor that its view of the topic was wrong: an entry of
    /// an earlier leadership took the offsets it gave out.
    #[test]
    fn an_append_whose_offsets_were_taken_is_reported_overtaken() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let opts = SledOptions {
            dedupe_window_ms: 60_000,
            cache_bytes: 1024 * 1024,
        };
        let log = SledLog::open(dir.path(), opts).expect("open");
        let create = Op::Create {
            topic: "t".into(),
            epoch: "e".into(),
        };
        let first = apply_entry(&[create], &log).expect("create");
        assert!(!first.overtaken && first.skipped.is_empty());
        let late = publish("t", vec![msg(1, "late-1"), msg(2, "late-2")]);
        assert!(!apply_entry(&late, &log).expect("apply").overtaken);
        // The new leader gave out offsets 2 and 3: offset 2 is taken.
        let mine = publish("t", vec![msg(2, "mine-2"), msg(3, "mine-3")]);
        assert!(apply_entry(&mine, &log).expect("apply").overtaken);
        assert_eq!(log.lookup_id("t", "mine-2", 20).expect("lookup"), None);
        // One that continues the head is not.
        let next = publish("t", vec![msg(4, "next-4")]);
        assert!(!apply_entry(&next, &log).expect("apply").overtaken);
    }
}
