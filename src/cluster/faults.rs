//! Fault injection for `starling chaos`: this node drops all gossip and cluster traffic to
//! and from chosen peers, so that a chaos run can partition a local cluster.
//!
//! Exists only when `[chaos] fault_injection = true`; otherwise no [`Faults`] is made, the
//! gossip socket is chitchat's plain UDP one, and the HTTP endpoint answers 403.
//!
//! - Gossip: [`FaultyTransport`] wraps chitchat's transport. A packet to a dropped peer's
//!   gossip address is not sent; one from it is discarded on receipt.
//! - Cluster sessions (ractor_cluster): `links.rs` closes every session with a dropped
//!   peer as soon as the peer is identified, and does not dial it. Sessions are matched by
//!   node id, not address: an inbound session comes from an ephemeral port.
//!
//! Gossip is transitive: a node learns a peer's heartbeat from any third node. So only a
//! partition that is cut on both sides of every pair (the isolated group drops the rest,
//! and the rest drop it) makes the failure detectors agree; a one-sided cut only closes
//! the cluster sessions.

use crate::config::Config;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// Why a set of peers to drop was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown node id `{0}`: not listed under [[nodes]] in this node's config")]
    UnknownNode(String),
    #[error("node `{0}` cannot drop itself")]
    Itself(String),
}

/// The peers this node drops: their ids (for cluster sessions) and gossip addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    ids: BTreeSet<String>,
    gossip: HashSet<SocketAddr>,
}

impl Dropped {
    /// Whether traffic with node `id` is dropped.
    pub fn drops_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Whether gossip to or from `addr` is dropped.
    pub fn drops_gossip(&self, addr: &SocketAddr) -> bool {
        self.gossip.contains(addr)
    }

    /// The dropped ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.ids.iter().cloned().collect()
    }
}

/// Every node of the config with its gossip address (none for a node outside a cluster).
#[derive(Debug)]
struct PeerTable {
    me: String,
    gossip: BTreeMap<String, Option<SocketAddr>>,
}

impl PeerTable {
    fn from_config(config: &Config, me: &str) -> PeerTable {
        PeerTable {
            me: me.to_string(),
            gossip: config
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.gossip_addr))
                .collect(),
        }
    }

    /// The peers named by `ids` (repeats allowed), or the first id that is not a peer.
    fn resolve(&self, ids: &[String]) -> Result<Dropped, FaultError> {
        let mut dropped = Dropped::default();
        for id in ids {
            if *id == self.me {
                return Err(FaultError::Itself(id.clone()));
            }
            let addr = self
                .gossip
                .get(id)
                .ok_or_else(|| FaultError::UnknownNode(id.clone()))?;
            dropped.ids.insert(id.clone());
            dropped.gossip.extend(*addr);
        }
        Ok(dropped)
    }
}

/// The handle the HTTP endpoint sets and the transports read.
#[derive(Clone, Debug)]
pub struct Faults {
    table: Arc<PeerTable>,
    dropped: Arc<RwLock<Arc<Dropped>>>,
}

impl Faults {
    /// Fault injection for node `me`, dropping nothing yet.
    pub fn new(config: &Config, me: &str) -> Faults {
        Faults {
            table: Arc::new(PeerTable::from_config(config, me)),
            dropped: Arc::default(),
        }
    }

    /// Drops exactly the peers `ids` from now on (none: heals). Returns them, sorted.
    pub fn set(&self, ids: &[String]) -> Result<Vec<String>, FaultError> {
        let dropped = self.table.resolve(ids)?;
        let dropping = dropped.ids();
        *self.dropped.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(dropped);
        let node = &self.table.me;
        if dropping.is_empty() {
            tracing::warn!(node = %node, dropping = ?dropping, "fault injection: partition healed");
        } else {
            tracing::warn!(node = %node, dropping = ?dropping, "fault injection: partition set");
        }
        Ok(dropping)
    }

    /// What is dropped now.
    pub fn dropped(&self) -> Arc<Dropped> {
        self.dropped
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A chitchat transport whose sockets drop the gossip of dropped peers.
pub struct FaultyTransport<T> {
    inner: T,
    faults: Faults,
}

impl<T: Transport> FaultyTransport<T> {
    pub fn new(inner: T, faults: Faults) -> Self {
        FaultyTransport { inner, faults }
    }
}

#[async_trait]
impl<T: Transport> Transport for FaultyTransport<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.inner.open(listen_addr).await?;
        Ok(Box::new(FaultySocket {
            inner,
            faults: self.faults.clone(),
        }))
    }
}

struct FaultySocket {
    inner: Box<dyn Socket>,
    faults: Faults,
}

