//! [`Topics`]: what sessions and HTTP handlers use to reach topics, wherever they are owned.
//! A publish goes to the owner (this node's topic actor, or another node's over the
//! cluster); while a topic is changing hands it is retried for a bounded time.

use super::handle::TopicHandle;
use super::history::{unexpected, History};
use super::supervisor::{SupervisorMsg, TopicRegistry, TopicSupervisor};
use super::{PublishAck, TopicInfo};
use crate::cluster::client::Cluster;
use crate::cluster::port::CallError;
use crate::cluster::wire::{Call, Reply};
use crate::protocol::TopicName;
use crate::replication::Replication;
use crate::storage::TopicLog;
use crate::topic::error::TopicError;
use bytes::Bytes;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// How long a publish keeps trying while its topic changes hands (an election fits well
/// within it).
pub(crate) const ROUTE_PATIENCE: Duration = Duration::from_secs(8);

/// The pauses between attempts at a topic that is changing hands, for up to
/// [`ROUTE_PATIENCE`]: 20 ms doubling to 400 ms, cut short when ownership changes (a new
/// shard leader is tried at once, not at the next step of the backoff).
/// The watch on ownership is only taken at the first wait: most attempts succeed at once.
struct Retry<'a> {
    cluster: &'a Cluster,
    deadline: tokio::time::Instant,
    pause: Duration,
    /// Taken at the first wait (`None` inside: ownership never changes).
    changes: Option<Option<tokio::sync::watch::Receiver<u64>>>,
}

impl<'a> Retry<'a> {
    fn new(cluster: &'a Cluster) -> Retry<'a> {
        Retry {
            cluster,
            deadline: tokio::time::Instant::now() + ROUTE_PATIENCE,
            pause: Duration::from_millis(20),
            changes: None,
        }
    }

    /// Waits until the next attempt is due; false (at once) if it would be past the deadline.
    async fn wait(&mut self) -> bool {
        if tokio::time::Instant::now() + self.pause >= self.deadline {
            return false;
        }
        let cluster = self.cluster;
        let changes = self.changes.get_or_insert_with(|| {
            let mut rx = cluster.owner_changes();
            if let Some(rx) = &mut rx {
                rx.borrow_and_update();
            }
            rx
        });
        let sleep = tokio::time::sleep(self.pause);
        match changes {
            Some(rx) => {
                tokio::select! {
                    _ = sleep => {}
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // Ownership no longer changes: plain pauses from now on.
                            *changes = None;
                        }
                    }
                }
            }
            None => sleep.await,
        }
        self.pause = (self.pause * 2).min(Duration::from_millis(400));
        true
    }
}

#[derive(Clone)]
pub struct Topics {
    pub(super) supervisor: ActorRef<SupervisorMsg>,
    pub(super) registry: TopicRegistry,
    pub(super) log: Arc<dyn TopicLog>,
    pub(super) cluster: Cluster,
    /// Serves the Raft messages peers send this node's replicas.
    pub(super) replication: Replication,
}

impl Topics {
    pub fn new(
        supervisor: ActorRef<SupervisorMsg>,
        registry: TopicRegistry,
        log: Arc<dyn TopicLog>,
        cluster: Cluster,
        replication: Replication,
    ) -> Topics {
        Topics {
            supervisor,
            registry,
            log,
            cluster,
            replication,
        }
    }

    /// The running actor of `topic`, started if needed. While no owner is known (an
    /// election), retried up to [`ROUTE_PATIENCE`].
    pub async fn handle(&self, topic: &TopicName) -> Result<TopicHandle, TopicError> {
        let mut retry = Retry::new(&self.cluster);
        loop {
            match TopicSupervisor::handle(&self.supervisor, &self.registry, topic).await {
                Err(TopicError::Moving) if retry.wait().await => {}
                other => return other,
            }
        }
    }

