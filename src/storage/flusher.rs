//! Group commit: the one task that flushes the [`TopicLog`] (concurrent flushes deadlock
//! sled 0.34, sled #1308) and tells writers when their appends are durable.
//!
//! Writers append, then call [`Flusher::after_flush`] with a callback. How soon the callback
//! runs depends on the [`FsyncMode`]:
//! - `Batch`: after the next flush that starts after the call. Requests that arrive while a
//!   flush runs are all covered by the single flush that follows it;
//! - `Always`: after a flush of its own, in order;
//! - `None`: at once; the task flushes every `interval` in the background.
//!
//! Callbacks run on the flusher task and must be quick (send on a channel, cast to an actor).
//! Every callback is called exactly once: with `Err` if its flush failed, or if the flusher
//! stopped before it could flush.

use super::TopicLog;
use crate::config::FsyncMode;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Why writes could not be made durable.
#[derive(Clone, Debug, thiserror::Error)]
#[error("flush failed: {0}")]
pub struct FlushFailed(pub String);

/// The outcome of a flush as callbacks see it.
pub type FlushResult = Result<(), FlushFailed>;

/// Called once the writes made before [`Flusher::after_flush`] are durable (or are not).
pub type FlushCallback = Box<dyn FnOnce(FlushResult) + Send>;

/// A callback that is called exactly once: by [`Pending::complete`], or with `Err` if it is
/// dropped first (the flusher task ended or was aborted).
struct Pending(Option<FlushCallback>);

impl Pending {
    fn complete(mut self, result: FlushResult) {
        if let Some(done) = self.0.take() {
            done(result);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(FlushFailed(
                "the flusher stopped before flushing".into(),
            )));
        }
    }
}

/// Handle to the flusher task; cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    mode: FsyncMode,
    requests: mpsc::UnboundedSender<Pending>,
}

impl Flusher {
    /// Starts the flusher task. `interval` is the background flush period with
    /// `FsyncMode::None` (the other modes flush on demand). On shutdown the task completes
    /// every pending request with a final flush, then ends.
    pub fn spawn(
        log: Arc<dyn TopicLog>,
        mode: FsyncMode,
        interval: Duration,
        shutdown: Shutdown,
    ) -> (Flusher, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = FlushTask { log, rx };
        let handle = tokio::spawn(async move {
            match mode {
                FsyncMode::Batch => task.run_batch(shutdown).await,
                FsyncMode::Always => task.run_always(shutdown).await,
                FsyncMode::None => task.run_periodic(interval, shutdown).await,
            }
        });
        let flusher = Flusher { mode, requests: tx };
        (flusher, handle)
    }

    /// Calls `done` once every write made before this call is durable as the mode demands
    /// (see the module doc). With `FsyncMode::None`, `done` is called before this returns.
    pub fn after_flush(&self, done: FlushCallback) {
        let pending = Pending(Some(done));
        if self.mode == FsyncMode::None {
            pending.complete(Ok(()));
            return;
        }
        // If the task has ended, the request comes back and its drop reports the failure.
        if let Err(mpsc::error::SendError(pending)) = self.requests.send(pending) {
            drop(pending);
        }
    }

    /// Resolves once every write made before this call is durable (see
    /// [`Flusher::after_flush`]).
    pub async fn flushed(&self) -> FlushResult {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        // A callback is called exactly once, so the sender is never dropped unsent.
        rx.await
            .unwrap_or_else(|_| Err(FlushFailed("the flusher stopped".into())))
    }
}

struct FlushTask {
    log: Arc<dyn TopicLog>,
    rx: mpsc::UnboundedReceiver<Pending>,
}

impl FlushTask {
    /// One flush on the blocking pool, timed and logged.
    async fn flush(&self, requests: usize) -> FlushResult {
        let log = Arc::clone(&self.log);
        let started = Instant::now();
        let result = match tokio::task::spawn_blocking(move || log.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(FlushFailed(e.to_string())),
            Err(e) => Err(FlushFailed(format!("flush task: {e}"))),
        };
        let secs = started.elapsed().as_secs_f64();
        metrics::histogram!("starling_storage_flush_seconds").record(secs);
        if let Err(e) = &result {
            tracing::warn!(error = %e, requests, secs, "storage flush failed");
        }
        result
    }

