//! [`Cluster`]: what the topic layer uses to reach other nodes — the membership view,
//! placement, and calls and casts through the node's [`Transport`].

use super::port::{CallError, Owners, Transport};
use super::view::View;
use super::wire::{self, Call, Cast, Reply};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Cluster {
    me: Arc<str>,
    view: watch::Receiver<Arc<View>>,
    transport: Arc<dyn Transport>,
    timeout: Duration,
    /// Where ownership comes from (the replication layer), set once it has started.
    owners: Arc<OnceLock<Arc<dyn Owners>>>,
}

impl Cluster {
    pub fn new(
        view: watch::Receiver<Arc<View>>,
        transport: Arc<dyn Transport>,
        timeout: Duration,
    ) -> Cluster {
        let me = Arc::from(view.borrow().me.as_str());
        Cluster {
            me,
            view,
            transport,
            timeout,
            owners: Arc::new(OnceLock::new()),
        }
    }

    /// Takes ownership from `owners` from now on (once; later calls are ignored).
    pub fn set_owners(&self, owners: Arc<dyn Owners>) {
        let _ = self.owners.set(owners);
    }

    /// Sees a new value whenever ownership may have changed (`None` before `set_owners`).
    pub fn owner_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.owners.get().map(|o| o.changes())
    }

    /// A cluster of one ready node (in-process tests).
    #[cfg(test)]
    pub fn alone(me: &str) -> Cluster {
        use super::view::{Member, MemberStatus};
        let member = Member {
            id: me.to_string(),
            http_addr: None,
            gossip_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_addr: None,
            status: MemberStatus::Up,
            facts: Default::default(),
        };
        let view = View {
            me: me.to_string(),
            ready: true,
            members: [(me.to_string(), member)].into_iter().collect(),
        };
        let transport = Arc::new(super::router::RactorTransport);
        Cluster::new(
            watch::channel(Arc::new(view)).1,
            transport,
            Duration::from_secs(5),
        )
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// A receiver that sees every membership change.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// The owner of `topic`: the leader of its shard (see [`Owners`]), or `None` while no
    /// leader is known (or before `set_owners`).
    pub fn owner(&self, topic: &str) -> Option<String> {
        self.owners.get().and_then(|o| o.owner(topic))
    }

    /// Every member that is up, except this node.
    pub fn peers(&self) -> Vec<String> {
        let view = self.view.borrow();
        view.up()
            .filter(|m| *m != &*self.me)
            .map(str::to_string)
            .collect()
    }

    /// Sends `call` to `node` and waits for its reply (up to `[cluster] rpc_timeout_ms`).
    pub async fn call(&self, node: &str, call: &Call) -> Result<Reply, CallError> {
        self.call_within(node, call, self.timeout).await
    }

    /// Sends `call` to `node` and waits up to `timeout` for its reply.
    pub async fn call_within(
        &self,
        node: &str,
        call: &Call,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let failed = |detail: String| CallError::Failed {
            node: node.to_string(),
            detail,
        };
        let bytes = wire::encode(call).map_err(|e| failed(e.to_string()))?;
        let reply = self.transport.call(node, bytes, timeout).await?;
        wire::decode(&reply).map_err(|e| failed(e.to_string()))
    }

    /// Encodes a cast once, for sending to several nodes.
    pub fn encode_cast(cast: &Cast) -> Option<Vec<u8>> {
        wire::encode(cast)
            .inspect_err(|e| tracing::error!(error = %e, "cannot encode a cluster cast"))
            .ok()
    }

    /// Sends an encoded cast to `node`; false if it is not reachable.
    pub fn cast(&self, node: &str, bytes: Vec<u8>) -> bool {
        self.transport.cast(node, bytes)
    }
}
