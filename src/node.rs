//! A node: opens storage, starts the flusher and the supervision tree, serves HTTP, and
//! drains on shutdown.
//!
//! Supervision tree (see docs/ARCHITECTURE.md):
//! ```text
//! node (this module; owns the order of start and stop)
//! ├── flusher task          group commit, the only caller of TopicLog::flush
//! ├── Replication           one Raft group per shard this node holds (openraft tasks)
//! ├── TopicSupervisor       restarts a failed TopicActor from its log
//! │   └── TopicActor × topics in use
//! ├── SessionSupervisor     logs and counts failed sessions; never restarts them
//! │   └── SessionActor × connections (WebSocket, SSE stream, long poll)
//! ├── maintenance task      proposes the expiry of old publish ids in the shards it leads
//! └── HTTP server (warp)    transports: WS, SSE, polling, publish, info
//! ```

use crate::cluster::client::Cluster;
use crate::cluster::faults::Faults;
use crate::cluster::membership::Membership;
use crate::cluster::router::{NodeRouter, RactorTransport, RouterArgs};
use crate::config::{Config, FsyncMode};
use crate::http::{routes, serve, AppState};
use crate::metrics_setup::install_metrics;
use crate::replication::cluster_net::ClusterRaftNet;
use crate::replication::owners::ShardOwners;
use crate::replication::{Op, Replication, ReplicationSettings};
use crate::session::supervisor::{SessionSupervisor, Sessions};
use crate::shutdown::Shutdown;
use crate::storage::flusher::Flusher;
use crate::storage::{RetentionPolicy, SledLog, SledOptions, StorageError, TopicLog};
use crate::topic::actor::TopicContext;
use crate::topic::restart::RestartPolicy;
use crate::topic::service::Topics;
use crate::topic::supervisor::{follow_membership, TopicRegistry, TopicSupervisor};
use ractor::Actor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// How long open HTTP connections may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("replication: {0}")]
    Replication(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("cannot start actor system: {0}")]
    Actors(String),
}

/// A running node.
pub struct Node {
    http_addr: SocketAddr,
    task: JoinHandle<Result<(), NodeError>>,
}