    /// Publishes at the topic's owner and waits until the message is durable as configured
    /// there. Retried while the topic is changing hands, up to [`ROUTE_PATIENCE`].
    pub async fn publish(
        &self,
        topic: &TopicName,
        data: Bytes,
        id: Option<String>,
    ) -> Result<PublishAck, TopicError> {
        // A publish without an id gets one here, before the first attempt: an attempt that
        // meets a leadership change may still commit, and the retry must not store it twice.
        // (Its publisher never repeated it: the reply never says `duplicate` then.)
        let generated = id.is_none();
        let id = Some(id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()));
        let mut retry = Retry::new(&self.cluster);
        loop {
            let r = match self.cluster.owner(topic.as_str()) {
                None => Err(TopicError::Moving),
                Some(owner) if owner == self.cluster.me() => {
                    self.publish_here(topic, data.clone(), id.clone()).await
                }
                Some(owner) => self.publish_at(&owner, topic, &data, &id).await,
            };
            match r {
                Err(TopicError::Moving) if retry.wait().await => {}
                other => {
                    return other.map(|ack| PublishAck {
                        duplicate: ack.duplicate && !generated,
                        ..ack
                    })
                }
            }
        }
    }

    async fn publish_at(
        &self,
        owner: &str,
        topic: &TopicName,
        data: &Bytes,
        id: &Option<String>,
    ) -> Result<PublishAck, TopicError> {
        let call = Call::Publish {
            topic: topic.as_str().to_string(),
            data: data.to_vec(),
            id: id.clone(),
        };
        match self.cluster.call(owner, &call).await {
            Ok(Reply::Published {
                offset,
                epoch,
                id,
                duplicate,
            }) => Ok(PublishAck {
                offset,
                epoch: Arc::from(epoch.as_str()),
                id,
                duplicate,
            }),
            Ok(Reply::Error { retry: true, .. }) | Err(CallError::NoRoute(_)) => {
                Err(TopicError::Moving)
            }
            Ok(other) => Err(unexpected(owner, other)),
            Err(e) => {
                tracing::warn!(topic = %topic, owner, error = %e, "forwarded publish failed");
                Err(TopicError::unavailable(
                    "the topic's owner did not answer; the outcome is unknown (retry with the same id)",
                ))
            }
        }
    }

    /// Publishes on this node, which owns the topic. Refused at once when this node leads
    /// the topic's shard but cannot reach a majority of its voters: it could never commit.
    pub(super) async fn publish_here(
        &self,
        topic: &TopicName,
        data: Bytes,
        id: Option<String>,
    ) -> Result<PublishAck, TopicError> {
        if self
            .replication
            .quorum_lost(self.replication.shard_of(topic.as_str()))
        {
            return Err(TopicError::unavailable(
                "this node cannot reach a majority of the topic's replicas; retry at another node",
            ));
        }
        for _ in 0..2 {
            let h = self.handle(topic).await?;
            match h.publish(data.clone(), id.clone()).await {
                Some(r) => return r,
                // The actor stopped between lookup and send: nothing was appended.
                None => tokio::task::yield_now().await,
            }
        }
        Err(TopicError::Moving)
    }

    /// The topic's info (from its owner), or `None` if it never existed.
    pub async fn info(&self, topic: &TopicName) -> Result<Option<TopicInfo>, TopicError> {
        let owner = match self.cluster.owner(topic.as_str()) {
            Some(owner) if owner != self.cluster.me() => owner,
            _ => return self.info_here(topic).await,
        };
        let call = Call::Info {
            topic: topic.as_str().to_string(),
        };
        match self.cluster.call(&owner, &call).await {
            Ok(Reply::Info { meta, subscribers }) => {
                Ok(meta.filter(|m| m.exists).map(|m| TopicInfo {
                    epoch: Arc::from(m.epoch.as_str()),
                    first: m.first,
                    head: m.head,
                    subscribers: usize::try_from(subscribers).unwrap_or(usize::MAX),
                    exists: true,
                    history: History::Remote {
                        cluster: self.cluster.clone(),
                        owner: owner.clone(),
                    },
                    owner,
                }))
            }
            Ok(other) => Err(unexpected(&owner, other)),
            Err(_) => Err(TopicError::unavailable("the topic's owner is unreachable")),
        }
    }

    /// The info of this node's copy, or `None` if it never existed. A node alone starts no
    /// actor for unknown topics.
    pub(super) async fn info_here(
        &self,
        topic: &TopicName,
    ) -> Result<Option<TopicInfo>, TopicError> {
        if let Some(h) = self.registry.get(topic) {
            if let Ok(info) = h.info().await {
                return Ok(info.exists.then_some(info));
            }
        }
        match self.log.meta(topic.as_str()) {
            // Alone, the log is the whole truth. In a cluster this node's copy may lag
            // until it leads the shard: only the actor (which waits for that) knows.
            Ok(None) if self.cluster.peers().is_empty() => Ok(None),
            Ok(_) => {
                let info = self.handle(topic).await?.info().await?;
                Ok(info.exists.then_some(info))
            }
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, "reading topic meta failed");
                Err(TopicError::Internal)
            }
        }
    }

    /// Whether every shard this node holds knows its leader (part of readiness).
    pub fn leaders_known(&self) -> bool {
        let up = self.cluster.peers();
        self.replication
            .leaders_known(|node| up.iter().any(|p| p == node))
    }

    /// Recovers `shard` from this node's copy, as an operator asked (see
    /// [`crate::replication::Replication::recover`]).
    pub async fn recover_shard(
        &self,
        shard: u32,
        force: bool,
    ) -> Result<crate::replication::Recovered, crate::replication::RecoverError> {
        let up = self.cluster.peers();
        self.replication.recover(shard, up, force).await
    }

    /// This node's replica of every shard (`GET /v1/cluster`).
    pub fn shards(&self) -> Vec<crate::replication::ShardReport> {
        self.replication.report()
    }

    /// Number of topic actors running.
    pub fn active(&self) -> usize {
        self.registry.len()
    }
}
