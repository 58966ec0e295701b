//! The accept loop and one task per connection: hyper's HTTP/1 server with the limits a
//! public server needs (warp's own `serve` sets none of them).
//!
//! - A request head must arrive within `header_read_timeout_ms`, which also ends a
//!   kept-alive connection that stays silent that long (hyper starts the timer when it
//!   waits for a head).
//! - At most `max_pending_connections` connections may be waiting for their first request
//!   head; past that the oldest of them is dropped, so a flood of silent sockets cannot
//!   keep real clients out.
//! - At most `max_connections` are open; more are answered 503 `unavailable` and closed.
//! - Writes that make no progress for `write_timeout_ms` drop the connection (`ConnIo`).
//! - A handler can drop its connection at once with the [`ConnHandle`] in the request's
//!   extensions (a slow SSE consumer).

use super::conn_io::ConnIo;
use crate::config::HttpConfig;
use crate::shutdown::Shutdown;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use warp::Filter;

/// Lets a handler drop its connection at once (with a reset).
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    kill: CancellationToken,
}

/// The address a request's connection comes from (in the request's extensions: this
/// server accepts connections itself, so warp's own `addr::remote` knows none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub std::net::SocketAddr);

impl ConnHandle {
    /// Drops the connection now; what it had not sent yet is discarded.
    pub(crate) fn kill(&self) {
        self.kill.cancel();
    }
}

/// What the server serves: every route, answering every request.
pub(crate) trait Routes:
    Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<F> Routes for F where
    F: Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Counts one open connection for as long as its socket lives.
pub(crate) struct OpenGuard(Arc<Counts>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("starling_http_connections").decrement(1.0);
    }
}

#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    /// Connections still waiting for their first request head, oldest first.
    pending: Mutex<BTreeMap<u64, CancellationToken>>,
    next_id: AtomicU64,
}

impl Counts {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the oldest connection that has not sent a request head; false if none.
    fn evict_oldest_pending(&self) -> bool {
        match self.lock_pending().pop_first() {
            Some((_, kill)) => {
                kill.cancel();
                true
            }
            None => false,
        }
    }
}

/// Descriptors kept for what is not a client connection: storage, cluster links, gossip.
const RESERVED_FDS: u64 = 128;
/// Connections answered 503 at the same time; past this a refused one is just closed.
const MAX_REFUSING: usize = 64;

/// `[http] max_connections` and `max_pending_connections`, lowered to what the process's
/// open-file limit allows (else accept would fail with EMFILE before the limit is reached
/// and nobody would get the 503).
fn effective_limits(cfg: &HttpConfig) -> (usize, usize) {
    let mut max = cfg.max_connections;
    if let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        let room = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(soft / 2)).unwrap_or(max);
        if room < max {
            tracing::warn!(
                max_connections = max,
                open_file_limit = soft,
                using = room,
                "[http] max_connections is above what the open-file limit allows; raise `ulimit -n` or lower the setting"
            );
            max = room.max(1);
        }
    }
    (max, cfg.max_pending_connections.min(max))
}

