//! How a topic actor writes: every change to a topic's storage (messages, publish ids,
//! consumer positions, retention) is an [`Op`] in its shard's replicated log. The actor
//! hands ops to its [`TopicWriter`]; a task of the writer submits them in the order they
//! were submitted, putting everything queued meanwhile into one entry (group commit through
//! Raft), with up to [`MAX_IN_FLIGHT`] entries of the topic in flight at once. Submission
//! is ordered (`Replication::submit` returns once the entry is queued in the log), so the
//! entries land in the log in the actor's order. A callback runs once its ops are committed
//! on a majority of the shard's voters and applied on this node, or have failed.
//! When the actor stops (its writer is dropped), nothing more it submitted is proposed: a
//! successor decides offsets afresh from the log, and a stale entry must not race it. After
//! a write fails, every later one fails with it (the actor then retires).

use crate::replication::{Applied, Op, ProposeError, Replication};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

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
    /// The entry committed, but some of its offsets held other messages already (an entry
    /// of an earlier leadership committed late): the actor's view of the topic is wrong.
    #[error("committed offsets hold other messages")]
    Overtaken,
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
/// Entries of one topic in flight at once (each after the one before in the log).
const MAX_IN_FLIGHT: usize = 8;

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
    let failed: Arc<Mutex<Option<WriteError>>> = Arc::new(Mutex::new(None));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Outcomes are resolved in submission order: an entry that is fine is never failed by
    // a later one whose outcome happened to be looked at first.
    let (outcomes, rx_outcomes) = mpsc::unbounded_channel();
    tokio::spawn(resolve(rx_outcomes, Arc::clone(&failed), shard));
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
        let early = if let Some(e) = sticky(&failed) {
            Some(Err(e))
        } else if closed.load(Ordering::Acquire) {
            Some(Err(WriteError::Unavailable("the topic stopped".into())))
        } else if ops.is_empty() {
            // Only markers: they are answered once every entry in flight has completed.
            let all = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
            drop(all);
            Some(sticky(&failed).map_or(Ok(()), Err))
        } else {
            None
        };
        if let Some(result) = early {
            answer(dones, result);
            continue;
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            answer(
                dones,
                Err(WriteError::Unavailable("the topic stopped".into())),
            );
            return;
        };
        // Waiting for a slot can take a while: an entry in flight may have failed, or the
        // actor may be gone, meanwhile; then this one must not be proposed.
        let late = sticky(&failed).map(Err).or_else(|| {
            closed
                .load(Ordering::Acquire)
                .then(|| Err(WriteError::Unavailable("the topic stopped".into())))
        });
        if let Some(result) = late {
            drop(permit);
            answer(dones, result);
            continue;
        }
        match replication.submit(shard, ops).await {
            Err(e) => {
                let e = WriteError::from(e);
                fail(&failed, shard, &e);
                answer(dones, Err(e));
            }
            Ok(outcome) => {
                // Spawned, so its timeout runs from now, not from when the entries before it
                // are answered.
                let outcome: Outcome = tokio::spawn(outcome);
                if let Err(mpsc::error::SendError((_, dones, _))) =
                    outcomes.send((outcome, dones, permit))
                {
                    answer(
                        dones,
                        Err(WriteError::Unavailable("the topic stopped".into())),
                    );
                }
            }
        }
    }
}

/// An entry's outcome, as `Replication::submit` gives it, awaited by its own task.
type Outcome = tokio::task::JoinHandle<Result<Applied, ProposeError>>;

/// Answers each submitted entry's callbacks once its outcome resolves, in submission
/// order; ends once the writer's task ended and every outcome is answered.
async fn resolve(
    mut rx: mpsc::UnboundedReceiver<(Outcome, Vec<Committed>, OwnedSemaphorePermit)>,
    failed: Arc<Mutex<Option<WriteError>>>,
    shard: u32,
) {
    while let Some((outcome, dones, permit)) = rx.recv().await {
        let result = match outcome.await {
            Ok(Ok(applied)) if applied.overtaken => Err(WriteError::Overtaken),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(WriteError::from(e)),
            Err(e) => Err(WriteError::Unavailable(format!(
                "the write's task ended: {e}"
            ))),
        };
        if let Err(e) = &result {
            fail(&failed, shard, e);
        }
        // An earlier entry that failed fails this one too.
        let result = match sticky(&failed) {
            Some(e) => Err(e),
            None => result,
        };
        answer(dones, result);
        drop(permit);
    }
}

fn sticky(failed: &Mutex<Option<WriteError>>) -> Option<WriteError> {
    failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn fail(failed: &Mutex<Option<WriteError>>, shard: u32, e: &WriteError) {
    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        tracing::info!(shard, error = %e, "topic write not committed");
        *f = Some(e.clone());
    }
}

fn answer(dones: Vec<Committed>, result: Result<(), WriteError>) {
    for done in dones {
        done(result.clone());
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
