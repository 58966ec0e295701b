//! Gossip: a chitchat instance (scuttlebutt gossip over UDP with a phi-accrual failure
//! detector) and the reading of its state into one [`GossipPeer`] per node id.

use super::announce::Announcer;
use super::faults::{Faults, FaultyTransport};
use super::membership::MembershipError;
use super::status::{GossipPeer, Liveness};
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Key under which a node publishes the HTTP address it actually bound.
const HTTP_ADDR_KEY: &str = "http_addr";
/// Key under which a node publishes its cluster transport address.
const CLUSTER_ADDR_KEY: &str = "cluster_addr";
/// Prefix of the keys of the facts an upper layer announces ([`Announcer`]).
pub(super) const FACT_PREFIX: &str = "fact:";

/// How long a dead node stays listed (as `Down`) before chitchat forgets it.
const DEAD_NODE_GRACE: Duration = Duration::from_secs(30 * 60);
/// How long deleted keys are kept (no key is deleted today; chitchat wants a value).
const KEY_DELETION_GRACE: Duration = Duration::from_secs(60 * 60);
/// Heartbeat intervals the failure detector averages. chitchat adds its prior
/// (`initial_interval`, weighted as 5 samples) to the mean; with a short window the prior
/// keeps weight. A peer's heartbeat reaches this node once per digest, far more often than
/// once a round, and more often the more peers gossip. Without the prior, detection would
/// shrink to a few hundred ms in a busy cluster, and a pause on a loaded host would flap
/// members. With it, detection stays near `phi_threshold` × 1-2 rounds plus a round,
/// about 1-1.3 s with the defaults.
const SAMPLING_WINDOW: usize = 10;
/// The prior mean heartbeat interval, in gossip rounds.
const PRIOR_ROUNDS: u32 = 3;
/// Gossip rounds during which a node that is not live, but whose heartbeat just moved,
/// counts as `Pending` (starting or coming back) rather than `Dead`.
const PENDING_ROUNDS: u32 = 5;
/// Intervals longer than this many gossip rounds are outliers (a pause that the detector
/// already judged), not samples: a node back from a pause must not drag the mean up.
const MAX_INTERVAL_ROUNDS: u32 = 10;

/// What this node announces about itself.
pub struct Announce {
    pub cluster: String,
    pub node_id: String,
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub interval: Duration,
    pub phi_threshold: f64,
}

/// A running gossip instance.
pub struct Gossip {
    handle: ChitchatHandle,
    me: ChitchatId,
    sightings: Sightings,
}

impl Gossip {
    /// Binds the gossip socket and starts gossiping. The generation is the start time, so a
    /// restarted node is a new generation. With `faults`, the socket drops the gossip of
    /// the peers it names.
    pub async fn start(a: Announce, faults: Option<Faults>) -> Result<Gossip, MembershipError> {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let me = ChitchatId::new(a.node_id.as_str(), generation, a.gossip_addr);
        let config = ChitchatConfig {
            chitchat_id: me.clone(),
            cluster_id: a.cluster,
            gossip_interval: a.interval,
            listen_addr: a.gossip_addr,
            seed_nodes: a
                .seeds
                .iter()
                .filter(|s| **s != a.gossip_addr)
                .map(|s| s.to_string())
                .collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: a.phi_threshold,
                sampling_window_size: SAMPLING_WINDOW,
                max_interval: a.interval * MAX_INTERVAL_ROUNDS,
                initial_interval: a.interval * PRIOR_ROUNDS,
                dead_node_grace_period: DEAD_NODE_GRACE,
            },
            marked_for_deletion_grace_period: KEY_DELETION_GRACE,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let keys = vec![
            (HTTP_ADDR_KEY.to_string(), a.http_addr.to_string()),
            (CLUSTER_ADDR_KEY.to_string(), a.cluster_addr.to_string()),
        ];
        let spawned = match faults {
            Some(faults) => {
                let transport = FaultyTransport::new(UdpTransport, faults);
                chitchat::spawn_chitchat(config, keys, &transport).await
            }
            None => chitchat::spawn_chitchat(config, keys, &UdpTransport).await,
        };
        let handle = spawned.map_err(|e| MembershipError::Gossip {
            addr: a.gossip_addr,
            message: format!("{e:#}"),
        })?;
        Ok(Gossip {
            handle,
            me,
            sightings: Sightings::new(a.interval * PENDING_ROUNDS),
        })
    }

    /// Sets this node's facts.
    pub fn announcer(&self) -> Announcer {
        Announcer::gossip(self.handle.chitchat())
    }

    /// Changes whenever the set of live nodes changes.
    pub async fn live_watcher(&self) -> watch::Receiver<BTreeMap<ChitchatId, NodeState>> {
        self.handle.chitchat().lock().await.live_nodes_watcher()
    }

