//! Silent loss and order for stream subscribers (see the [checker](super) docs).

use std::collections::HashMap;

use super::{transport_name, CheckResult, Info};
use crate::chaos::history::{Event, Transport};

/// Where one subscriber stands in one topic.
struct Position {
    epoch: String,
    /// The last offset delivered (or announced as the starting point minus one).
    last: u64,
    /// How it last talked to the cluster, for the examples.
    via: Option<Transport>,
}

fn who(sub: &str, via: Option<Transport>, topic: &str, epoch: &str) -> String {
    match via {
        Some(v) => format!(
            "sub {sub} ({}) topic {topic} epoch {epoch}",
            transport_name(v)
        ),
        None => format!("sub {sub} topic {topic} epoch {epoch}"),
    }
}

/// Returns (silent loss, order).
pub(super) fn check(events: &[Event], info: &mut Info) -> (CheckResult, CheckResult) {
    let mut loss = CheckResult::new("silent loss");
    let mut order = CheckResult::new("order");
    let mut pos: HashMap<(&str, &str), Position> = HashMap::new();
    for e in events {
        match e {
            Event::Subscribed {
                sub,
                via,
                topic,
                epoch,
                recovered,
                first,
                ..
            } => {
                let announced = Position {
                    epoch: epoch.clone(),
                    last: first.saturating_sub(1),
                    via: Some(*via),
                };
                match pos.get_mut(&(sub.as_str(), topic.as_str())) {
                    Some(p) if *recovered => {
                        p.via = Some(*via);
                        if p.epoch != *epoch {
                            loss.violation(format!(
                                "{}: resumed in epoch {epoch} with recovered:true, no reset",
                                who(sub, p.via, topic, &p.epoch)
                            ));
                            *p = announced;
                        }
                    }
                    Some(p) => *p = announced,
                    None => {
                        pos.insert((sub, topic), announced);
                    }
                }
            }
            Event::Reset {
                sub,
                topic,
                epoch,
                first,
                ..
            } => {
                let via = pos.get(&(sub.as_str(), topic.as_str())).and_then(|p| p.via);
                let p = Position {
                    epoch: epoch.clone(),
                    last: first.saturating_sub(1),
                    via,
                };
                pos.insert((sub, topic), p);
            }
            Event::Deliver {
                sub,
                via,
                topic,
                epoch,
                offset,
                ..
            } => {
                let p = pos.entry((sub, topic)).or_insert_with(|| Position {
                    epoch: epoch.clone(),
                    last: 0,
                    via: Some(*via),
                });
                p.via = Some(*via);
                if p.epoch != *epoch {
                    loss.violation(format!(
                        "{}: offset {offset} delivered in epoch {epoch}, no reset",
                        who(sub, p.via, topic, &p.epoch)
                    ));
                    p.epoch = epoch.clone();
                    p.last = *offset;
                } else if *offset <= p.last {
                    order.violation(format!(
                        "{}: offset {offset} delivered after {}",
                        who(sub, p.via, topic, epoch),
                        p.last
                    ));
                } else {
                    if *offset > p.last + 1 {
                        info.missing_offsets += offset - p.last - 1;
                        loss.violation(format!(
                            "{}: offsets {}..={} missing, no reset",
                            who(sub, p.via, topic, epoch),
                            p.last + 1,
                            offset - 1
                        ));
                    }
                    p.last = *offset;
                }
            }
            _ => {}
        }
    }
    (loss, order)
}
