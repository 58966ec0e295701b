//! The cluster transport: a ractor_cluster `NodeServer` whose sessions follow membership.
//!
//! ractor_cluster authenticates peers (a cookie challenge) and syncs `ractor::pg` groups,
//! but it detects no failure and never reconnects. So sessions follow gossip:
//!
//! - For a peer that gossip holds live and that has no session, the node with the smaller id
//!   dials the peer's `cluster_addr`. It retries with backoff while the peer stays live.
//! - When gossip declares the peer dead, both sides stop its sessions. Its remote actors and
//!   process-group members go with them.
//! - When the peer returns (live again, or a new generation), it is dialed again at once.
//!
//! Sessions are mapped to peers by the peer's name (`<id>@<host>`). Session ids change on
//! every reconnect.
//!
//! A failed cookie handshake shows up as a session that ends unauthenticated after the
//! names were exchanged, which is the challenge step, where the digests are compared.
//! ractor_cluster reports no reason. One such ending could also be a lost duplicate-session
//! election, so a peer is refused only after [`REFUSE_AFTER`] failures in a row. Both ends
//! see this and both warn. A refused peer is retried every [`REFUSED_RETRY`] in case it was
//! fixed. An authenticated session clears the refusal.
//!
//! Fault injection (`starling chaos` only, see faults.rs): a peer that [`Faults`] drops is
//! never dialed, and every session with it is closed as soon as the session is known to be
//! the peer's (dialed by us, or named in the handshake). On heal the usual dialing resumes.

use super::faults::{Dropped, Faults};
use super::membership::MembershipError;
use super::status::{GossipPeer, LinkState, Liveness};
use ractor::{ActorId, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// First retry delay after a failed dial or a lost session; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failed handshakes in a row after which a peer is refused.
const REFUSE_AFTER: u32 = 2;
/// How often a refused peer is dialed again.
const REFUSED_RETRY: Duration = Duration::from_secs(5);
/// How long stopping the transport may take at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Something happened to a session or a dial.
pub enum LinkEvent {
    Opened(NodeServerSessionInformation),
    Authenticated(NodeServerSessionInformation),
    Ready(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
    DialFailed { peer: String, error: String },
}

/// Forwards the NodeServer's session events to the membership loop.
struct Forward(mpsc::UnboundedSender<LinkEvent>);

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Opened(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Disconnected(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Authenticated(ses));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Ready(ses));
    }
}

/// One session, as far as membership cares.
struct Session {
    actor: ActorRef<NodeSessionMessage>,
    peer: Option<String>,
    addr: String,
    opened_at: Instant,
    /// The peer's name was exchanged: the handshake reached the cookie challenge.
    named: bool,
    authenticated: bool,
    ready: bool,
    /// Stopped by us (peer down, handshake timeout): its end says nothing about the cookie.
    abandoned: bool,
}

/// The running transport.
pub struct Links {
    me: String,
    server: ActorRef<NodeServerMessage>,
    server_task: ractor::concurrency::JoinHandle<()>,
    events: mpsc::UnboundedSender<LinkEvent>,
    sessions: HashMap<ActorId, Session>,
    peers: HashMap<String, PeerLink>,
    handshake_timeout: Duration,
    faults: Option<Faults>,
}