/// Serves `routes` on `listener` until `shutdown`; then lets open connections finish for
/// up to `drain` and drops the rest.
pub(crate) async fn serve<F: Routes>(
    listener: TcpListener,
    routes: F,
    cfg: HttpConfig,
    shutdown: Shutdown,
    drain: Duration,
) {
    let (max_connections, max_pending) = effective_limits(&cfg);
    let timeouts = Timeouts {
        header: Duration::from_millis(cfg.header_read_timeout_ms),
        write: Duration::from_millis(cfg.write_timeout_ms),
    };
    let counts = Arc::new(Counts::default());
    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut accept_errors = LogEvery::new(Duration::from_secs(5));
    let mut refusals = LogEvery::new(Duration::from_secs(5));
    let mut evictions = LogEvery::new(Duration::from_secs(5));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => break,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (EMFILE) and the like: say so, free a descriptor held by
                // a connection that has not sent anything useful yet, and give the node a
                // moment instead of spinning on accept.
                metrics::counter!("starling_http_accept_errors_total").increment(1);
                if let Some(n) = accept_errors.tick() {
                    tracing::warn!(error = %e, errors = n, "cannot accept connections");
                }
                if counts.evict_oldest_pending() {
                    log_eviction(&mut evictions);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if counts.open.load(Ordering::Relaxed) >= max_connections {
            // A connection still without a request head makes room for this one; else 503.
            if counts.evict_oldest_pending() {
                log_eviction(&mut evictions);
            } else {
                metrics::counter!("starling_http_refused_total", "reason" => "max_connections")
                    .increment(1);
                if let Some(n) = refusals.tick() {
                    tracing::warn!(
                        refused = n,
                        max_connections,
                        "connections refused: the node is at [http] max_connections"
                    );
                }
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
                continue;
            }
        }
        counts.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("starling_http_connections").increment(1.0);
        let open = OpenGuard(counts.clone());
        let kill = CancellationToken::new();
        let id = counts.next_id.fetch_add(1, Ordering::Relaxed);
        while counts.lock_pending().len() >= max_pending {
            if !counts.evict_oldest_pending() {
                break;
            }
            log_eviction(&mut evictions);
        }
        counts.lock_pending().insert(id, kill.clone());
        let conn = Conn {
            id,
            counts: counts.clone(),
            kill,
            timeouts,
            peer: Peer(remote),
        };
        let span = tracing::debug_span!("conn", id, %remote);
        let run = conn.run(
            stream,
            open,
            routes.clone(),
            shutdown.clone(),
            force.clone(),
        );
        tracker.spawn(tracing::Instrument::instrument(run, span));
    }
    // Refuse new connections at once during the drain, so clients fail over.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
        force.cancel();
        tracker.wait().await;
    }
}

fn log_eviction(log: &mut LogEvery) {
    metrics::counter!("starling_http_refused_total", "reason" => "pending_evicted").increment(1);
    if let Some(n) = log.tick() {
        tracing::warn!(
            evicted = n,
            "dropped connections that sent no request head, to make room for new ones (a flood of slow or silent clients?)"
        );
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    write: Duration,
}

struct Conn {
    id: u64,
    counts: Arc<Counts>,
    kill: CancellationToken,
    timeouts: Timeouts,
    peer: Peer,
}

impl Conn {
    async fn run<F: Routes>(
        self,
        stream: TcpStream,
        open: OpenGuard,
        routes: F,
        shutdown: Shutdown,
        force: CancellationToken,
    ) {
        let io = ConnIo::new(stream, self.timeouts.write, self.kill.clone(), open);
        let handle = ConnHandle {
            kill: self.kill.clone(),
        };
        let counts = self.counts.clone();
        let (id, peer) = (self.id, self.peer);
        let pending = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let svc = warp::service(routes);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // The first head is in: this connection no longer counts as pending (later
            // requests on it skip the lock).
            if pending.swap(false, Ordering::Relaxed) {
                counts.lock_pending().remove(&id);
            }
            req.extensions_mut().insert(handle.clone());
            req.extensions_mut().insert(peer);
            let mut svc = svc.clone();
            svc.call(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.kill.cancelled() => Ok(()),
            _ = shutdown.wait() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = self.kill.cancelled() => Ok(()),
                    _ = force.cancelled() => Ok(()),
                }
            }
        };
        self.counts.lock_pending().remove(&self.id);
        if let Err(e) = result {
            if e.is_timeout() {
                metrics::counter!("starling_http_timeouts_total", "kind" => "header").increment(1);
            }
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Answers a connection past `max_connections` with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let error = crate::protocol::ApiError::unavailable(
        "the node has as many connections as it allows; retry later or use another node",
    );
    let reply = super::conn_io::raw_error_reply(
        b"HTTP/1.1 503 Service Unavailable\r\n",
        "retry-after: 1\r\n",
        &error,
    );
    let close = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, so the reply is not lost to a reset.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

/// Rate limit for a warning that may repeat thousands of times a second.
struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl LogEvery {
    fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: None,
            count: 0,
        }
    }

    /// Counts one event; returns how many happened since the last log when it is time.
    fn tick(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}
