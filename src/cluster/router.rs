//! The node router: the one remotable actor of a node, and the real [`Transport`]. It joins
//! the process group [`super::router_group`] of its node id, so peers find it once their
//! ractor_cluster session is ready; it hands the [`Call`](super::wire::Call)s and
//! [`Cast`](super::wire::Cast)s that arrive to the node's [`Inbound`] port. Calls are served
//! concurrently (one task each); casts are handed on in arrival order, which keeps a
//! topic's deliveries in offset order.

use super::port::{serve_call, serve_cast, CallError, Inbound, Transport};
use super::router_group;
use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use std::sync::Arc;
use std::time::Duration;

#[derive(RactorClusterMessage)]
pub enum RouterMsg {
    Cast(Vec<u8>),
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

pub struct NodeRouter;

pub struct RouterArgs {
    pub me: String,
    pub inbound: Arc<dyn Inbound>,
}

impl Actor for NodeRouter {
    type Msg = RouterMsg;
    type State = Arc<dyn Inbound>;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<Arc<dyn Inbound>, ActorProcessingErr> {
        ractor::pg::join(router_group(&args.me), vec![myself.get_cell()]);
        Ok(args.inbound)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        inbound: &mut Arc<dyn Inbound>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Call(bytes, reply) => {
                let inbound = inbound.clone();
                tokio::spawn(async move {
                    if let Some(answer) = serve_call(&*inbound, &bytes).await {
                        let _ = reply.send(answer);
                    }
                });
            }
            RouterMsg::Cast(bytes) => serve_cast(&**inbound, &bytes),
        }
        Ok(())
    }
}

/// Peers' routers over ractor_cluster, found through `ractor::pg`.
pub struct RactorTransport;

fn router(node: &str) -> Option<ActorRef<RouterMsg>> {
    ractor::pg::get_members(&router_group(node))
        .into_iter()
        .next()
        .map(ActorRef::from)
}

#[async_trait]
impl Transport for RactorTransport {
    async fn call(
        &self,
        node: &str,
        call: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let failed = |detail: &str| CallError::Failed {
            node: node.to_string(),
            detail: detail.to_string(),
        };
        let router = router(node).ok_or_else(|| CallError::NoRoute(node.to_string()))?;
        match router
            .call(|port| RouterMsg::Call(call, port), Some(timeout))
            .await
        {
            Ok(CallResult::Success(reply)) => Ok(reply),
            Ok(CallResult::Timeout) => Err(failed("timed out")),
            Ok(CallResult::SenderError) => Err(failed("connection lost")),
            Err(_) => Err(CallError::NoRoute(node.to_string())),
        }
    }

    fn cast(&self, node: &str, cast: Vec<u8>) -> bool {
        router(node).is_some_and(|r| r.cast(RouterMsg::Cast(cast)).is_ok())
    }
}
