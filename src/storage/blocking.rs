//! Storage calls off the async workers. A sled call blocks its thread (page faults,
//! segment reads, scans, retention's deletes), and topic actors, sessions and the cluster's
//! inbound calls all run on tokio's few worker threads (two on a two-core machine), so one
//! long call stalls every task scheduled there. [`off_worker`] runs it on tokio's blocking
//! pool instead.
//!
//! `spawn_blocking` rather than `block_in_place`: `block_in_place` panics on a
//! current-thread runtime (most tests, and any embedding of the library), and it hands the
//! worker's other tasks to another thread only after they waited for the hand-off; the
//! price of `spawn_blocking` is one `Arc` clone and owned arguments. Short calls on the
//! publish path (an append, an id lookup, a point read) stay inline: a hop to the pool
//! would cost more than they do.

use super::{StorageError, TopicLog};
use std::sync::Arc;

/// Runs `f` with `log` on the blocking pool. A panic in it stays a panic of the caller,
/// as if `f` had been called inline, so that the caller's supervisor decides about it.
pub async fn off_worker<T, F>(log: &Arc<dyn TopicLog>, f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&dyn TopicLog) -> Result<T, StorageError> + Send + 'static,
{
    let log = Arc::clone(log);
    match tokio::task::spawn_blocking(move || f(&*log)).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StorageError::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SledLog, SledOptions};

    fn log(dir: &tempfile::TempDir) -> Arc<dyn TopicLog> {
        let opts = SledOptions {
            dedupe_window_ms: 1_000,
            cache_bytes: 1024 * 1024,
        };
        Arc::new(SledLog::open(dir.path(), opts).expect("open"))
    }

    /// Runs on a current-thread runtime, where `block_in_place` would panic, and on a
    /// thread that is not one of the runtime's.
    #[tokio::test]
    async fn runs_on_the_blocking_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime_thread = std::thread::current().id();
        let (thread, topics) = off_worker(&log(&dir), |log| {
            Ok((std::thread::current().id(), log.topics()?))
        })
        .await
        .expect("off_worker");
        assert_ne!(thread, runtime_thread);
        assert!(topics.is_empty());
    }

    #[tokio::test]
    #[should_panic(expected = "disk on fire")]
    async fn a_panic_stays_the_callers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = off_worker::<(), _>(&log(&dir), |_| panic!("disk on fire")).await;
    }
}
