//! Where a topic's retained messages are read from: this node's log when it owns the topic,
//! the owner's log (over the cluster) when it only follows it.

use crate::cluster::client::Cluster;
use crate::cluster::wire::{Call, Reply};
use crate::protocol::TopicName;
use crate::storage::blocking::off_worker;
use crate::storage::{StoredMessage, TopicLog};
use crate::topic::error::TopicError;
use std::sync::Arc;

#[derive(Clone)]
pub enum History {
    Local(Arc<dyn TopicLog>),
    Remote { cluster: Cluster, owner: String },
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            History::Local(_) => f.write_str("Local"),
            History::Remote { owner, .. } => write!(f, "Remote({owner})"),
        }
    }
}

/// Messages read, and the copy's oldest retained offset at the time.
pub struct Batch {
    pub messages: Vec<StoredMessage>,
    pub first: u64,
}

impl History {
    /// Retained messages `from..=to` of `topic` in `epoch`, as [`TopicLog::read`] bounds
    /// them. An error if the history is unreadable or no longer of `epoch`.
    pub async fn read(
        &self,
        topic: &TopicName,
        epoch: &str,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Batch, TopicError> {
        match self {
            History::Local(log) => {
                // Off the worker: a replay reads up to a whole batch from disk.
                let (name, epoch) = (topic.clone(), epoch.to_string());
                let read = off_worker(log, move |log| {
                    let meta = log.meta(name.as_str()).ok().flatten();
                    let messages = match &meta {
                        Some(m) if m.epoch == epoch => {
                            Some(log.read(name.as_str(), from, to, max_count, max_bytes)?)
                        }
                        _ => None,
                    };
                    Ok((meta, messages))
                })
                .await;
                match read {
                    Ok((Some(meta), Some(messages))) => Ok(Batch {
                        messages,
                        first: meta.first,
                    }),
                    // Taken over or replaced under this reader: start over from the cursor.
                    Ok(_) => Err(TopicError::unavailable(
                        "the topic changed epoch while reading; resubscribe",
                    )),
                    Err(e) => {
                        tracing::error!(topic = %topic, error = %e, "reading the log failed");
                        Err(TopicError::Internal)
                    }
                }
            }
            History::Remote { cluster, owner } => {
                let call = Call::Read {
                    topic: topic.as_str().to_string(),
                    from,
                    to,
                    max_count: u32::try_from(max_count).unwrap_or(u32::MAX),
                    max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
                };
                match cluster.call(owner, &call).await {
                    Ok(Reply::Messages {
                        epoch: e,
                        first,
                        messages,
                        ..
                    }) if e == epoch => Ok(Batch {
                        messages: messages.into_iter().map(StoredMessage::from).collect(),
                        first,
                    }),
                    Ok(Reply::Messages { .. }) => Err(TopicError::unavailable(
                        "the topic changed epoch while reading; resubscribe",
                    )),
                    Ok(other) => Err(unexpected(owner, other)),
                    Err(e) => {
                        tracing::warn!(topic = %topic, owner, error = %e, "remote read failed");
                        Err(TopicError::unavailable("the topic's owner is unreachable"))
                    }
                }
            }
        }
    }
}

/// An answer that does not fit the request: an error reply, or a confused peer.
pub fn unexpected(node: &str, reply: Reply) -> TopicError {
    match reply {
        Reply::Error {
            code,
            message,
            retry,
        } => TopicError::from_peer(crate::cluster::wire::error_code(&code), message, retry),
        other => {
            tracing::error!(node, reply = ?other, "unexpected cluster reply");
            TopicError::Internal
        }
    }
}
