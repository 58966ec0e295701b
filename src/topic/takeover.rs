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
use crate::protocol::{ApiError, TopicName};
use crate::storage::{StoredMessage, TopicMeta};
use futures_util::future::join_all;

/// Messages per import step.
const IMPORT_COUNT: u32 = 1000;
const IMPORT_BYTES: u32 = 1 << 20;

/// One node's copy: its epoch and description.
pub type Copy = (String, CopyDesc);

/// What the new owner does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This node's copy is the newest: keep it.
    Keep,
    /// `node` holds the newest copy: take it over.
    Import {
        node: String,
        epoch: String,
        desc: CopyDesc,
    },
    /// No live node holds an unsealed copy. `existed`: some copy was seen, so the topic's
    /// history is lost and a new epoch at `term` replaces it; otherwise the topic is new.
    Fresh { term: u64, existed: bool },
}

/// Picks the newest unsealed copy (by term, then head; this node's wins a tie). One sealed
/// copy may be taken too: the source of this node's own import that was cut short. That
/// source was sealed for this node, which never appended to the epoch, so the source still
/// holds all of it.
pub fn decide(local: Option<&Copy>, remote: &[(String, Option<Copy>)], now_ms: u64) -> Decision {
    let resumable = local.filter(|(_, d)| d.importing).and_then(|(epoch, d)| {
        remote.iter().find_map(|(node, c)| {
            c.as_ref()
                .filter(|(e, r)| e == epoch && r.term == d.term)
                .map(|(e, r)| (node, e, r))
        })
    });
    let decision = decide_unsealed(local, remote, now_ms);
    match (resumable, &decision) {
        (Some((node, epoch, desc)), Decision::Fresh { .. }) => Decision::Import {
            node: node.clone(),
            epoch: epoch.clone(),
            desc: *desc,
        },
        (Some((node, epoch, desc)), Decision::Import { desc: best, .. })
            if best.term <= desc.term =>
        {
            Decision::Import {
                node: node.clone(),
                epoch: epoch.clone(),
                desc: *desc,
            }
        }
        _ => decision,
    }
}

fn decide_unsealed(
    local: Option<&Copy>,
    remote: &[(String, Option<Copy>)],
    now_ms: u64,
) -> Decision {
    let mut best: Option<(u64, u64, bool, Option<&str>, &Copy)> = None;
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
        if copy.1.sealed {
            continue;
        }
        let key = (copy.1.term, copy.1.head, node.is_none());
        if best.is_none_or(|b| key > (b.0, b.1, b.2)) {
            best = Some((key.0, key.1, key.2, node, copy));
        }
    }
    match best {
        Some((_, _, _, None, _)) => Decision::Keep,
        Some((_, _, _, Some(node), (epoch, desc))) => Decision::Import {
            node: node.to_string(),
            epoch: epoch.clone(),
            desc: *desc,
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
pub async fn takeover(topic: &TopicName, ctx: &TopicContext) -> Result<Start, ApiError> {
    let name = topic.as_str();
    let peers = ctx.cluster.peers();
    let asks = peers.iter().map(|p| async move {
        let r = ctx
            .cluster
            .call(
                p,
                &Call::Relinquish {
                    topic: name.to_string(),
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
                return Err(super::moving());
            }
        }
    }
    let log = &ctx.log;
    let storage = |e: crate::storage::StorageError| {
        tracing::error!(topic = %topic, error = %e, "takeover storage error");
        ApiError::internal()
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
                importing: l.importing,
            },
        )),
        _ => None,
    };
    let decision = decide(local.as_ref(), &remote, super::now_ms());
    match &decision {
        Decision::Keep => {}
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
    if !matches!(decision, Decision::Keep) {
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
) -> Result<(), ApiError> {
    let name = topic.as_str();
    let failed = |what: &str| {
        tracing::warn!(topic = %topic, node, what, "import failed");
        super::moving()
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
pub async fn durable(ctx: &TopicContext) -> Result<(), ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.flusher.after_flush(Box::new(move |r| {
        let _ = tx.send(r.is_ok());
    }));
    match rx.await {
        Ok(true) => Ok(()),
        _ => Err(ApiError::unavailable("storage is not flushing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(epoch: &str, term: u64, head: u64, sealed: bool) -> Copy {
        (
            epoch.to_string(),
            CopyDesc {
                term,
                first: 1,
                head,
                sealed,
                importing: false,
            },
        )
    }

    #[test]
    fn a_new_topic_is_fresh_and_not_lost() {
        let d = decide(None, &[("n2".into(), None)], 1000);
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
        let local = copy("a", 5, 10, false);
        let remote = [
            ("n2".into(), None),
            ("n3".into(), Some(copy("old", 3, 99, false))),
        ];
        assert_eq!(decide(Some(&local), &remote, 1), Decision::Keep);
    }

    #[test]
    fn a_returning_owner_imports_the_interim_owners_newer_copy() {
        // n1 crashed owning epoch a (term 5); n2 took over with a new epoch b (term 6).
        let local = copy("a", 5, 10, false);
        let remote = [("n2".into(), Some(copy("b", 6, 3, false)))];
        match decide(Some(&local), &remote, 1) {
            Decision::Import { node, epoch, desc } => {
                assert_eq!((node.as_str(), epoch.as_str(), desc.head), ("n2", "b", 3));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_handover_between_live_nodes_keeps_the_epoch() {
        let remote = [("n1".into(), Some(copy("a", 5, 10, false)))];
        assert!(matches!(decide(None, &remote, 1), Decision::Import { epoch, .. } if epoch == "a"));
    }

    #[test]
    fn sealed_copies_are_never_candidates_and_raise_the_next_term() {
        // Our copy was handed over earlier; the node that took it is gone.
        let local = copy("a", 5, 10, true);
        let remote = [("n3".into(), Some(copy("b", 9, 2, true)))];
        assert_eq!(
            decide(Some(&local), &remote, 7),
            Decision::Fresh {
                term: 10,
                existed: true
            }
        );
    }

    #[test]
    fn lost_history_gets_a_term_above_every_known_one_even_with_a_slow_clock() {
        let remote = [("n2".into(), Some(copy("b", 1_000, 2, true)))];
        assert_eq!(
            decide(None, &remote, 5),
            Decision::Fresh {
                term: 1_001,
                existed: true
            }
        );
    }

    #[test]
    fn an_import_cut_short_resumes_from_its_sealed_source() {
        let mut local = copy("b", 6, 2, true);
        local.1.importing = true;
        let remote = [
            ("n2".into(), Some(copy("b", 6, 9, true))),
            ("n3".into(), Some(copy("a", 5, 20, true))),
        ];
        match decide(Some(&local), &remote, 1) {
            Decision::Import { node, epoch, desc } => {
                assert_eq!((node.as_str(), epoch.as_str(), desc.head), ("n2", "b", 9));
            }
            d => panic!("{d:?}"),
        }
        // Without the cut-short import, the same sealed copies are history lost.
        local.1.importing = false;
        assert!(matches!(
            decide(Some(&local), &remote, 1),
            Decision::Fresh { existed: true, .. }
        ));
    }

    #[test]
    fn a_tie_prefers_the_longer_copy_then_our_own() {
        let local = copy("a", 5, 10, false);
        let longer = [("n2".into(), Some(copy("a", 5, 12, false)))];
        assert!(matches!(
            decide(Some(&local), &longer, 1),
            Decision::Import { .. }
        ));
        let same = [("n2".into(), Some(copy("a", 5, 10, false)))];
        assert_eq!(decide(Some(&local), &same, 1), Decision::Keep);
    }
}
