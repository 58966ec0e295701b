//! [`Cluster`]: what the topic layer uses to reach other nodes — the membership view,
//! placement, and calls and casts through the node's [`Transport`].

use super::placement;
use super::port::{CallError, Transport};
use super::view::View;
use super::wire::{self, Call, Cast, Reply};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Cluster {
    me: Arc<str>,
    view: watch::Receiver<Arc<View>>,
    transport: Arc<dyn Transport>,
    timeout: Duration,
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
        }
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

    /// The owner of `topic` among the members that are up, or `None` while this node has
    /// not joined.
    pub fn owner(&self, topic: &str) -> Option<String> {
        let view = self.view.borrow();
        if !view.ready {
            return None;
        }
        placement::owner(topic, view.up()).map(str::to_string)
    }

    /// Every member that is up, except this node.
    pub fn peers(&self) -> Vec<String> {
        let view = self.view.borrow();
        view.up()
            .filter(|m| *m != &*self.me)
            .map(str::to_string)
            .collect()
    }

    /// Sends `call` to `node` and waits for its reply.
    pub async fn call(&self, node: &str, call: &Call) -> Result<Reply, CallError> {
        let failed = |detail: String| CallError::Failed {
            node: node.to_string(),
            detail,
        };
        let bytes = wire::encode(call).map_err(|e| failed(e.to_string()))?;
        let reply = self.transport.call(node, bytes, self.timeout).await?;
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
