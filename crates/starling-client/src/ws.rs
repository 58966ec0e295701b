//! One WebSocket to a node: `GET /v1/ws`, one JSON object per text frame.

use crate::types::{Frame, Published, Subscribed};
use crate::Error;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The raw connection, for a caller that reads frames without parsing them (the bench).
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A `subscribe` frame: a stream from a position, or a consumer group.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Subscribe {
    pub topic: String,
    /// Replay every retained message after this offset (0: from the oldest); `None`: live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// The epoch `after` belongs to, when resuming.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Join this consumer group (acked, at-least-once delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight: Option<u32>,
}

impl Subscribe {
    /// A stream subscription to `topic`, live only.
    pub fn topic(topic: &str) -> Subscribe {
        Subscribe {
            topic: topic.to_string(),
            ..Subscribe::default()
        }
    }

    /// From after `offset`.
    pub fn after(mut self, offset: u64) -> Subscribe {
        self.after = Some(offset);
        self
    }

    /// From a position: after `offset` of `epoch`, or from the oldest for `None`.
    pub fn resume(self, from: &crate::Resume) -> Subscribe {
        match from {
            Some((epoch, offset)) => Subscribe {
                epoch: Some(epoch.clone()),
                ..self.after(*offset)
            },
            None => self.after(0),
        }
    }
}

/// One WebSocket connection.
pub struct WsConn {
    ws: Ws,
}

impl From<Ws> for WsConn {
    fn from(ws: Ws) -> WsConn {
        WsConn { ws }
    }
}

/// The WebSocket URL of the node at `base` (`http://host:port`).
pub fn ws_url(base: &str) -> String {
    format!("{}/v1/ws", base.replacen("http", "ws", 1))
}

impl WsConn {
    /// Connects to the node at `base` within `limit`.
    pub async fn connect(base: &str, limit: Duration) -> Result<WsConn, Error> {
        WsConn::connect_as(base, None, limit).await
    }

