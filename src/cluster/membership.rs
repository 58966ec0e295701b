//! Membership: gossip (chitchat) with a phi-accrual failure detector, and the
//! ractor_cluster sessions that follow it. Produces the [`View`].
//!
//! ```text
//! Membership (one task: the loop below)
//! ├── Gossip   chitchat over UDP on gossip_addr: who exists, who is live
//! └── Links    ractor_cluster NodeServer on cluster_addr: authenticated sessions,
//!              dialed and closed as gossip says (see links.rs)
//! ```
//!
//! The loop wakes every gossip round, on every change of gossip's live set, and on every
//! session event. It reads gossip, makes the sessions follow it, and derives the view with
//! the pure [`status::derive`].

use super::announce::Announcer;
use super::faults::Faults;
use super::gossip::{Announce, Gossip};
use super::links::{LinkEvent, Links};
use super::router_group;
use super::status::{self, Join, PeerFacts};
use super::view::{Member, MemberStatus, View};
use crate::config::{Config, NodeConfig};
use crate::shutdown::Shutdown;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("cannot start gossip on {addr}: {message}")]
    Gossip { addr: SocketAddr, message: String },
    #[error("cannot start the cluster transport on {addr}: {message}")]
    Transport { addr: SocketAddr, message: String },
    #[error("node `{0}` needs gossip_addr and cluster_addr to join a cluster")]
    Unaddressed(String),
}

/// A running membership: gossip, failure detection and cluster sessions.
pub struct Membership {
    view: watch::Receiver<Arc<View>>,
    announcer: Announcer,
    run: Run,
}

enum Run {
    /// Not clustered: the view never changes. The sender is kept so that `changed()` on
    /// a receiver waits instead of failing.
    Alone { _sender: watch::Sender<Arc<View>> },
    Clustered {
        stop: Shutdown,
        task: JoinHandle<()>,
    },
}

impl Membership {
    /// Starts membership for node `me`. A config that is not clustered (one node, no
    /// seeds) gives a view of this node alone, ready at once, and opens no socket.
    ///
    /// Node shutdown does not end membership, [`Membership::stop`] does: a draining node
    /// stays reachable to its peers.
    ///
    /// With `faults` (chaos runs only), gossip and sessions with the peers it names are cut.
    pub async fn start(
        config: &Config,
        me: &NodeConfig,
        http_addr: SocketAddr,
        faults: Option<Faults>,
    ) -> Result<Membership, MembershipError> {
        if !config.clustered() {
            let member = Member {
                id: me.id.clone(),
                http_addr: Some(http_addr),
                gossip_addr: me.gossip_addr.unwrap_or(http_addr),
                cluster_addr: me.cluster_addr,
                status: MemberStatus::Up,
                facts: BTreeMap::new(),
            };
            let view = View {
                me: me.id.clone(),
                ready: true,
                members: BTreeMap::from([(me.id.clone(), member)]),
            };
            let (tx, rx) = watch::channel(Arc::new(view));
            return Ok(Membership {
                view: rx,
                announcer: Announcer::default(),
                run: Run::Alone { _sender: tx },
            });
        }
        let (Some(gossip_addr), Some(cluster_addr)) = (me.gossip_addr, me.cluster_addr) else {
            return Err(MembershipError::Unaddressed(me.id.clone()));
        };
        let c = &config.cluster;
        let interval = Duration::from_millis(c.gossip_interval_ms);
        let rpc_timeout = Duration::from_millis(c.rpc_timeout_ms);
        // The transport listens before gossip announces it.
        let (links, events) =
            Links::start(&me.id, cluster_addr, &c.cookie, rpc_timeout, faults.clone()).await?;
        let seeds: Vec<SocketAddr> = config
            .seeds()
            .into_iter()
            .filter(|s| *s != gossip_addr)
            .collect();
        let gossip = match Gossip::start(
            Announce {
                cluster: c.name.clone(),
                node_id: me.id.clone(),
                gossip_addr,
                http_addr,
                cluster_addr,
                seeds: seeds.clone(),
                interval,
                phi_threshold: c.phi_threshold,
            },
            faults,
        )
        .await
        {
            Ok(g) => g,
            Err(e) => {
                links.stop().await;
                return Err(e);
            }
        };
        tracing::info!(
            node = %me.id, gossip = %gossip_addr, cluster = %cluster_addr,
            seeds = ?seeds, "membership started"
        );
        let me = Member {
            id: me.id.clone(),
            http_addr: Some(http_addr),
            gossip_addr,
            cluster_addr: Some(cluster_addr),
            status: MemberStatus::Up,
            facts: BTreeMap::new(),
        };
        let first = status::derive(
            me.clone(),
            &[],
            &Join {
                seeds: seeds.clone(),
                elapsed: Duration::ZERO,
                timeout: Duration::from_millis(c.join_timeout_ms),
                was_ready: false,
            },
        );
        let (tx, rx) = watch::channel(Arc::new(first));
        let stop = Shutdown::new();
        let announcer = gossip.announcer();
        let driver = Driver {
            me,
            gossip,
            links,
            events,
            seeds,
            started: Instant::now(),
            join_timeout: Duration::from_millis(c.join_timeout_ms),
            interval,
            tx,
        };
        let task = tokio::spawn(driver.run(stop.clone()));
        Ok(Membership {
            view: rx,
            announcer,
            run: Run::Clustered { stop, task },
        })
    }

