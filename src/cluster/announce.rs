//! [`Announcer`]: how an upper layer sets facts about this node that every peer reads in
//! its view ([`super::view::Member`]'s `facts`): small strings whose meaning the upper
//! layer owns. They ride on gossip (chitchat keys), or on the in-memory twin in tests.

use super::gossip::FACT_PREFIX;
use std::sync::Arc;

/// Sets this node's facts. Cheap to clone; does nothing on a node that is not clustered.
#[derive(Clone, Default)]
pub struct Announcer {
    to: Option<To>,
}

#[derive(Clone)]
enum To {
    Gossip(Arc<tokio::sync::Mutex<chitchat::Chitchat>>),
    #[cfg(test)]
    Sim(super::sim::SimNet, String),
}

impl Announcer {
    pub(super) fn gossip(chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>) -> Announcer {
        Announcer {
            to: Some(To::Gossip(chitchat)),
        }
    }

    #[cfg(test)]
    pub(super) fn sim(net: super::sim::SimNet, me: &str) -> Announcer {
        Announcer {
            to: Some(To::Sim(net, me.to_string())),
        }
    }

    pub async fn set(&self, key: &str, value: &str) {
        match &self.to {
            Some(To::Gossip(chitchat)) => chitchat
                .lock()
                .await
                .self_node_state()
                .set(format!("{FACT_PREFIX}{key}"), value),
            #[cfg(test)]
            Some(To::Sim(net, me)) => net.set_fact(me, key, value),
            None => {}
        }
    }
}
