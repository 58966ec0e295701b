//! An in-memory twin of the node-to-node plane, for tests: several nodes' upper layers in
//! one process, each with its own [`View`] and a [`Transport`] into a shared [`SimNet`].
//! Messages go through the wire codec as on the real link; a test cuts links, delays them,
//! and sets who is up, in the manner of chitchat's simulator.
//!
//! Like ractor_cluster, a link delivers casts at most once and in send order; a call on a
//! cut link fails with `NoRoute` when it is sent, and with `Failed` (outcome unknown) when
//! the link is cut while it is in flight.

use super::port::{serve_call, serve_cast, CallError, Inbound, Transport};
use super::view::{Member, MemberStatus, View};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

type Link = (String, String);

#[derive(Default)]
struct Net {
    /// Nodes that serve: registered and not stopped.
    inbound: HashMap<String, Arc<dyn Inbound>>,
    /// Cut links, both directions listed.
    cut: HashSet<Link>,
    delay: HashMap<Link, Duration>,
    /// One ordered queue per link that carried a cast.
    queues: HashMap<Link, mpsc::UnboundedSender<Vec<u8>>>,
    views: HashMap<String, watch::Sender<Arc<View>>>,
    /// What each node announced ([`super::Announcer`]), by node.
    facts: HashMap<String, BTreeMap<String, String>>,
}

/// The shared network of a test.
#[derive(Clone, Default)]
pub struct SimNet(Arc<Mutex<Net>>);

impl SimNet {
    fn net(&self) -> MutexGuard<'_, Net> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds node `me` (not serving until [`SimNet::serve`]); its view starts with every
    /// node added so far up, and theirs with it.
    pub fn join(&self, me: &str) -> (watch::Receiver<Arc<View>>, Arc<dyn Transport>) {
        let rx = {
            let mut net = self.net();
            let (tx, rx) = watch::channel(Arc::new(view(me, &[])));
            net.views.insert(me.to_string(), tx);
            rx
        };
        let all: Vec<String> = self.net().views.keys().cloned().collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.set_up(&all);
        let transport = SimTransport {
            me: me.to_string(),
            net: self.clone(),
        };
        (rx, Arc::new(transport))
    }

    /// Node `node` serves its peers through `inbound`.
    pub fn serve(&self, node: &str, inbound: Arc<dyn Inbound>) {
        self.net().inbound.insert(node.to_string(), inbound);
    }

    /// Node `node` stops serving (it was killed): calls to it find no route.
    pub fn stop(&self, node: &str) {
        let mut net = self.net();
        net.inbound.remove(node);
        net.queues.retain(|(a, b), _| a != node && b != node);
    }

    /// Sets a fact of node `me`: every node's view shows it.
    pub(super) fn set_fact(&self, me: &str, key: &str, value: &str) {
        let mut net = self.net();
        net.facts
            .entry(me.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        for tx in net.views.values() {
            tx.send_modify(|v| {
                let mut next = View::clone(v);
                if let Some(m) = next.members.get_mut(me).filter(|_| next.me != me) {
                    m.facts.insert(key.to_string(), value.to_string());
                }
                *v = Arc::new(next);
            });
        }
    }

    /// Node `me`'s way to announce facts.
    pub fn announcer(&self, me: &str) -> super::Announcer {
        super::Announcer::sim(self.clone(), me)
    }

    /// Every node's view: exactly `up` are up (and ready), every other known node down.
    pub fn set_up(&self, up: &[&str]) {
        let net = self.net();
        for (me, tx) in &net.views {
            let known: Vec<&str> = net.views.keys().map(String::as_str).collect();
            let mut v = view(me, &known);
            for m in v.members.values_mut() {
                if !up.contains(&m.id.as_str()) {
                    m.status = MemberStatus::Down;
                }
                if m.id != *me {
                    m.facts = net.facts.get(&m.id).cloned().unwrap_or_default();
                }
            }
            v.ready = up.contains(&me.as_str());
            tx.send_replace(Arc::new(v));
        }
    }

    /// Cuts the link between `a` and `b`, both ways; casts queued on it are lost.
    pub fn cut(&self, a: &str, b: &str) {
        let mut net = self.net();
        for link in [link(a, b), link(b, a)] {
            net.queues.remove(&link);
            net.cut.insert(link);
        }
    }

    pub fn heal(&self) {
        self.net().cut.clear();
    }

    /// Delays every message from `a` to `b`.
    pub fn delay(&self, a: &str, b: &str, by: Duration) {
        self.net().delay.insert(link(a, b), by);
    }

    /// The receiver's port, if the link `from → to` carries messages now.
    fn route(&self, from: &str, to: &str) -> Option<(Arc<dyn Inbound>, Duration)> {
        let net = self.net();
        let link = link(from, to);
        if net.cut.contains(&link) || !net.inbound.contains_key(from) {
            return None;
        }
        let delay = net.delay.get(&link).copied().unwrap_or_default();
        net.inbound.get(to).map(|i| (i.clone(), delay))
    }
}

fn link(a: &str, b: &str) -> Link {
    (a.to_string(), b.to_string())
}

/// `me`'s view with `members` (and itself) up and ready.
fn view(me: &str, members: &[&str]) -> View {
    let member = |id: &str| Member {
        id: id.to_string(),
        http_addr: None,
        gossip_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        cluster_addr: None,
        status: MemberStatus::Up,
        facts: Default::default(),
    };
    let members = members
        .iter()
        .copied()
        .chain([me])
        .map(|id| (id.to_string(), member(id)))
        .collect();
    View {
        me: me.to_string(),
        ready: true,
        members,
    }
}

/// One node's way into the [`SimNet`].
struct SimTransport {
    me: String,
    net: SimNet,
}

#[async_trait]
impl Transport for SimTransport {
    async fn call(
        &self,
        node: &str,
        call: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let (inbound, delay) = self
            .net
            .route(&self.me, node)
            .ok_or_else(|| CallError::NoRoute(node.to_string()))?;
        let failed = |detail: &str| CallError::Failed {
            node: node.to_string(),
            detail: detail.to_string(),
        };
        let served = async {
            tokio::time::sleep(delay).await;
            serve_call(&*inbound, &call).await
        };
        let reply = tokio::time::timeout(timeout, served)
            .await
            .map_err(|_| failed("timed out"))?
            .ok_or_else(|| failed("connection lost"))?;
        // The answer comes back over the same link.
        self.net
            .route(node, &self.me)
            .map(|_| reply)
            .ok_or_else(|| failed("connection lost"))
    }

