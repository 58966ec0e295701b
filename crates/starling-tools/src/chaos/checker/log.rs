//! Divergence, acknowledged publishes missing from the final log or acked in a lost epoch,
//! and consumer loss (see the [checker](super) docs).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{CheckResult, Info};
use crate::chaos::history::Event;

/// (topic, epoch, offset)
type Key<'a> = (&'a str, &'a str, u64);

/// Who reported an id, for the examples.
fn source(e: &Event) -> Option<(Key<'_>, &str, String)> {
    match e {
        Event::PubOk {
            pid,
            topic,
            id,
            epoch,
            offset,
            ..
        } => Some(((topic, epoch, *offset), id, format!("pub_ok pid {pid}"))),
        Event::Deliver {
            sub,
            topic,
            epoch,
            offset,
            id,
            ..
        } => Some(((topic, epoch, *offset), id, format!("deliver to {sub}"))),
        Event::ConsumerDeliver {
            sub,
            topic,
            epoch,
            offset,
            id,
            ..
        } => Some((
            (topic, epoch, *offset),
            id,
            format!("consumer deliver to {sub}"),
        )),
        Event::FinalLog {
            topic,
            epoch,
            offset,
            id,
        } => Some(((topic, epoch, *offset), id, "final log".to_string())),
        _ => None,
    }
}

pub(super) fn divergence(events: &[Event]) -> CheckResult {
    let mut c = CheckResult::new("divergence");
    let mut seen: HashMap<Key, (&str, String)> = HashMap::new();
    let mut diverged: HashSet<Key> = HashSet::new();
    for (key, id, from) in events.iter().filter_map(source) {
        match seen.get(&key) {
            None => {
                seen.insert(key, (id, from));
            }
            Some((first_id, first_from)) if *first_id != id && diverged.insert(key) => {
                let (topic, epoch, offset) = key;
                c.violation(format!(
                    "topic {topic} epoch {epoch} offset {offset}: id {first_id} ({first_from}) \
                     vs id {id} ({from})"
                ));
            }
            Some(_) => {}
        }
    }
    c
}

/// Each topic's final (epoch, first).
fn final_meta(events: &[Event]) -> HashMap<&str, (&str, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FinalMeta {
                topic,
                epoch,
                first,
                ..
            } => Some((topic.as_str(), (epoch.as_str(), *first))),
            _ => None,
        })
        .collect()
}

/// Distinct acknowledged offsets, each with its id and the first pid that got it.
fn acked(events: &[Event]) -> BTreeMap<Key<'_>, (&str, u64)> {
    let mut acked = BTreeMap::new();
    for e in events {
        if let Event::PubOk {
            pid,
            topic,
            id,
            epoch,
            offset,
            ..
        } = e
        {
            acked
                .entry((topic.as_str(), epoch.as_str(), *offset))
                .or_insert((id.as_str(), *pid));
        }
    }
    acked
}

/// The checks "acked missing from final log" and "acked in lost epochs" (skipped, the
/// offsets only counted, when `majority_faults`).
pub(super) fn acked_missing(
    events: &[Event],
    majority_faults: bool,
    info: &mut Info,
) -> (CheckResult, CheckResult) {
    let mut c = CheckResult::new("acked missing from final log");
    let mut lost = CheckResult::new("acked in lost epochs");
    lost.skipped = majority_faults;
    let meta = final_meta(events);
    let final_log: HashMap<Key, &str> = events
        .iter()
        .filter_map(|e| match e {
            Event::FinalLog {
                topic,
                epoch,
                offset,
                id,
            } => Some(((topic.as_str(), epoch.as_str(), *offset), id.as_str())),
            _ => None,
        })
        .collect();
    let mut unread: BTreeMap<&str, u64> = BTreeMap::new();
    for (key @ (topic, epoch, offset), (id, pid)) in acked(events) {
        let Some(&(final_epoch, first)) = meta.get(topic) else {
            *unread.entry(topic).or_default() += 1;
            continue;
        };
        if epoch != final_epoch {
            info.acked_in_lost_epochs += 1;
            if !majority_faults {
                lost.violation(format!(
                    "topic {topic} epoch {epoch} offset {offset}: acked id {id} (pid {pid}) in \
                     an epoch the topic lost (final epoch {final_epoch}) without majority faults"
                ));
            }
        } else if offset < first {
            info.trimmed_by_retention += 1;
        } else {
            match final_log.get(&key) {
                Some(&got) if got == id => {}
                Some(&got) => c.violation(format!(
                    "topic {topic} epoch {epoch} offset {offset}: acked id {id} (pid {pid}), \
                     final log has {got}"
                )),
                None => c.violation(format!(
                    "topic {topic} epoch {epoch} offset {offset}: acked id {id} (pid {pid}) \
                     not in final log"
                )),
            }
        }
    }
    for (topic, n) in unread {
        c.violation(format!(
            "topic {topic}: {n} acked publishes but no final meta"
        ));
    }
    (c, lost)
}

pub(super) fn consumer_loss(events: &[Event], info: &mut Info) -> CheckResult {
    let mut c = CheckResult::new("consumer loss");
    let group = events.iter().find_map(|e| match e {
        Event::Start { consumer, .. } => Some(consumer.as_str()),
        _ => None,
    });
    if group == Some("") {
        c.skipped = true;
        return c;
    }
    let mut got: HashMap<(&str, &str), u64> = HashMap::new();
    for e in events {
        if let Event::ConsumerDeliver { topic, id, .. } = e {
            *got.entry((topic, id)).or_default() += 1;
        }
    }
    info.consumer_duplicates = got.values().map(|n| n - 1).sum();
    let consumed_topics: HashSet<&str> = got.keys().map(|(t, _)| *t).collect();
    if group.is_none() && consumed_topics.is_empty() {
        c.skipped = true;
        return c;
    }
    let checked = |topic: &str| group.is_some() || consumed_topics.contains(topic);
    let meta = final_meta(events);
    let mut missing = BTreeSet::new();
    for ((topic, epoch, offset), (id, pid)) in acked(events) {
        let in_final_epoch = meta.get(topic).is_some_and(|(e, _)| *e == epoch);
        if in_final_epoch
            && checked(topic)
            && !got.contains_key(&(topic, id))
            && missing.insert((topic, id))
        {
            c.violation(format!(
                "topic {topic} epoch {epoch} offset {offset}: acked id {id} (pid {pid}) never \
                 reached consumer group"
            ));
        }
    }
    c
}
