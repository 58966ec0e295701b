//! The message envelope, serialized once per message and shared by every subscriber.

use crate::protocol::TopicName;
use crate::storage::StoredMessage;
use bytes::Bytes;
use std::sync::Arc;

/// A message's envelope as its topic's owner rendered it, for a node that delivers it.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub offset: u64,
    pub time_ms: u64,
    /// `{"topic":..,"offset":..,"epoch":..,"id":..,"time":..,"data":..}`
    pub bytes: Bytes,
}

/// Renders the envelope of `msg` of `topic` in `epoch`; `attempt` is set on consumer
/// deliveries.
pub fn render(
    topic: &TopicName,
    epoch: &str,
    msg: &StoredMessage,
    attempt: Option<u32>,
) -> Vec<u8> {
    let mut env = Vec::with_capacity(msg.data.len() + topic.as_str().len() + msg.id.len() + 96);
    env.extend_from_slice(b"{\"topic\":");
    push_json_str(&mut env, topic.as_str());
    env.extend_from_slice(b",\"offset\":");
    env.extend_from_slice(msg.offset.to_string().as_bytes());
    env.extend_from_slice(b",\"epoch\":");
    push_json_str(&mut env, epoch);
    env.extend_from_slice(b",\"id\":");
    push_json_str(&mut env, &msg.id);
    env.extend_from_slice(b",\"time\":");
    env.extend_from_slice(msg.time_ms.to_string().as_bytes());
    env.extend_from_slice(b",\"data\":");
    // Stored data is one line; data stored by an older version may not be, and an SSE
    // `data:` line must not break: cut once here, for every subscriber.
    crate::protocol::data::push_one_line(&mut env, &msg.data);
    if let Some(a) = attempt {
        env.extend_from_slice(b",\"attempt\":");
        env.extend_from_slice(a.to_string().as_bytes());
    }
    env.push(b'}');
    env
}

/// One message ready to deliver: the envelope JSON and the WebSocket frame built from it.
#[derive(Debug)]
pub struct Delivery {
    pub topic: TopicName,
    pub epoch: Arc<str>,
    pub offset: u64,
    pub time_ms: u64,
    /// `{"topic":..,"offset":..,"epoch":..,"id":..,"time":..,"data":..}`
    pub envelope: Bytes,
    /// `{"type":"message",...envelope fields}`
    pub ws_frame: Bytes,
    /// When the publish was received, for live deliveries (replays have none): the start of
    /// the publish-to-deliver latency.
    pub received: Option<std::time::Instant>,
}

impl Delivery {
    /// Serializes `msg` of `topic` in `epoch`; `attempt` is set on consumer deliveries.
    pub fn new(
        topic: &TopicName,
        epoch: &Arc<str>,
        msg: &StoredMessage,
        attempt: Option<u32>,
    ) -> Delivery {
        let envelope = Envelope {
            offset: msg.offset,
            time_ms: msg.time_ms,
            bytes: render(topic, epoch, msg, attempt).into(),
        };
        Delivery::from_envelope(topic, epoch, envelope)
    }

    /// A delivery from its envelope (rendered here, or by the topic's owner).
    pub fn from_envelope(topic: &TopicName, epoch: &Arc<str>, envelope: Envelope) -> Delivery {
        let mut ws = Vec::with_capacity(envelope.bytes.len() + 17);
        ws.extend_from_slice(b"{\"type\":\"message\",");
        ws.extend_from_slice(envelope.bytes.get(1..).unwrap_or_default());
        Delivery {
            topic: topic.clone(),
            epoch: epoch.clone(),
            offset: envelope.offset,
            time_ms: envelope.time_ms,
            envelope: envelope.bytes,
            ws_frame: Bytes::from(ws),
            received: None,
        }
    }

    /// Marks a delivery as live, published at `received`.
    pub fn live(mut self, received: std::time::Instant) -> Delivery {
        self.received = Some(received);
        self
    }

    /// What this delivery costs in an outbound queue.
    pub fn cost(&self) -> usize {
        self.ws_frame.len() + 64
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes correctly; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_valid_json_with_every_field() {
        let topic = TopicName::parse("chat").unwrap();
        let epoch: Arc<str> = Arc::from("e1");
        let msg = StoredMessage {
            offset: 42,
            id: "id\"1".into(),
            time_ms: 1_763_800_000_000,
            data: Bytes::from_static(br#"{"any":"json"}"#),
        };
        let d = Delivery::new(&topic, &epoch, &msg, None);
        let v: serde_json::Value = serde_json::from_slice(&d.envelope).unwrap();
        assert_eq!(v["topic"], "chat");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["epoch"], "e1");
        assert_eq!(v["id"], "id\"1");
        assert_eq!(v["time"], 1_763_800_000_000u64);
        assert_eq!(v["data"]["any"], "json");
        assert!(v.get("attempt").is_none());
        let w: serde_json::Value = serde_json::from_slice(&d.ws_frame).unwrap();
        assert_eq!(w["type"], "message");
        assert_eq!(w["offset"], 42);
        assert!(d.ws_frame.starts_with(b"{\"type\":\"message\""));
        let d = Delivery::new(&topic, &epoch, &msg, Some(2));
        let v: serde_json::Value = serde_json::from_slice(&d.envelope).unwrap();
        assert_eq!(v["attempt"], 2);
    }

    #[test]
    fn data_stored_with_line_breaks_renders_on_one_line_as_the_same_json() {
        let topic = TopicName::parse("chat").unwrap();
        let epoch: Arc<str> = Arc::from("e1");
        let msg = StoredMessage {
            offset: 1,
            id: "i".into(),
            time_ms: 1,
            data: Bytes::from_static(b"{\"a\":\n[1,\r\n2], \"s\":\"x\\ny\"}"),
        };
        let d = Delivery::new(&topic, &epoch, &msg, None);
        assert!(!d.envelope.contains(&b'\n') && !d.envelope.contains(&b'\r'));
        let v: serde_json::Value = serde_json::from_slice(&d.envelope).unwrap();
        assert_eq!(v["data"], serde_json::json!({"a": [1, 2], "s": "x\ny"}));
    }
}