impl Node {
    /// Starts node `id` of `config`; it runs until `shutdown` is triggered.
    pub async fn start(config: Config, id: &str, shutdown: Shutdown) -> Result<Node, NodeError> {
        let node_cfg = config.node(id)?.clone();
        let dir = config.node_data_dir(id);
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        // Key files are read before anything else starts: a bad one stops the node here.
        let auth = Arc::new(crate::auth::Auth::from_config(&config.auth)?);
        let opts = SledOptions {
            dedupe_window_ms: config.storage.dedupe_window_ms,
            cache_bytes: config.storage.cache_bytes,
        };
        let fsync = config.storage.fsync;
        let alone = config.nodes.len() == 1 || config.replication.factor == 1;
        let (log, raft_store) = tokio::task::spawn_blocking(move || {
            let log = SledLog::open(&dir, opts)?;
            recover(&log, fsync, alone)?;
            let raft_store = crate::replication::raft_store(&log)?;
            Ok::<_, StorageError>((Arc::new(log), raft_store))
        })
        .await
        .map_err(|e| NodeError::Actors(format!("storage open task failed: {e}")))??;
        let log: Arc<dyn TopicLog> = log;
        let metrics = install_metrics();
        let listener = listen(node_cfg.http_addr).map_err(|source| NodeError::Bind {
            addr: node_cfg.http_addr,
            source,
        })?;
        let http_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: node_cfg.http_addr,
            source,
        })?;
        let faults = config.chaos.fault_injection.then(|| {
            tracing::warn!(
                node = id,
                "fault injection is on ([chaos] fault_injection): anyone who can reach the HTTP port can cut this node off from its peers"
            );
            Faults::new(&config, id)
        });
        let membership = Membership::start(&config, &node_cfg, http_addr, faults.clone())
            .await
            .map_err(|e| NodeError::Cluster(e.to_string()))?;

        let cluster = Cluster::new(
            membership.view(),
            Arc::new(RactorTransport),
            Duration::from_millis(config.cluster.rpc_timeout_ms),
        );
        let storage_stop = Shutdown::new();
        let (flusher, flusher_task) = Flusher::spawn(
            log.clone(),
            config.storage.fsync,
            Duration::from_millis(config.storage.flush_interval_ms),
            storage_stop.clone(),
        );
        let settings = ReplicationSettings {
            me: id.to_string(),
            nodes: config.nodes.iter().map(|n| n.id.clone()).collect(),
            shards: config.replication.shards,
            factor: config.replication.factor,
            heartbeat_ms: config.replication.heartbeat_ms,
            election_min_ms: config.replication.election_min_ms,
            election_max_ms: config.replication.election_max_ms,
        };
        let net = Arc::new(ClusterRaftNet {
            cluster: cluster.clone(),
            announcer: membership.announcer(),
        });
        // An empty data directory may wait here for its peers (see `identity`).
        let started = Replication::start(settings, log.clone(), raft_store, flusher, net);
        let replication = tokio::select! {
            started = started => started.map_err(|e| NodeError::Replication(e.to_string()))?,
            () = shutdown.wait() => {
                membership.stop().await;
                storage_stop.trigger();
                let _ = flusher_task.await;
                return Err(NodeError::Replication("shut down while starting".into()));
            }
        };
        cluster.set_owners(ShardOwners::new(replication.clone()));
        let ctx = TopicContext {
            idle: Duration::from_secs(config.limits.topic_idle_secs),
            log: log.clone(),
            replication: replication.clone(),
            retention: RetentionPolicy {
                max_messages: config.retention.max_messages,
                max_age_ms: config.retention.max_age_secs.saturating_mul(1000),
            },
            consumers: config.consumers.clone(),
            topics: Arc::new(std::sync::OnceLock::new()),
            cluster: cluster.clone(),
        };
        let dlq_topics = ctx.topics.clone();
        let registry = TopicRegistry::default();
        let (topic_sup, topic_sup_task) = Actor::spawn(
            None,
            TopicSupervisor,
            (ctx, registry.clone(), RestartPolicy::NODE),
        )
        .await
        .map_err(|e| NodeError::Actors(e.to_string()))?;
        let (session_sup, session_sup_task) = Actor::spawn(None, SessionSupervisor, ())
            .await
            .map_err(|e| NodeError::Actors(e.to_string()))?;
        let topics = Topics::new(
            topic_sup.clone(),
            registry,
            log.clone(),
            cluster.clone(),
            replication.clone(),
        );
        let _ = dlq_topics.set(topics.clone());
        let rebalancer = follow_membership(topic_sup.clone(), &cluster, shutdown.clone());
        let router_args = RouterArgs {
            me: id.to_string(),
            inbound: Arc::new(topics.clone()),
        };
        let (router, router_task) = Actor::spawn(None, NodeRouter, router_args)
            .await
            .map_err(|e| NodeError::Actors(e.to_string()))?;
        let sessions = Sessions::new(
            session_sup.clone(),
            topics.clone(),
            config.limits.clone(),
            shutdown.clone(),
        );

        let connections = TaskTracker::new();
        let state = AppState {
            node_id: Arc::from(id),
            config: Arc::new(config.clone()),
            topics,
            sessions,
            metrics,
            connections: connections.clone(),
            view: membership.view(),
            faults,
            origins: crate::http::OriginPolicy::new(&config.http.allowed_origins, http_addr),
            auth,
        };
        let server = serve(
            listener,
            routes(state),
            config.http.clone(),
            shutdown.clone(),
            DRAIN_TIMEOUT,
        );
        let maintenance = tokio::spawn(expire_ids(
            replication.clone(),
            config.storage.dedupe_window_ms,
            shutdown.clone(),
        ));
        tracing::info!(node = id, http = %http_addr, fsync = ?config.storage.fsync, "node started");

        let node_id = id.to_string();
        let task = tokio::spawn(async move {
            // Connections get a bounded time to finish after shutdown starts.
            server.await;
            // Upgraded WebSockets are not the server's any more: wait for them to close.
            connections.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
            session_sup
                .stop_children_and_wait(None, Some(Duration::from_secs(5)))
                .await;
            session_sup.stop(None);
            let _ = session_sup_task.await;
            // Leadership of every shard this node leads moves to another voter before the
            // topic actors stop, so publishes elsewhere go on with hardly a pause.
            replication.stop().await;
            topic_sup
                .stop_children_and_wait(None, Some(Duration::from_secs(5)))
                .await;
            topic_sup.stop(None);
            let _ = topic_sup_task.await;
            rebalancer.abort();
            router.stop(None);
            let _ = router_task.await;
            membership.stop().await;
            maintenance.abort();
            storage_stop.trigger();
            let _ = flusher_task.await;
            tokio::task::spawn_blocking(move || {
                log.flush()?;
                log.mark_clean()
            })
            .await
            .map_err(|e| NodeError::Actors(format!("final flush task failed: {e}")))??;
            tracing::info!(node = %node_id, "node stopped; storage flushed");
            Ok(())
        });
        Ok(Node { http_addr, task })
    }

    /// Where the node serves HTTP.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Waits until the node has drained and stopped.
    pub async fn wait(self) -> Result<(), NodeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Actors(format!("node task failed: {e}"))),
        }
    }
}

/// Binds the HTTP listener. Accepted sockets inherit TCP_NODELAY from it on Linux: small
/// real-time frames must not wait for Nagle's algorithm.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// After an unclean stop with `fsync = "none"`, acknowledged messages may be gone. Where
/// this node is its shards' only voter (`alone`), their offsets could be handed out again:
/// give every topic a new epoch so clients are told. With replicas, the others hold what
/// this node lost, and Raft brings it back.
fn recover(log: &dyn TopicLog, fsync: FsyncMode, alone: bool) -> Result<(), StorageError> {
    let was_clean = log.mark_running()?;
    if was_clean || fsync != FsyncMode::None || !alone {
        return Ok(());
    }
    let topics = log.topics()?;
    tracing::warn!(
        topics = topics.len(),
        "unclean stop with fsync=\"none\": starting a new epoch for every topic"
    );
    for topic in topics {
        log.set_epoch(
            &topic,
            &crate::protocol::resume::new_epoch(),
            crate::topic::now_ms(),
        )?;
    }
    log.flush()
}

/// Every dedupe window, each shard this node leads drops the publish ids older than the
/// window, at the leader's time, on every replica alike.
async fn expire_ids(replication: Replication, window_ms: u64, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(window_ms.max(1000)));
    let me = replication.me().to_string();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for shard in 0..replication.shards() {
                    if replication.leader(shard).as_deref() != Some(me.as_str()) {
                        continue;
                    }
                    let op = Op::ExpireIds { now_ms: crate::topic::now_ms() };
                    if let Err(e) = replication.propose(shard, vec![op]).await {
                        tracing::info!(shard, error = %e, "expiring publish ids not committed");
                    }
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}