impl Links {
    /// Starts the NodeServer on `addr` (name `me`, `cookie`); returns it and its events.
    pub async fn start(
        me: &str,
        addr: SocketAddr,
        cookie: &str,
        handshake_timeout: Duration,
        faults: Option<Faults>,
    ) -> Result<(Links, mpsc::UnboundedReceiver<LinkEvent>), MembershipError> {
        let server = NodeServer::new(
            addr.port(),
            cookie.to_string(),
            me.to_string(),
            addr.ip().to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(addr.ip());
        let (server, server_task) = ractor::Actor::spawn(None, server, ()).await.map_err(|e| {
            MembershipError::Transport {
                addr,
                message: e.to_string(),
            }
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "membership".into(),
                subscription: Box::new(Forward(tx.clone())),
            })
            .map_err(|e| MembershipError::Transport {
                addr,
                message: e.to_string(),
            })?;
        let links = Links {
            me: me.to_string(),
            server,
            server_task,
            events: tx,
            sessions: HashMap::new(),
            peers: HashMap::new(),
            handshake_timeout,
            faults,
        };
        Ok((links, rx))
    }

    /// The session state with `peer`.
    pub fn state(&self, peer: &str) -> LinkState {
        let ready = self
            .sessions
            .values()
            .any(|s| s.ready && s.peer.as_deref() == Some(peer));
        match self.peers.get(peer) {
            _ if ready => LinkState::Ready,
            Some(link) if link.refused => LinkState::Refused,
            _ => LinkState::Connecting,
        }
    }

    /// Records a session event or a dial outcome.
    pub fn on_event(&mut self, event: LinkEvent, now: Instant) {
        match event {
            LinkEvent::Opened(ses) => {
                let dialed = (!ses.is_server)
                    .then(|| {
                        self.peers.iter_mut().find(|(_, l)| {
                            l.dialing
                                .is_some_and(|(a, _)| a.to_string() == ses.peer_addr)
                        })
                    })
                    .flatten()
                    .map(|(id, link)| {
                        link.dialing = None;
                        id.clone()
                    });
                let named = peer_id(&ses);
                self.sessions.insert(
                    ses.actor.get_id(),
                    Session {
                        actor: ses.actor,
                        named: named.is_some(),
                        peer: named.or(dialed),
                        addr: ses.peer_addr,
                        opened_at: now,
                        authenticated: false,
                        ready: false,
                        abandoned: false,
                    },
                );
            }
            LinkEvent::Authenticated(ses) => self.authenticated(&ses, false, now),
            LinkEvent::Ready(ses) => self.authenticated(&ses, true, now),
            LinkEvent::Disconnected(ses) => self.disconnected(ses, now),
            LinkEvent::DialFailed { peer, error } => {
                tracing::debug!(peer = %peer, error = %error, "cluster dial failed");
                self.peers.entry(peer).or_default().dial_failed(now);
            }
        }
    }

    /// An authenticated (and elected) session; `ready` once its state exchange is done.
    fn authenticated(&mut self, ses: &NodeServerSessionInformation, ready: bool, now: Instant) {
        let Some(peer) = peer_id(ses) else {
            return;
        };
        let session = self.sessions.entry(ses.actor.get_id()).or_insert(Session {
            actor: ses.actor.clone(),
            peer: None,
            addr: ses.peer_addr.clone(),
            opened_at: now,
            named: true,
            authenticated: false,
            ready: false,
            abandoned: false,
        });
        session.peer = Some(peer.clone());
        session.named = true;
        session.authenticated = true;
        session.ready |= ready;
        if ready {
            tracing::info!(peer = %peer, addr = %ses.peer_addr, "cluster session ready");
        }
        if self.peers.entry(peer.clone()).or_default().admitted() {
            tracing::info!(peer = %peer, addr = %ses.peer_addr, "cluster peer authenticated after refusals: admitted");
        }
    }

    fn disconnected(&mut self, ses: NodeServerSessionInformation, now: Instant) {
        let Some(session) = self.sessions.remove(&ses.actor.get_id()) else {
            return;
        };
        let named = session.named || ses.peer_name.is_some();
        let Some(peer) = peer_id(&ses).or(session.peer) else {
            return;
        };
        let link = self.peers.entry(peer.clone()).or_default();
        if session.authenticated {
            tracing::info!(peer = %peer, addr = %session.addr, "cluster session closed");
            link.session_lost(now);
        } else if session.abandoned || !named {
            link.dial_failed(now);
        } else if link.handshake_failed(now) {
            tracing::warn!(
                peer = %peer,
                addr = %session.addr,
                failures = link.failures,
                "cluster session failed authentication (cookie mismatch?): peer refused"
            );
        } else {
            tracing::debug!(peer = %peer, addr = %session.addr, "cluster handshake failed");
        }
    }

    /// Makes the sessions follow gossip: dials live peers this node is to dial, stops the
    /// sessions of peers declared dead or dropped by fault injection, and gives up on
    /// handshakes that stalled.
    pub fn reconcile(&mut self, peers: &[GossipPeer], now: Instant) {
        let dropped = self
            .faults
            .as_ref()
            .map_or_else(Arc::default, Faults::dropped);
        self.cut(&dropped);
        let mut dials = Vec::new();
        for p in peers {
            let link = self.peers.entry(p.id.clone()).or_default();
            let live = p.liveness == Liveness::Live;
            let (was_live, generation) = link.seen.unwrap_or((false, p.generation));
            link.seen = Some((live, p.generation));
            if live && (!was_live || generation != p.generation) {
                link.returned();
            }
            if was_live && !live {
                for s in self.sessions.values_mut() {
                    if s.peer.as_deref() == Some(p.id.as_str()) && !s.abandoned {
                        tracing::info!(peer = %p.id, addr = %s.addr, "peer is down: closing its cluster session");
                        s.actor.stop(Some("peer down".into()));
                        s.abandoned = true;
                    }
                }
            }
            let has_session = self
                .sessions
                .values()
                .any(|s| s.peer.as_deref() == Some(p.id.as_str()));
            if link
                .dialing
                .is_some_and(|(_, since)| now.duration_since(since) > self.handshake_timeout)
            {
                link.dial_failed(now);
            }
            let dial = live && self.me < p.id && !has_session && !dropped.drops_id(&p.id);
            if let (true, Some(addr)) = (dial, p.cluster_addr) {
                if link.should_dial(now) {
                    link.dialing = Some((addr, now));
                    dials.push((p.id.clone(), addr));
                }
            }
        }
        for (peer, addr) in dials {
            self.dial(peer, addr);
        }
        for s in self.sessions.values_mut() {
            if !s.authenticated
                && !s.abandoned
                && now.duration_since(s.opened_at) > self.handshake_timeout
            {
                tracing::debug!(addr = %s.addr, "cluster handshake timed out");
                s.actor.stop(Some("handshake timeout".into()));
                s.abandoned = true;
            }
        }
    }

    /// Closes every session with a peer that fault injection drops.
    fn cut(&mut self, dropped: &Dropped) {
        for s in self.sessions.values_mut().filter(|s| !s.abandoned) {
            if let Some(peer) = s.peer.as_deref().filter(|p| dropped.drops_id(p)) {
                tracing::info!(peer = %peer, addr = %s.addr, "peer dropped by fault injection: closing its cluster session");
                s.actor.stop(Some("dropped by fault injection".into()));
                s.abandoned = true;
            }
        }
    }

    fn dial(&self, peer: String, addr: SocketAddr) {
        tracing::debug!(peer = %peer, addr = %addr, "dialing cluster peer");
        let server = self.server.clone();
        let events = self.events.clone();
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            let error =
                match tokio::time::timeout(timeout, ractor_cluster::client_connect(&server, addr))
                    .await
                {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connect timed out".to_string(),
                };
            let _ = events.send(LinkEvent::DialFailed { peer, error });
        });
    }

    /// Stops every session and the NodeServer (its listener and sessions with it).
    pub async fn stop(self) {
        let _ = self
            .server
            .stop_and_wait(Some("node stopping".into()), Some(STOP_TIMEOUT))
            .await;
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.server_task).await;
    }
}