    /// Connects with `token` (a JWT, sent as `?token=`, as browsers do).
    pub async fn connect_as(
        base: &str,
        token: Option<&str>,
        limit: Duration,
    ) -> Result<WsConn, Error> {
        let url = match token {
            Some(t) => format!("{}?token={t}", ws_url(base)),
            None => ws_url(base),
        };
        let dial = tokio_tungstenite::connect_async_with_config(url, None, true);
        match tokio::time::timeout(limit, dial).await {
            Ok(Ok((ws, _))) => Ok(WsConn { ws }),
            Ok(Err(e)) => Err(Error::Ws(e.to_string())),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// The raw connection.
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    async fn send<T: Serialize>(
        &mut self,
        kind: &str,
        frame: &T,
        req: Option<u64>,
    ) -> Result<(), Error> {
        let mut v = serde_json::to_value(frame).map_err(|e| Error::Protocol(e.to_string()))?;
        if let Some(fields) = v.as_object_mut() {
            // `type` first, as the protocol writes frames.
            let mut out = serde_json::Map::new();
            out.insert("type".into(), kind.into());
            out.append(fields);
            if let Some(req) = req {
                out.insert("req".into(), req.into());
            }
            v = out.into();
        }
        let sent = self.ws.send(Message::text(v.to_string())).await;
        sent.map_err(|e| Error::Ws(format!("send: {e}")))
    }

    /// Sends a subscribe frame; its answer comes as a frame echoing `req`.
    pub async fn send_subscribe(&mut self, s: &Subscribe, req: u64) -> Result<(), Error> {
        self.send("subscribe", s, Some(req)).await
    }

    /// Subscribes and waits for `subscribed`, within `limit`.
    pub async fn subscribe(
        &mut self,
        s: &Subscribe,
        req: u64,
        limit: Duration,
    ) -> Result<Subscribed, Error> {
        self.send_subscribe(s, req).await?;
        let answer = async {
            loop {
                match self.next().await? {
                    Frame::Subscribed(ok) if ok.req == Some(req) => return Ok(ok),
                    Frame::Error(e) if e.req == Some(req) => {
                        return Err(Error::Refused {
                            code: e.code,
                            message: e.message,
                        })
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Sends a publish of `data`; the answer comes as a frame echoing `req`.
    pub async fn send_publish(
        &mut self,
        topic: &str,
        data: &serde_json::Value,
        id: Option<&str>,
        req: u64,
    ) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Publish<'a> {
            topic: &'a str,
            data: &'a serde_json::Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
        }
        self.send("publish", &Publish { topic, data, id }, Some(req))
            .await
    }

    /// Publishes and waits for its acknowledgement (other frames meanwhile are dropped).
    pub async fn publish(
        &mut self,
        topic: &str,
        data: &serde_json::Value,
        id: Option<&str>,
        req: u64,
    ) -> Result<Published, Error> {
        self.send_publish(topic, data, id, req).await?;
        loop {
            match self.next().await? {
                Frame::Published(p) if p.req == Some(req) => return Ok(p),
                Frame::Error(e) if e.req == Some(req) => {
                    return Err(Error::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                _ => {}
            }
        }
    }

    /// Acks a consumer delivery.
    pub async fn ack(&mut self, topic: &str, consumer: &str, offset: u64) -> Result<(), Error> {
        let frame = serde_json::json!({"topic": topic, "consumer": consumer, "offset": offset});
        self.send("ack", &frame, None).await
    }

    /// Asks for a consumer delivery again, after `delay_ms`.
    pub async fn nack(
        &mut self,
        topic: &str,
        consumer: &str,
        offset: u64,
        delay_ms: u64,
    ) -> Result<(), Error> {
        let frame = serde_json::json!({
            "topic": topic, "consumer": consumer, "offset": offset, "delay_ms": delay_ms,
        });
        self.send("nack", &frame, None).await
    }

    /// Sends a ping; the `pong` echoes `req`.
    pub async fn ping(&mut self, req: u64) -> Result<(), Error> {
        self.send("ping", &serde_json::json!({}), Some(req)).await
    }

    /// The next text frame as received; an error once the connection has ended.
    pub async fn next_text(&mut self) -> Result<String, Error> {
        loop {
            match self.ws.next().await {
                None => return Err(Error::Ended),
                Some(Err(e)) => return Err(Error::Ws(e.to_string())),
                Some(Ok(Message::Close(c))) => {
                    let (code, reason) = c.map_or((0, String::new()), |c| {
                        (u16::from(c.code), c.reason.to_string())
                    });
                    return Err(Error::ClosedBy { code, reason });
                }
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame, typed; frames that are not protocol JSON are skipped.
    pub async fn next(&mut self) -> Result<Frame, Error> {
        loop {
            if let Ok(f) = Frame::parse(&self.next_text().await?) {
                return Ok(f);
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_frames_carry_only_what_was_asked() {
        let live = serde_json::to_value(Subscribe::topic("t")).unwrap();
        assert_eq!(live, serde_json::json!({"topic": "t"}));
        let fresh = serde_json::to_value(Subscribe::topic("t").resume(&None)).unwrap();
        assert_eq!(fresh, serde_json::json!({"topic": "t", "after": 0}));
        let resumed = Subscribe::topic("t").resume(&Some(("e1".into(), 41)));
        assert_eq!(
            serde_json::to_value(resumed).unwrap(),
            serde_json::json!({"topic": "t", "after": 41, "epoch": "e1"})
        );
        let consumer = Subscribe {
            consumer: Some("c".into()),
            max_inflight: Some(1),
            ..Subscribe::topic("t").after(0)
        };
        assert_eq!(
            serde_json::to_value(consumer).unwrap(),
            serde_json::json!({"topic": "t", "after": 0, "consumer": "c", "max_inflight": 1})
        );
        assert_eq!(ws_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/v1/ws");
    }
}
