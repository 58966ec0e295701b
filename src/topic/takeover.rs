//! Taking a topic over when this node becomes its owner.
//!
//! Every other member that is up is asked to relinquish the topic: it stops owning it,
//! seals its copy durably (never to append to it again) and describes the copy as it was.
//! [`decide`] then picks the newest unsealed copy by term: keep this node's, import a
//! peer's (messages, consumers, publish ids), or — when the only up-to-date copy was on a
//! node that is gone — start a new epoch with a higher term, so that every subscriber is
//! told (`recovered:false`) instead of seeing a hole or a reused offset.
//!
//! Because a copy is sealed before it is handed over, and an imported copy is sealed until
//! the import completes, no two nodes ever append to one epoch.

use super::actor::TopicContext;
use super::new_epoch;
use crate::cluster::wire::{Call, CopyDesc, Reply};
use crate::protocol::TopicName;
use crate::storage::{StoredMessage, TopicMeta};
use crate::topic::error::TopicError;
use futures_util::future::join_all;

/// Messages per import step.
const IMPORT_COUNT: u32 = 1000;
const IMPORT_BYTES: u32 = 1 << 20;

/// One node's copy: its epoch and description.
pub type Copy = (String, CopyDesc);

/// What the new owner does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This node's copy is the newest: keep it. `reopen`: it was sealed for that node,
    /// whose takeover never continued it; open it again (only if still sealed for it).
    Keep { reopen: Option<String> },
    /// `node` holds the newest copy: take it over.
    Import {
        node: String,
        epoch: String,
        desc: CopyDesc,
    },
    /// No live node holds a copy that may be continued. `existed`: some copy was seen, so
    /// the topic's history is lost and a new epoch at `term` replaces it; otherwise the
    /// topic is new.
    Fresh { term: u64, existed: bool },
}

/// A candidate copy: its rank (term, head, is ours), its node (`None`: ours), the copy.
type Ranked<'a> = ((u64, u64, bool), Option<&'a str>, &'a Copy);

/// Picks the newest copy that may be continued (by term, then head; this node's wins a
/// tie). A copy may be continued when it is unsealed, or when it was sealed for a takeover
/// that provably never continued it: this node's own (it competes with its own copy), or
/// that of a peer that answered now without an unsealed copy of that epoch. A copy sealed
/// for a node that did not answer is not: that node may have appended to the epoch.
pub fn decide(
    me: &str,
    local: Option<&Copy>,
    remote: &[(String, Option<Copy>)],
    now_ms: u64,
) -> Decision {
    let continued_by = |peer: &str, epoch: &str| {
        remote
            .iter()
            .any(|(n, c)| n == peer && c.as_ref().is_some_and(|(e, d)| e == epoch && !d.sealed))
    };
    let answered = |peer: &str| remote.iter().any(|(n, _)| n == peer);
    let may_continue = |(epoch, d): &Copy| match (&d.sealed_for, d.sealed) {
        (_, false) => true,
        (Some(taker), true) if taker == me => true,
        (Some(taker), true) => answered(taker) && !continued_by(taker, epoch),
        (None, true) => false,
    };
    let mut best: Option<Ranked> = None;
    let mut max_term = 0;
    let mut existed = false;
    let all = local.map(|c| (None, c)).into_iter().chain(
        remote
            .iter()
            .filter_map(|(n, c)| c.as_ref().map(|c| (Some(n.as_str()), c))),
    );
    for (node, copy) in all {
        existed = true;
        max_term = max_term.max(copy.1.term);
        if !may_continue(copy) {
            continue;
        }
        let key = (copy.1.term, copy.1.head, node.is_none());
        if best.is_none_or(|b| key > b.0) {
            best = Some((key, node, copy));
        }
    }
    match best {
        Some((_, None, (_, desc))) => Decision::Keep {
            reopen: desc.sealed.then(|| desc.sealed_for.clone()).flatten(),
        },
        Some((_, Some(node), (epoch, desc))) => Decision::Import {
            node: node.to_string(),
            epoch: epoch.clone(),
            desc: desc.clone(),
        },
        None => Decision::Fresh {
            term: now_ms.max(max_term + 1),
            existed,
        },
    }
}

/// How the owner starts: the topic's meta, whether it exists, and the term to create it
/// with if it does not.
pub struct Start {
    pub meta: TopicMeta,
    pub exists: bool,
    pub term: u64,
}