    fn cast(&self, node: &str, cast: Vec<u8>) -> bool {
        if self.net.route(&self.me, node).is_none() {
            return false;
        }
        let mut net = self.net.net();
        let link = link(&self.me, node);
        let queue = net.queues.entry(link.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
            let sim = self.net.clone();
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    let Some((inbound, delay)) = sim.route(&link.0, &link.1) else {
                        continue;
                    };
                    tokio::time::sleep(delay).await;
                    serve_cast(&*inbound, &bytes);
                }
            });
            tx
        });
        queue.send(cast).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{self, Call, Cast, Reply};
    use super::*;

    /// Answers every call with its topic and records casts.
    #[derive(Default)]
    struct Echo(Mutex<Vec<String>>);

    #[async_trait]
    impl Inbound for Echo {
        async fn call(&self, call: Call) -> Reply {
            let Call::Info { topic } = call else {
                return Reply::Raft(vec![]);
            };
            Reply::Raft(topic.into_bytes())
        }
        fn cast(&self, cast: Cast) {
            if let Cast::Unfollow { topic, .. } = cast {
                self.0.lock().unwrap().push(topic);
            }
        }
    }

    fn unfollow(topic: &str) -> Vec<u8> {
        wire::encode(&Cast::Unfollow {
            topic: topic.into(),
            from: "a".into(),
        })
        .unwrap()
    }

    async fn info(t: &Arc<dyn Transport>, node: &str) -> Result<Reply, CallError> {
        let call = wire::encode(&Call::Info { topic: "t".into() }).unwrap();
        let reply = t.call(node, call, Duration::from_secs(5)).await?;
        Ok(wire::decode(&reply).unwrap())
    }

    #[tokio::test]
    async fn calls_and_ordered_casts_until_the_link_is_cut() {
        let net = SimNet::default();
        let (_, a) = net.join("a");
        let (view_b, _) = net.join("b");
        assert!(view_b.borrow().is_up("a"), "b sees a up");
        let echo = Arc::new(Echo::default());
        net.serve("a", Arc::new(Echo::default()));
        net.serve("b", echo.clone());
        assert!(matches!(info(&a, "b").await, Ok(Reply::Raft(t)) if t == b"t"));
        net.delay("a", "b", Duration::from_millis(20));
        for t in ["1", "2", "3"] {
            assert!(a.cast("b", unfollow(t)));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while echo.0.lock().unwrap().len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "casts arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*echo.0.lock().unwrap(), ["1", "2", "3"]);

        net.cut("a", "b");
        assert!(matches!(info(&a, "b").await, Err(CallError::NoRoute(_))));
        assert!(!a.cast("b", unfollow("4")));
        net.heal();
        net.stop("b");
        assert!(matches!(info(&a, "b").await, Err(CallError::NoRoute(_))));
        net.set_up(&["b"]);
        assert!(!view_b.borrow().is_up("a"), "a is down in b's view");
    }
}