#[async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.faults.dropped().drops_gossip(&to) {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    /// Cancellable, as chitchat requires: nothing is held between two inner receives.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let received = self.inner.recv().await?;
            if !self.faults.dropped().drops_gossip(&received.from_addr) {
                return Ok(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat::transport::ChannelTransport;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    fn config() -> Config {
        Config::parse(
            r#"
            [[nodes]]
            id = "n1"
            http_addr = "127.0.0.1:0"
            gossip_addr = "127.0.0.1:7101"
            cluster_addr = "127.0.0.1:7201"
            [[nodes]]
            id = "n2"
            http_addr = "127.0.0.1:0"
            gossip_addr = "127.0.0.1:7102"
            cluster_addr = "127.0.0.1:7202"
            [[nodes]]
            id = "n3"
            http_addr = "127.0.0.1:0"
            gossip_addr = "127.0.0.1:7103"
            cluster_addr = "127.0.0.1:7203"
            "#,
        )
        .unwrap()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_map_to_the_gossip_addresses_of_the_config() {
        let table = PeerTable::from_config(&config(), "n1");
        let d = table.resolve(&ids(&["n3", "n2", "n3"])).unwrap();
        assert_eq!(d.ids(), ids(&["n2", "n3"]));
        assert!(d.drops_id("n2") && d.drops_id("n3") && !d.drops_id("n1"));
        assert!(d.drops_gossip(&addr(7102)) && d.drops_gossip(&addr(7103)));
        assert!(!d.drops_gossip(&addr(7101)));
        // Cluster addresses are not gossip addresses: sessions are matched by id.
        assert!(!d.drops_gossip(&addr(7202)));
        assert_eq!(table.resolve(&[]).unwrap(), Dropped::default());
    }

    #[test]
    fn unknown_ids_and_this_node_are_refused() {
        let table = PeerTable::from_config(&config(), "n1");
        assert_eq!(
            table.resolve(&ids(&["n2", "n9"])),
            Err(FaultError::UnknownNode("n9".into()))
        );
        assert_eq!(
            table.resolve(&ids(&["n1"])),
            Err(FaultError::Itself("n1".into()))
        );
    }

    #[test]
    fn set_replaces_the_dropped_peers_and_a_refused_set_changes_nothing() {
        let faults = Faults::new(&config(), "n2");
        assert_eq!(faults.set(&ids(&["n1"])).unwrap(), ids(&["n1"]));
        assert!(faults.set(&ids(&["n3", "bogus"])).is_err());
        assert!(faults.dropped().drops_id("n1"));
        assert_eq!(faults.set(&ids(&["n3"])).unwrap(), ids(&["n3"]));
        assert!(!faults.dropped().drops_id("n1"));
        assert!(faults.set(&[]).unwrap().is_empty());
        assert_eq!(*faults.dropped(), Dropped::default());
    }

    /// A packet that says which one it is.
    fn envelope(tag: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn {
                cluster_id: tag.to_string(),
                digest: Default::default(),
            },
        }
    }

    fn tag(received: RecvOutcome) -> (SocketAddr, String) {
        match received.envelope.message {
            ChitchatMessage::Syn { cluster_id, .. } => (received.from_addr, cluster_id),
            other => panic!("unexpected message {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_socket_neither_sends_to_nor_receives_from_a_dropped_peer() {
        let mut config = config();
        // Three gossip sockets on the in-memory transport: n1 (faulty), n2 and n3.
        for (i, node) in config.nodes.iter_mut().enumerate() {
            node.gossip_addr = Some(addr(20001 + i as u16));
        }
        let faults = Faults::new(&config, "n1");
        let channels = ChannelTransport::default();
        let faulty = FaultyTransport::new(channels.clone(), faults.clone());
        let mut n1 = faulty.open(addr(20001)).await.unwrap();
        let mut n2 = channels.open(addr(20002)).await.unwrap();
        let mut n3 = channels.open(addr(20003)).await.unwrap();
        faults.set(&ids(&["n2"])).unwrap();

        // n2's packet is discarded: the first one n1 gets is n3's, sent after it.
        n2.send(addr(20001), envelope("cut")).await.unwrap();
        n3.send(addr(20001), envelope("n3")).await.unwrap();
        assert_eq!(tag(n1.recv().await.unwrap()), (addr(20003), "n3".into()));

        // n1 sends nothing to n2: n2's first packet from n1 is the one sent after healing.
        let dropped = n1.send(addr(20002), envelope("cut")).await.unwrap();
        assert_eq!(dropped.num_bytes_sent, 0);
        faults.set(&[]).unwrap();
        let sent = n1.send(addr(20002), envelope("healed")).await.unwrap();
        assert!(sent.num_bytes_sent > 0);
        assert_eq!(
            tag(n2.recv().await.unwrap()),
            (addr(20001), "healed".into())
        );
        n2.send(addr(20001), envelope("healed")).await.unwrap();
        assert_eq!(
            tag(n1.recv().await.unwrap()),
            (addr(20002), "healed".into())
        );
    }
}