/// Runs the takeover of `topic` (see the module doc).
pub async fn takeover(topic: &TopicName, ctx: &TopicContext) -> Result<Start, TopicError> {
    let name = topic.as_str();
    let peers = ctx.cluster.peers();
    let asks = peers.iter().map(|p| async move {
        let r = ctx
            .cluster
            .call(
                p,
                &Call::Relinquish {
                    topic: name.to_string(),
                    from: ctx.cluster.me().to_string(),
                },
            )
            .await;
        (p.clone(), r)
    });
    let mut remote = Vec::with_capacity(peers.len());
    for (peer, r) in join_all(asks).await {
        match r {
            Ok(Reply::Relinquished(copy)) => remote.push((peer, copy)),
            other => {
                tracing::info!(topic = %topic, peer, reply = ?other.map(|_| ()), "peer did not hand the topic over yet");
                return Err(TopicError::Moving);
            }
        }
    }
    let log = &ctx.log;
    let storage = |e: crate::storage::StorageError| {
        tracing::error!(topic = %topic, error = %e, "takeover storage error");
        TopicError::Internal
    };
    let local = match (
        log.meta(name).map_err(storage)?,
        log.lease(name).map_err(storage)?,
    ) {
        (Some(m), Some(l)) => Some((
            m.epoch,
            CopyDesc {
                term: l.term,
                first: m.first,
                head: m.head,
                sealed: l.sealed,
                sealed_for: l.sealed_for,
            },
        )),
        _ => None,
    };
    let decision = decide(ctx.cluster.me(), local.as_ref(), &remote, super::now_ms());
    match &decision {
        Decision::Keep { reopen: None } => {}
        Decision::Keep {
            reopen: Some(taker),
        } => {
            tracing::info!(topic = %topic, taker, "reopening a copy whose takeover never continued it");
            log.reopen(name, taker).map_err(|_| TopicError::Moving)?;
        }
        Decision::Import { node, epoch, desc } => {
            import(topic, ctx, node, epoch, desc).await?;
        }
        Decision::Fresh { term, existed } => {
            if *existed {
                let epoch = new_epoch();
                tracing::warn!(topic = %topic, epoch, "no live copy of the topic: its history is lost; new epoch");
                metrics::counter!("starling_epochs_lost_total").increment(1);
                log.replace(name, &epoch, *term, 1).map_err(storage)?;
                log.unseal(name).map_err(storage)?;
            }
        }
    }
    if decision != (Decision::Keep { reopen: None }) {
        durable(ctx).await?;
    }
    let term = match decision {
        Decision::Fresh { term, .. } => term,
        _ => 0,
    };
    Ok(match log.meta(name).map_err(storage)? {
        Some(meta) => Start {
            meta,
            exists: true,
            term,
        },
        None => Start {
            meta: TopicMeta {
                epoch: new_epoch(),
                first: 1,
                head: 0,
            },
            exists: false,
            term,
        },
    })
}

/// Copies `node`'s sealed copy of `topic` into this node's log.
async fn import(
    topic: &TopicName,
    ctx: &TopicContext,
    node: &str,
    epoch: &str,
    desc: &CopyDesc,
) -> Result<(), TopicError> {
    let name = topic.as_str();
    let failed = |what: &str| {
        tracing::warn!(topic = %topic, node, what, "import failed");
        TopicError::Moving
    };
    let log = &ctx.log;
    log.replace(name, epoch, desc.term, desc.first)
        .map_err(|_| failed("replace"))?;
    let now = super::now_ms();
    let mut next = desc.first;
    while next <= desc.head {
        let call = Call::Read {
            topic: name.to_string(),
            from: next,
            to: desc.head,
            max_count: IMPORT_COUNT,
            max_bytes: IMPORT_BYTES,
        };
        let messages = match ctx.cluster.call(node, &call).await {
            Ok(Reply::Messages {
                epoch: e, messages, ..
            }) if e == epoch => messages,
            _ => return Err(failed("read")),
        };
        if messages.first().map(|m| m.offset) != Some(next) {
            return Err(failed("gap"));
        }
        let messages: Vec<StoredMessage> = messages.into_iter().map(StoredMessage::from).collect();
        log.append(name, &messages).map_err(|_| failed("append"))?;
        for m in &messages {
            if now.saturating_sub(m.time_ms) <= ctx.dedupe_window_ms {
                log.remember_id(name, &m.id, m.offset, m.time_ms)
                    .map_err(|_| failed("ids"))?;
            }
        }
        next = messages.last().map_or(next, |m| m.offset + 1);
    }
    let consumers = match ctx
        .cluster
        .call(
            node,
            &Call::Consumers {
                topic: name.to_string(),
            },
        )
        .await
    {
        Ok(Reply::Consumers(c)) => c,
        _ => return Err(failed("consumers")),
    };
    for (consumer, state) in &consumers {
        log.save_consumer(name, consumer, state)
            .map_err(|_| failed("consumers"))?;
    }
    log.unseal(name).map_err(|_| failed("unseal"))?;
    tracing::info!(topic = %topic, from = node, epoch, head = desc.head, consumers = consumers.len(), "topic taken over");
    Ok(())
}