    /// Every other node gossip knows, by id, each as its newest generation.
    pub async fn peers(&mut self, now: Instant) -> Vec<GossipPeer> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let live: Vec<&ChitchatId> = chitchat.live_nodes().collect();
        let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
        for id in chitchat.node_states().keys() {
            if *id.node_id == *self.me.node_id {
                continue;
            }
            let entry = newest.entry(&id.node_id).or_insert(id);
            if id.generation_id > entry.generation_id {
                *entry = id;
            }
        }
        self.sightings
            .retain(|id| newest.get(&*id.node_id) == Some(&id));
        newest
            .into_values()
            .filter_map(|id| {
                let state = chitchat.node_state(id)?;
                let heartbeat = u64::from(state.heartbeat());
                let liveness = self
                    .sightings
                    .observe(id, heartbeat, live.contains(&id), now);
                Some(GossipPeer {
                    id: id.node_id.to_string(),
                    generation: id.generation_id,
                    liveness,
                    gossip_addr: id.gossip_advertise_addr,
                    http_addr: state.get(HTTP_ADDR_KEY).and_then(|v| v.parse().ok()),
                    cluster_addr: state.get(CLUSTER_ADDR_KEY).and_then(|v| v.parse().ok()),
                    facts: state
                        .key_values()
                        .filter_map(|(k, v)| {
                            let key = k.strip_prefix(FACT_PREFIX)?;
                            Some((key.to_string(), v.to_string()))
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Stops gossiping and closes the socket.
    pub async fn stop(self) {
        if let Err(e) = self.handle.shutdown().await {
            tracing::debug!(error = %e, "gossip ended with an error");
        }
    }
}

/// What this node saw of each node's heartbeat: enough to tell a node that is starting or
/// coming back (heartbeat moving, not live yet) from one that is dead.
struct Sightings {
    window: Duration,
    seen: HashMap<ChitchatId, Sighting>,
}

struct Sighting {
    heartbeat: u64,
    changed_at: Instant,
    first_seen: Instant,
    /// The heartbeat when the node was first seen or last declared dead.
    mark: u64,
    live: bool,
    ever_live: bool,
}

impl Sightings {
    fn new(window: Duration) -> Self {
        Sightings {
            window,
            seen: HashMap::new(),
        }
    }

    fn retain(&mut self, keep: impl Fn(&ChitchatId) -> bool) {
        self.seen.retain(|id, _| keep(id));
    }

    fn observe(&mut self, id: &ChitchatId, heartbeat: u64, live: bool, now: Instant) -> Liveness {
        let s = self.seen.entry(id.clone()).or_insert(Sighting {
            heartbeat,
            changed_at: now,
            first_seen: now,
            mark: heartbeat,
            live: false,
            ever_live: false,
        });
        if heartbeat != s.heartbeat {
            s.heartbeat = heartbeat;
            s.changed_at = now;
        }
        if live {
            s.live = true;
            s.ever_live = true;
            return Liveness::Live;
        }
        if s.live {
            s.live = false;
            s.mark = heartbeat;
        }
        let recent = |at: Instant| now.duration_since(at) < self.window;
        // Just heard of, or beating again since declared dead: give it a few rounds.
        let new = !s.ever_live && recent(s.first_seen);
        if new || (s.heartbeat != s.mark && recent(s.changed_at)) {
            Liveness::Pending
        } else {
            Liveness::Dead
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u64) -> ChitchatId {
        ChitchatId::new("n2", generation, SocketAddr::from(([127, 0, 0, 1], 7002)))
    }

    #[test]
    fn a_new_node_is_pending_while_its_heartbeat_moves() {
        let mut s = Sightings::new(Duration::from_millis(500));
        let t = Instant::now();
        assert_eq!(s.observe(&id(1), 3, false, t), Liveness::Pending);
        let t = t + Duration::from_millis(400);
        assert_eq!(s.observe(&id(1), 5, false, t), Liveness::Pending);
        let t = t + Duration::from_millis(400);
        assert_eq!(s.observe(&id(1), 6, false, t), Liveness::Pending);
        assert_eq!(s.observe(&id(1), 7, true, t), Liveness::Live);
    }

    #[test]
    fn a_node_declared_dead_stays_dead_until_it_beats_again() {
        let mut s = Sightings::new(Duration::from_millis(500));
        let t = Instant::now();
        s.observe(&id(1), 3, false, t);
        assert_eq!(s.observe(&id(1), 9, true, t), Liveness::Live);
        // Declared dead with the heartbeat it last had: dead, not pending.
        let t = t + Duration::from_millis(100);
        assert_eq!(s.observe(&id(1), 9, false, t), Liveness::Dead);
        // It beats again (SIGCONT): pending until the detector agrees.
        let t = t + Duration::from_millis(900);
        assert_eq!(s.observe(&id(1), 10, false, t), Liveness::Pending);
        // A heartbeat that stops moving ends the pending state.
        let t = t + Duration::from_millis(500);
        assert_eq!(s.observe(&id(1), 10, false, t), Liveness::Dead);
    }

    #[test]
    fn an_old_generation_that_never_beats_is_dead_after_a_few_rounds() {
        let mut s = Sightings::new(Duration::from_millis(500));
        let t = Instant::now();
        assert_eq!(s.observe(&id(1), 40, false, t), Liveness::Pending);
        for ms in [500, 600, 5000] {
            let at = t + Duration::from_millis(ms);
            assert_eq!(s.observe(&id(1), 40, false, at), Liveness::Dead);
        }
        s.retain(|i| *i == id(2));
        assert!(s.seen.is_empty());
    }
}
