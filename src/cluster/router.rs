//! The node router: the one remotable actor of a node. It joins the process group
//! [`super::router_group`] of its node id, so peers find it once their ractor_cluster
//! session is ready; it decodes [`Call`]s and [`Cast`]s and hands them to the topic layer.
//! Calls are served concurrently (one task each); casts are handed on in arrival order,
//! which keeps a topic's deliveries in offset order.

use super::router_group;
use super::wire::{self, Call, Cast, Reply};
use crate::protocol::ApiError;
use crate::topic::service::Topics;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

#[derive(RactorClusterMessage)]
pub enum RouterMsg {
    Cast(Vec<u8>),
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

pub struct NodeRouter;

pub struct RouterArgs {
    pub me: String,
    pub topics: Topics,
}

impl Actor for NodeRouter {
    type Msg = RouterMsg;
    type State = Topics;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<Topics, ActorProcessingErr> {
        ractor::pg::join(router_group(&args.me), vec![myself.get_cell()]);
        Ok(args.topics)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        topics: &mut Topics,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Call(bytes, reply) => {
                let topics = topics.clone();
                tokio::spawn(async move {
                    let answer = match wire::decode::<Call>(&bytes) {
                        Ok(call) => topics.serve(call).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable cluster call");
                            Reply::error(&ApiError::bad_request("undecodable request"), false)
                        }
                    };
                    match wire::encode(&answer) {
                        Ok(bytes) => {
                            let _ = reply.send(bytes);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode a cluster reply"),
                    }
                });
            }
            RouterMsg::Cast(bytes) => match wire::decode::<Cast>(&bytes) {
                Ok(cast) => topics.receive(cast),
                Err(e) => tracing::warn!(error = %e, "undecodable cluster cast"),
            },
        }
        Ok(())
    }
}