/// Waits until everything written so far is durable.
pub async fn durable(ctx: &TopicContext) -> Result<(), TopicError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.flusher.after_flush(Box::new(move |r| {
        let _ = tx.send(r.is_ok());
    }));
    match rx.await {
        Ok(true) => Ok(()),
        _ => Err(TopicError::unavailable("storage is not flushing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(epoch: &str, term: u64, head: u64, sealed_for: Option<&str>) -> Copy {
        (
            epoch.to_string(),
            CopyDesc {
                term,
                first: 1,
                head,
                sealed: sealed_for.is_some(),
                sealed_for: sealed_for.map(str::to_string),
            },
        )
    }

    const KEEP: Decision = Decision::Keep { reopen: None };

    #[test]
    fn a_new_topic_is_fresh_and_not_lost() {
        let d = decide("n1", None, &[("n2".into(), None)], 1000);
        assert_eq!(
            d,
            Decision::Fresh {
                term: 1000,
                existed: false
            }
        );
    }

    #[test]
    fn own_copy_is_kept_when_no_one_has_a_newer_one() {
        let local = copy("a", 5, 10, None);
        let remote = [
            ("n2".into(), None),
            ("n3".into(), Some(copy("old", 3, 99, None))),
        ];
        assert_eq!(decide("n1", Some(&local), &remote, 1), KEEP);
    }

    #[test]
    fn a_returning_owner_imports_the_interim_owners_newer_copy() {
        // n1 crashed owning epoch a (term 5); n2 took over with a new epoch b (term 6).
        let local = copy("a", 5, 10, None);
        let remote = [("n2".into(), Some(copy("b", 6, 3, None)))];
        match decide("n1", Some(&local), &remote, 1) {
            Decision::Import { node, epoch, desc } => {
                assert_eq!((node.as_str(), epoch.as_str(), desc.head), ("n2", "b", 3));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_handover_between_live_nodes_keeps_the_epoch() {
        let remote = [("n1".into(), Some(copy("a", 5, 10, None)))];
        let d = decide("n4", None, &remote, 1);
        assert!(matches!(d, Decision::Import { epoch, .. } if epoch == "a"));
    }

    #[test]
    fn a_copy_sealed_for_a_node_that_is_gone_is_lost_with_it() {
        // Our copy went to n3, which may have appended to epoch a before it died.
        let local = copy("a", 5, 10, Some("n3"));
        let remote = [("n2".into(), Some(copy("b", 9, 2, Some("n9"))))];
        assert_eq!(
            decide("n1", Some(&local), &remote, 7),
            Decision::Fresh {
                term: 10,
                existed: true
            }
        );
    }

    #[test]
    fn lost_history_gets_a_term_above_every_known_one_even_with_a_slow_clock() {
        let remote = [("n2".into(), Some(copy("b", 1_000, 2, Some("n9"))))];
        assert_eq!(
            decide("n1", None, &remote, 5),
            Decision::Fresh {
                term: 1_001,
                existed: true
            }
        );
    }

    #[test]
    fn a_takeover_cut_short_is_resumed_from_the_copy_sealed_for_it() {
        // Our earlier attempt sealed n2's copy for us, then failed (or our import did).
        let mut local = copy("b", 6, 2, None);
        local.1.sealed = true;
        let remote = [
            ("n2".into(), Some(copy("b", 6, 9, Some("n1")))),
            ("n3".into(), Some(copy("a", 5, 20, Some("n2")))),
        ];
        match decide("n1", Some(&local), &remote, 1) {
            Decision::Import { node, epoch, desc } => {
                assert_eq!((node.as_str(), epoch.as_str(), desc.head), ("n2", "b", 9));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_copy_sealed_for_a_peer_that_never_continued_it_is_still_the_newest() {
        // n4 sealed n2's copy, then gave up; n4 answers now without a copy of epoch b.
        let remote = [
            ("n2".into(), Some(copy("b", 6, 9, Some("n4")))),
            ("n4".into(), None),
        ];
        assert!(
            matches!(decide("n5", None, &remote, 1), Decision::Import { node, .. } if node == "n2")
        );
        // Unless n4 did continue it: then n4's copy is the one.
        let remote = [
            ("n2".into(), Some(copy("b", 6, 9, Some("n4")))),
            ("n4".into(), Some(copy("b", 6, 12, None))),
        ];
        assert!(
            matches!(decide("n5", None, &remote, 1), Decision::Import { node, .. } if node == "n4")
        );
        // And our own copy, sealed for n4 that never continued it, is reopened.
        let local = copy("b", 6, 9, Some("n4"));
        assert_eq!(
            decide("n2", Some(&local), &[("n4".into(), None)], 1),
            Decision::Keep {
                reopen: Some("n4".into())
            }
        );
    }

    #[test]
    fn a_tie_prefers_the_longer_copy_then_our_own() {
        let local = copy("a", 5, 10, None);
        let longer = [("n2".into(), Some(copy("a", 5, 12, None)))];
        assert!(matches!(
            decide("n1", Some(&local), &longer, 1),
            Decision::Import { .. }
        ));
        let same = [("n2".into(), Some(copy("a", 5, 10, None)))];
        assert_eq!(decide("n1", Some(&local), &same, 1), KEEP);
    }
}