    /// Group commit: every request queued when a flush starts is answered by it.
    async fn run_batch(mut self, shutdown: Shutdown) {
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                next = self.rx.recv() => match next {
                    Some(p) => p,
                    None => break,
                },
            };
            let mut batch = vec![first];
            while let Ok(p) = self.rx.try_recv() {
                batch.push(p);
            }
            let result = self.flush(batch.len()).await;
            for p in batch {
                p.complete(result.clone());
            }
        }
        self.drain().await;
    }

    /// One flush per request, in order.
    async fn run_always(mut self, shutdown: Shutdown) {
        loop {
            let pending = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                next = self.rx.recv() => match next {
                    Some(p) => p,
                    None => break,
                },
            };
            let result = self.flush(1).await;
            pending.complete(result);
        }
        self.drain().await;
    }

    /// Flushes every `interval`; nobody waits for these flushes.
    async fn run_periodic(mut self, interval: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = ticks.tick() => {
                    // Failures are logged by `flush`; the next tick retries.
                    let _ = self.flush(0).await;
                }
            }
        }
        self.drain().await;
    }

    /// The final flush: refuses new requests, then answers every queued one with one flush.
    async fn drain(&mut self) {
        self.rx.close();
        let mut pending = Vec::new();
        while let Some(p) = self.rx.recv().await {
            pending.push(p);
        }
        let result = self.flush(pending.len()).await;
        for p in pending {
            p.complete(result.clone());
        }
        tracing::debug!(ok = result.is_ok(), "flusher stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{Faults, HookedLog};
    use crate::storage::{SledLog, SledOptions, StorageError};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tempfile::TempDir;

    /// Counts (and optionally slows or fails) the flushes of a real [`SledLog`].
    struct Counting {
        started: AtomicUsize,
        finished: AtomicUsize,
        delay: Duration,
        fail: AtomicBool,
    }

    impl Faults for Counting {
        fn flush(&self, flush: &dyn Fn() -> Result<(), StorageError>) -> Result<(), StorageError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            let result = if self.fail.load(Ordering::SeqCst) {
                Err(StorageError::NoSuchTopic("injected failure".into()))
            } else {
                flush()
            };
            self.finished.fetch_add(1, Ordering::SeqCst);
            result
        }
    }

    type CountingLog = HookedLog<Counting>;

    fn counting_log(dir: &TempDir, delay: Duration) -> Arc<CountingLog> {
        let opts = SledOptions {
            dedupe_window_ms: 1000,
            cache_bytes: 8 * 1024 * 1024,
        };
        let inner = SledLog::open(dir.path(), opts).expect("open");
        inner.create("t", "e1", 1).expect("create");
        Arc::new(HookedLog {
            inner,
            faults: Counting {
                started: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
                delay,
                fail: AtomicBool::new(false),
            },
        })
    }

    fn start(
        log: &Arc<CountingLog>,
        mode: FsyncMode,
        shutdown: &Shutdown,
    ) -> (Flusher, JoinHandle<()>) {
        let dyn_log: Arc<dyn TopicLog> = log.clone();
        Flusher::spawn(dyn_log, mode, Duration::from_millis(10), shutdown.clone())
    }

    type Done = mpsc::UnboundedReceiver<(usize, FlushResult)>;

    /// Issues `n` requests; each reports its index and result on the returned channel.
    fn request(flusher: &Flusher, n: usize) -> Done {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..n {
            let tx = tx.clone();
            flusher.after_flush(Box::new(move |r| {
                let _ = tx.send((i, r));
            }));
        }
        rx
    }

    async fn collect(rx: &mut Done, n: usize) -> Vec<(usize, FlushResult)> {
        let mut out = Vec::new();
        while out.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            out.push(next.expect("callback in time").expect("callback called"));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_coalesces_requests_into_few_flushes() {
        let dir = TempDir::new().unwrap();
        let log = counting_log(&dir, Duration::from_millis(5));
        let shutdown = Shutdown::new();
        let (flusher, handle) = start(&log, FsyncMode::Batch, &shutdown);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..500 {
            // A flush that started after this request must have finished before its callback.
            let started_before = log.started.load(Ordering::SeqCst);
            let (tx, log2) = (tx.clone(), Arc::clone(&log));
            flusher.after_flush(Box::new(move |r| {
                let covered = log2.finished.load(Ordering::SeqCst) > started_before;
                let _ = tx.send((i, r.map(|()| covered)));
            }));
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut done = Vec::new();
        while done.len() < 500 {
            done.push(rx.recv().await.expect("callback"));
        }
        assert!(done.iter().all(|(_, r)| matches!(r, Ok(true))), "{done:?}");
        let flushes = log.finished.load(Ordering::SeqCst);
        assert!(flushes < 50, "{flushes} flushes for 500 requests");
        shutdown.trigger();
        handle.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn always_flushes_once_per_request_in_order() {
        let dir = TempDir::new().unwrap();
        let log = counting_log(&dir, Duration::ZERO);
        let shutdown = Shutdown::new();
        let (flusher, handle) = start(&log, FsyncMode::Always, &shutdown);
        let mut rx = request(&flusher, 20);
        let done = collect(&mut rx, 20).await;
        assert_eq!(
            done.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        assert!(done.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(log.finished.load(Ordering::SeqCst), 20);
        shutdown.trigger();
        handle.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn none_calls_back_at_once_and_flushes_in_background() {
        let dir = TempDir::new().unwrap();
        let log = counting_log(&dir, Duration::ZERO);
        let shutdown = Shutdown::new();
        let (flusher, handle) = start(&log, FsyncMode::None, &shutdown);
        let called = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&called);
        flusher.after_flush(Box::new(move |r| flag.store(r.is_ok(), Ordering::SeqCst)));
        assert!(called.load(Ordering::SeqCst), "called inline");
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.finished.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "no background flushes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.trigger();
        handle.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_pending_requests() {
        let dir = TempDir::new().unwrap();
        let log = counting_log(&dir, Duration::from_millis(50));
        let shutdown = Shutdown::new();
        let (flusher, handle) = start(&log, FsyncMode::Batch, &shutdown);
        let mut first = request(&flusher, 1);
        while log.started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queued while the first flush runs, then the shutdown comes.
        let mut rest = request(&flusher, 10);
        shutdown.trigger();
        handle.await.unwrap();
        assert!(collect(&mut first, 1).await[0].1.is_ok());
        assert!(collect(&mut rest, 10).await.iter().all(|(_, r)| r.is_ok()));
        let flushes = log.finished.load(Ordering::SeqCst);
        // The first flush, then the final one (a third only if the shutdown came late).
        assert!((2..=3).contains(&flushes), "{flushes} flushes");
        let mut late = request(&flusher, 1);
        assert!(
            collect(&mut late, 1).await[0].1.is_err(),
            "no flusher: no durability"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_and_aborts_still_call_back() {
        let dir = TempDir::new().unwrap();
        let log = counting_log(&dir, Duration::from_millis(20));
        log.fail.store(true, Ordering::SeqCst);
        let shutdown = Shutdown::new();
        let (flusher, handle) = start(&log, FsyncMode::Batch, &shutdown);
        let mut failed = request(&flusher, 3);
        assert!(collect(&mut failed, 3)
            .await
            .iter()
            .all(|(_, r)| r.is_err()));
        log.fail.store(false, Ordering::SeqCst);
        let mut aborted = request(&flusher, 3);
        handle.abort();
        let _ = handle.await;
        assert!(collect(&mut aborted, 3)
            .await
            .iter()
            .all(|(_, r)| r.is_err()));
    }
}
