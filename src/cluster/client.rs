//! [`Cluster`]: what the topic layer uses to reach other nodes — the membership view,
//! placement, and calls and casts to a node's router.

use super::router::RouterMsg;
use super::view::View;
use super::wire::{self, Call, Cast, Reply};
use super::{placement, router_group};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node is not connected: nothing was sent.
    #[error("node {0} is not reachable")]
    NoRoute(String),
    /// Sent, but no usable answer (timeout, connection lost, undecodable): the outcome is
    /// unknown.
    #[error("node {node}: {detail}")]
    Failed { node: String, detail: String },
}

#[derive(Clone)]
pub struct Cluster {
    me: Arc<str>,
    view: watch::Receiver<Arc<View>>,
    timeout: Duration,
}

impl Cluster {
    pub fn new(view: watch::Receiver<Arc<View>>, timeout: Duration) -> Cluster {
        let me = Arc::from(view.borrow().me.as_str());
        Cluster { me, view, timeout }
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
        Cluster::new(watch::channel(Arc::new(view)).1, Duration::from_secs(5))
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
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

    fn router(&self, node: &str) -> Option<ActorRef<RouterMsg>> {
        ractor::pg::get_members(&router_group(node))
            .into_iter()
            .next()
            .map(ActorRef::from)
    }

    /// Sends `call` to `node` and waits for its reply.
    pub async fn call(&self, node: &str, call: &Call) -> Result<Reply, CallError> {
        let failed = |detail: String| CallError::Failed {
            node: node.to_string(),
            detail,
        };
        let bytes = wire::encode(call).map_err(|e| failed(e.to_string()))?;
        let router = self
            .router(node)
            .ok_or_else(|| CallError::NoRoute(node.to_string()))?;
        match router
            .call(|port| RouterMsg::Call(bytes, port), Some(self.timeout))
            .await
        {
            Ok(CallResult::Success(reply)) => {
                wire::decode(&reply).map_err(|e| failed(e.to_string()))
            }
            Ok(CallResult::Timeout) => Err(failed("timed out".into())),
            Ok(CallResult::SenderError) => Err(failed("connection lost".into())),
            Err(_) => Err(CallError::NoRoute(node.to_string())),
        }
    }

    /// Encodes a cast once, for sending to several nodes.
    pub fn encode_cast(cast: &Cast) -> Option<Vec<u8>> {
        wire::encode(cast)
            .inspect_err(|e| tracing::error!(error = %e, "cannot encode a cluster cast"))
            .ok()
    }

    /// Sends an encoded cast to `node`; false if it is not reachable.
    pub fn cast(&self, node: &str, bytes: Vec<u8>) -> bool {
        self.router(node)
            .is_some_and(|r| r.cast(RouterMsg::Cast(bytes)).is_ok())
    }
}