/// The peer's node id, from its ractor_cluster name `<id>@<host>`.
fn peer_id(ses: &NodeServerSessionInformation) -> Option<String> {
    let name = &ses.peer_name.as_ref()?.name;
    Some(
        name.split_once('@')
            .map_or(name.as_str(), |(id, _)| id)
            .to_string(),
    )
}

/// Dial and refusal bookkeeping for one peer.
#[derive(Debug)]
struct PeerLink {
    backoff: Duration,
    next_dial: Option<Instant>,
    /// A dial is under way (address, since when) and has not become a session yet.
    dialing: Option<(SocketAddr, Instant)>,
    failures: u32,
    refused: bool,
    /// Last gossip verdict seen: (live, generation).
    seen: Option<(bool, u64)>,
}

impl Default for PeerLink {
    fn default() -> Self {
        PeerLink {
            backoff: INITIAL_BACKOFF,
            next_dial: None,
            dialing: None,
            failures: 0,
            refused: false,
            seen: None,
        }
    }
}

impl PeerLink {
    fn should_dial(&self, now: Instant) -> bool {
        self.dialing.is_none() && self.next_dial.is_none_or(|at| now >= at)
    }

    fn retry_later(&mut self, now: Instant) {
        self.dialing = None;
        let delay = if self.refused {
            REFUSED_RETRY
        } else {
            self.backoff
        };
        self.next_dial = Some(now + delay);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The connection could not be made, or broke before the handshake got anywhere.
    fn dial_failed(&mut self, now: Instant) {
        self.retry_later(now);
    }

    /// The handshake failed at the cookie challenge; true if the peer is now refused.
    fn handshake_failed(&mut self, now: Instant) -> bool {
        self.failures += 1;
        let newly = !self.refused && self.failures >= REFUSE_AFTER;
        self.refused |= newly;
        self.retry_later(now);
        newly
    }

    /// An authenticated session; true if the peer was refused until now.
    fn admitted(&mut self) -> bool {
        let was = self.refused;
        self.failures = 0;
        self.refused = false;
        self.backoff = INITIAL_BACKOFF;
        was
    }

    /// An authenticated session ended: dial again soon.
    fn session_lost(&mut self, now: Instant) {
        self.backoff = INITIAL_BACKOFF;
        self.retry_later(now);
    }

    /// Gossip says the peer is back (live again, or restarted): dial at once.
    fn returned(&mut self) {
        self.backoff = INITIAL_BACKOFF;
        self.next_dial = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_dials_back_off_up_to_the_cap() {
        let mut link = PeerLink::default();
        let t = Instant::now();
        assert!(link.should_dial(t));
        let mut delays = Vec::new();
        for _ in 0..7 {
            link.dialing = Some((SocketAddr::from(([127, 0, 0, 1], 1)), t));
            assert!(!link.should_dial(t));
            link.dial_failed(t);
            delays.push(link.next_dial.map(|at| at - t).unwrap_or_default());
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(!link.should_dial(t + Duration::from_millis(4999)));
        assert!(link.should_dial(t + Duration::from_millis(5000)));
    }

    #[test]
    fn two_failed_handshakes_in_a_row_refuse_the_peer_until_it_authenticates() {
        let mut link = PeerLink::default();
        let t = Instant::now();
        assert!(!link.handshake_failed(t));
        assert!(!link.refused);
        assert!(link.handshake_failed(t));
        assert!(link.refused);
        // Refused: retried at the slow pace, and not refused "again".
        assert!(!link.handshake_failed(t));
        assert_eq!(link.next_dial, Some(t + REFUSED_RETRY));
        // Coming back does not clear a refusal, but dials at once.
        link.returned();
        assert!(link.refused && link.should_dial(t));
        assert!(link.admitted());
        assert!(!link.refused);
        assert_eq!(link.failures, 0);
        assert!(!link.admitted());
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let mut link = PeerLink::default();
        let t = Instant::now();
        link.handshake_failed(t);
        link.admitted();
        assert!(!link.handshake_failed(t));
        assert!(!link.refused);
    }

    #[test]
    fn a_lost_session_is_redialed_soon() {
        let mut link = PeerLink::default();
        let t = Instant::now();
        for _ in 0..5 {
            link.dial_failed(t);
        }
        link.session_lost(t);
        assert_eq!(link.next_dial, Some(t + INITIAL_BACKOFF));
    }
}