    /// The current view, updated on every change.
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Sets facts about this node that its peers see in their views.
    pub fn announcer(&self) -> Announcer {
        self.announcer.clone()
    }

    /// Leaves the cluster: closes every session, stops the transport and gossip.
    pub async fn stop(self) {
        if let Run::Clustered { stop, task } = self.run {
            stop.trigger();
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "membership task failed");
            }
        }
    }
}

/// The membership loop's state.
struct Driver {
    me: Member,
    gossip: Gossip,
    links: Links,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    seeds: Vec<SocketAddr>,
    started: Instant,
    join_timeout: Duration,
    interval: Duration,
    tx: watch::Sender<Arc<View>>,
}

impl Driver {
    async fn run(mut self, stop: Shutdown) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = self.gossip.live_watcher().await;
        loop {
            tokio::select! {
                _ = stop.wait() => break,
                _ = tick.tick() => {}
                Ok(()) = live.changed() => {}
                Some(event) = self.events.recv() => {
                    self.links.on_event(event, Instant::now());
                    while let Ok(event) = self.events.try_recv() {
                        self.links.on_event(event, Instant::now());
                    }
                }
            }
            self.update().await;
        }
        self.links.stop().await;
        self.gossip.stop().await;
        tracing::info!(node = %self.me.id, "membership stopped");
    }

    /// Reads gossip, makes the sessions follow it, and publishes the view if it changed.
    async fn update(&mut self) {
        let now = Instant::now();
        let peers = self.gossip.peers(now).await;
        self.links.reconcile(&peers, now);
        // Until this node's router exists there is no router to look for on peers either.
        let check_routers = !ractor::pg::get_local_members(&router_group(&self.me.id)).is_empty();
        let facts: Vec<PeerFacts> = peers
            .into_iter()
            .map(|gossip| PeerFacts {
                link: self.links.state(&gossip.id),
                router: !check_routers || remote_router(&gossip.id),
                gossip,
            })
            .collect();
        let before = self.tx.borrow().clone();
        let view = status::derive(
            self.me.clone(),
            &facts,
            &Join {
                seeds: self.seeds.clone(),
                elapsed: now.duration_since(self.started),
                timeout: self.join_timeout,
                was_ready: before.ready,
            },
        );
        if view != *before {
            log_changes(&before, &view);
            self.tx.send_replace(Arc::new(view));
        }
    }
}

/// Whether peer `id`'s router is reachable here (a remote member of its group).
fn remote_router(id: &str) -> bool {
    ractor::pg::get_members(&router_group(id))
        .iter()
        .any(|a| !a.get_id().is_local())
}

fn log_changes(before: &View, after: &View) {
    for m in after.members.values().filter(|m| m.id != after.me) {
        let addr = m.gossip_addr;
        let Some(was) = before.members.get(&m.id).map(|b| b.status) else {
            tracing::info!(peer = %m.id, addr = %addr, status = ?m.status, "member discovered");
            continue;
        };
        if was == m.status {
            continue;
        }
        match m.status {
            MemberStatus::Up => tracing::info!(peer = %m.id, addr = %addr, "member up"),
            MemberStatus::Joining => tracing::info!(peer = %m.id, addr = %addr, "member joining"),
            MemberStatus::Down => tracing::warn!(peer = %m.id, addr = %addr, "member down"),
            MemberStatus::Refused => {
                tracing::warn!(peer = %m.id, addr = %addr, "member refused: not admitted")
            }
        }
    }
    for id in before
        .members
        .keys()
        .filter(|id| !after.members.contains_key(*id))
    {
        tracing::info!(peer = %id, "member forgotten");
    }
    if after.ready && !before.ready {
        let up: Vec<&str> = after.up().collect();
        tracing::info!(members = ?up, "joined the cluster");
    }
}
