//! The protocol's replies and frames, as the client reads them.

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// The envelope every transport delivers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Envelope {
    pub topic: String,
    pub offset: u64,
    pub epoch: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub time: u64,
    #[serde(default)]
    pub data: serde_json::Value,
    /// On consumer deliveries: 1 for the first delivery, more for redeliveries.
    #[serde(default)]
    pub attempt: Option<u32>,
}

/// A publish's acknowledgement (HTTP reply or WebSocket `published`); serialized as the
/// node's HTTP reply.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Published {
    #[serde(default)]
    pub topic: String,
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
}

/// A subscription's start, or (unsolicited, `recovered:false`) a moved subscription that
/// lost its position.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Subscribed {
    pub topic: String,
    #[serde(default)]
    pub req: Option<u64>,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub head: u64,
    #[serde(default)]
    pub first: u64,
    #[serde(default = "yes")]
    pub recovered: bool,
}

/// A `type:"error"` frame.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorFrame {
    #[serde(default)]
    pub req: Option<u64>,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// A server → client WebSocket frame.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame {
    Subscribed(Subscribed),
    Message(Envelope),
    Published(Published),
    Error(ErrorFrame),
    Pong {
        #[serde(default)]
        req: Option<u64>,
    },
    /// Any other frame (`unsubscribed`, or one a newer server adds).
    #[serde(other)]
    Other,
}

impl Frame {
    pub fn parse(text: &str) -> Result<Frame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The `req` this frame answers, if any.
    pub fn req(&self) -> Option<u64> {
        match self {
            Frame::Subscribed(s) => s.req,
            Frame::Published(p) => p.req,
            Frame::Error(e) => e.req,
            Frame::Pong { req } => *req,
            Frame::Message(_) | Frame::Other => None,
        }
    }
}

/// A long poll's answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PollReply {
    #[serde(default)]
    pub messages: Vec<Envelope>,
    /// The last offset returned, or the poll's `after`.
    pub next: u64,
    #[serde(default)]
    pub epoch: String,
    #[serde(default = "yes")]
    pub recovered: bool,
    #[serde(default)]
    pub first: u64,
}

/// `GET /v1/topics/{topic}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic: String,
    pub epoch: String,
    pub first: u64,
    pub head: u64,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub subscribers: Option<u64>,
}

/// `GET /v1/topics/{topic}/consumers/{name}` (the fields the tools read).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub ack_floor: u64,
    pub pending: u64,
    #[serde(default)]
    pub redelivered: u64,
    #[serde(default)]
    pub dead_lettered: u64,
}

/// `GET /v1/cluster`: the answering node and every member it knows.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    pub node: String,
    #[serde(default)]
    pub ready: bool,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    #[serde(default)]
    pub http_addr: Option<String>,
    /// `joining`, `up`, `suspect`, `down`, ...
    pub status: String,
}

impl ClusterInfo {
    /// The ids of the members this node sees `up`.
    pub fn up(&self) -> impl Iterator<Item = &str> {
        let up = self.members.iter().filter(|m| m.status == "up");
        up.map(|m| m.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_typed_and_unknown_ones_kept_apart() {
        let f = Frame::parse(
            r#"{"type":"message","topic":"t","offset":3,"epoch":"e1","id":"x","time":5,"data":{"a":1},"attempt":2}"#,
        )
        .unwrap();
        let Frame::Message(m) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            (m.offset, m.attempt, m.data["a"].as_u64()),
            (3, Some(2), Some(1))
        );
        let f = Frame::parse(r#"{"type":"subscribed","topic":"t","req":1,"epoch":"e","head":0,"first":1,"recovered":false}"#).unwrap();
        assert_eq!(f.req(), Some(1));
        assert!(matches!(
            f,
            Frame::Subscribed(Subscribed {
                recovered: false,
                ..
            })
        ));
        let f = Frame::parse(r#"{"type":"error","req":7,"code":"invalid_topic","message":"no"}"#);
        assert_eq!(f.unwrap().req(), Some(7));
        assert_eq!(
            Frame::parse(r#"{"type":"unsubscribed","topic":"t","req":2}"#).unwrap(),
            Frame::Other
        );
        assert!(Frame::parse(r#"{"type":"message","offset":"x"}"#).is_err());
    }

    #[test]
    fn a_publish_reply_prints_as_the_node_sent_it() {
        let reply = r#"{"topic":"t","offset":1,"epoch":"e","id":"k","duplicate":false}"#;
        let p: Published = serde_json::from_str(reply).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), reply);
    }
}
