//! How a topic actor writes: every change to a topic's storage (messages, publish ids,
//! consumer positions, retention) is an [`Op`] in its shard's replicated log. The actor
//! hands ops to its [`TopicWriter`]; a task of the writer proposes them in the order they
//! were submitted, one entry at a time, putting everything submitted meanwhile into the
//! next entry (group commit through Raft). A callback runs once its ops are committed on a
//! majority of the shard's voters and applied on this node, or have failed.
//!
//! One entry in flight per topic keeps a topic's entries in submission order (offsets are
//! decided by the actor before it submits); different topics' entries are in flight at once.
//! When the actor stops (its writer is dropped), nothing more it submitted is proposed: a
//! successor decides offsets afresh from the log, and a stale entry must not race it. After
//! a write fails, every later one fails with it (the actor then retires).

use crate::replication::{Op, ProposeError, Replication};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why submitted ops were not committed. Their outcome may be unknown: a proposal that
/// timed out can still commit later.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// This node no longer leads the topic's shard.
    #[error("this node no longer leads the topic's shard")]
    NotLeader,
    /// No majority answered, or the node is stopping.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ProposeError> for WriteError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { .. } => WriteError::NotLeader,
            other => WriteError::Unavailable(other.to_string()),
        }
    }
}

/// Runs once the ops submitted with it (and every op submitted before) are committed.
pub(crate) type Committed = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

/// Most bytes of message data the writer puts in one entry (more waits for the next).
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The actor's handle. Dropping it ends the task: what is queued is answered
/// `Unavailable` without being proposed.
pub(crate) struct TopicWriter {
    tx: mpsc::UnboundedSender<(Vec<Op>, Committed)>,
    closed: Arc<AtomicBool>,
}

impl Drop for TopicWriter {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl TopicWriter {
    pub fn spawn(replication: Replication, shard: u32) -> TopicWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(replication, shard, rx, Arc::clone(&closed)));
        TopicWriter { tx, closed }
    }

    /// Proposes `ops` after everything submitted before; `done` runs once they commit.
    pub fn submit(&self, ops: Vec<Op>, done: Committed) {
        if let Err(mpsc::error::SendError((_, done))) = self.tx.send((ops, done)) {
            done(Err(WriteError::Unavailable("the topic is stopping".into())));
        }
    }

    /// Runs `done` once everything submitted so far is committed.
    pub fn after_commit(&self, done: Committed) {
        self.submit(Vec::new(), done);
    }
}

async fn run(
    replication: Replication,
    shard: u32,
    mut rx: mpsc::UnboundedReceiver<(Vec<Op>, Committed)>,
    closed: Arc<AtomicBool>,
) {
    let mut carry: Option<(Vec<Op>, Committed)> = None;
    // After a write that did not commit, nothing later is proposed or confirmed: a later
    // "committed" would vouch for the earlier ops too.
    let mut failed: Option<WriteError> = None;
    loop {
        let first = match carry.take() {
            Some(next) => next,
            None => match rx.recv().await {
                Some(next) => next,
                None => return,
            },
        };
        let mut bytes = op_bytes(&first.0);
        let (mut ops, mut dones) = (first.0, vec![first.1]);
        while bytes < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                Ok((more, done)) => {
                    let size = op_bytes(&more);
                    if bytes + size > MAX_ENTRY_BYTES && !ops.is_empty() {
                        carry = Some((more, done));
                        break;
                    }
                    bytes += size;
                    ops.extend(more);
                    dones.push(done);
                }
                Err(_) => break,
            }
        }
        let result = if let Some(e) = &failed {
            Err(e.clone())
        } else if closed.load(Ordering::Acquire) {
            Err(WriteError::Unavailable("the topic stopped".into()))
        } else if ops.is_empty() {
            Ok(())
        } else {
            replication
                .propose(shard, ops)
                .await
                .map_err(WriteError::from)
        };
        if let Err(e) = &result {
            if failed.is_none() {
                tracing::info!(shard, error = %e, "topic write not committed");
                failed = Some(e.clone());
            }
        }
        for done in dones {
            done(result.clone());
        }
    }
}

/// The message bytes in `ops`, roughly (what bounds an entry's size).
fn op_bytes(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Append { msgs, .. } => msgs.iter().map(|m| m.size()).sum(),
            Op::SaveConsumer { state, .. } => state.len() + 64,
            _ => 64,
        })
        .sum()
}
