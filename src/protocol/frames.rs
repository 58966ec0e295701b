//! WebSocket frames: client frames parsed field by field (so that a bad field gets a precise
//! error that still echoes `req`), server frames rendered as JSON text.

use super::error::ApiError;
use super::topic::TopicName;
use crate::protocol::consumer::AckRequest;
use crate::protocol::consumer::ConsumerOptions;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A client's request id, echoed verbatim in the reply (a JSON number).
pub type ReqId = Box<RawValue>;

/// Where a subscription starts and what the client believes the epoch is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Deliver offsets > `after`; `None` means live only.
    pub after: Option<u64>,
    pub epoch: Option<String>,
}

/// A parsed client frame.
#[derive(Debug)]
pub enum ClientFrame {
    Subscribe {
        topic: TopicName,
        position: Position,
        consumer: Option<String>,
        options: ConsumerOptions,
    },
    Unsubscribe {
        topic: TopicName,
    },
    Publish {
        topic: TopicName,
        /// The `data` value as single-line JSON text.
        data: bytes::Bytes,
        id: Option<String>,
    },
    /// `ack` (by `offset` or `upto`) or `nack` (by `offset`, with `delay_ms`).
    Ack {
        topic: TopicName,
        consumer: String,
        ack: AckRequest,
    },
    Ping,
    /// Replaces the connection's token (`{"type":"auth","token":"..."}`).
    Auth {
        token: String,
    },
}

/// A frame that could not be used, with the `req` to echo when one was readable.
#[derive(Debug)]
pub struct FrameError {
    pub req: Option<ReqId>,
    pub error: ApiError,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    req: Option<&'a RawValue>,
    #[serde(borrow)]
    topic: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
    #[serde(borrow)]
    epoch: Option<&'a RawValue>,
    #[serde(borrow)]
    consumer: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    offset: Option<&'a RawValue>,
    #[serde(borrow)]
    upto: Option<&'a RawValue>,
    #[serde(borrow)]
    delay_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    ack_wait_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    max_deliver: Option<&'a RawValue>,
    #[serde(borrow)]
    max_inflight: Option<&'a RawValue>,
    #[serde(borrow)]
    backoff_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
}

/// A present field is `Some`, even when it is `null` (serde's `Option` would make it
/// `None`). Use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn field<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => serde_json::from_str(r.get())
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("`{name}` must be {what}"))),
    }
}

fn required<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    name: &str,
    what: &str,
) -> Result<T, ApiError> {
    field(raw, name, what)?.ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))
}

/// Checks a consumer name: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_consumer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks an epoch: `[A-Za-z0-9]{1,32}`.
pub fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= 32 && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a publisher-supplied message id: 1–128 printable ASCII characters.
pub fn valid_message_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn topic_field(raw: Option<&RawValue>) -> Result<TopicName, ApiError> {
    let name: String = required(raw, "topic", "a string")?;
    TopicName::parse(&name)
}

/// Parses the epoch a client sent; a malformed one is a `bad_request`.
pub fn parse_epoch(epoch: Option<String>) -> Result<Option<String>, ApiError> {
    match epoch {
        Some(e) if !valid_epoch(&e) => Err(ApiError::bad_request(
            "`epoch` must be 1-32 characters of A-Z a-z 0-9",
        )),
        other => Ok(other),
    }
}

/// Parses a publish id; a malformed one is a `bad_request`.
pub fn parse_message_id(id: Option<String>) -> Result<Option<String>, ApiError> {
    match id {
        Some(i) if !valid_message_id(&i) => Err(ApiError::bad_request(
            "`id` must be 1-128 printable ASCII characters",
        )),
        other => Ok(other),
    }
}

/// Parses one text frame. `max_message_bytes` bounds the `data` of a publish.
pub fn parse_client_frame(text: &str, max_message_bytes: usize) -> Result<ClientFrame, FrameError> {
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(FrameError {
            req: None,
            error: ApiError::bad_request("frame is not a JSON object"),
        });
    }
    let fields: Fields = serde_json::from_str(text).map_err(|_| FrameError {
        req: None,
        error: ApiError::bad_request("frame is not a JSON object"),
    })?;
    let req = match fields.req {
        None => None,
        Some(r) if serde_json::from_str::<serde_json::Number>(r.get()).is_ok() => {
            Some(r.to_owned())
        }
        Some(_) => {
            return Err(FrameError {
                req: None,
                error: ApiError::bad_request("`req` must be a number"),
            })
        }
    };
    parse_fields(&fields, max_message_bytes).map_err(|error| FrameError { req, error })
}

/// The `req` of a frame that parsed, for the reply.
pub fn frame_req(text: &str) -> Option<ReqId> {
    let fields: Fields = serde_json::from_str(text).ok()?;
    fields
        .req
        .filter(|r| serde_json::from_str::<serde_json::Number>(r.get()).is_ok())
        .map(|r| r.to_owned())
}

fn parse_fields(f: &Fields, max_message_bytes: usize) -> Result<ClientFrame, ApiError> {
    let kind: String = required(f.kind, "type", "a string")?;
    match kind.as_str() {
        "subscribe" => {
            let consumer: Option<String> = field(f.consumer, "consumer", "a string")?;
            if let Some(c) = &consumer {
                if !valid_consumer_name(c) {
                    return Err(ApiError::bad_request(
                        "`consumer` must be 1-64 characters of A-Z a-z 0-9 _ -",
                    ));
                }
            }
            const N: &str = "a positive integer";
            Ok(ClientFrame::Subscribe {
                topic: topic_field(f.topic)?,
                position: Position {
                    after: field(f.after, "after", "a non-negative integer")?,
                    epoch: parse_epoch(field(f.epoch, "epoch", "a string")?)?,
                },
                consumer,
                options: ConsumerOptions {
                    ack_wait_ms: field(f.ack_wait_ms, "ack_wait_ms", N)?,
                    max_deliver: field(f.max_deliver, "max_deliver", N)?,
                    max_inflight: field(f.max_inflight, "max_inflight", N)?,
                    backoff_ms: field(
                        f.backoff_ms,
                        "backoff_ms",
                        "a list of non-negative integers",
                    )?,
                },
            })
        }
        "auth" => Ok(ClientFrame::Auth {
            token: required(f.token, "token", "a string")?,
        }),
        "unsubscribe" => Ok(ClientFrame::Unsubscribe {
            topic: topic_field(f.topic)?,
        }),
        "publish" => {
            let topic = topic_field(f.topic)?.publishable()?;
            let data = f
                .data
                .ok_or_else(|| ApiError::bad_request("`data` is required"))?;
            if data.get().len() > max_message_bytes {
                return Err(ApiError::too_large(format!(
                    "message data is larger than {max_message_bytes} bytes"
                )));
            }
            Ok(ClientFrame::Publish {
                topic,
                data: super::data::normalize_data(data)?,
                id: parse_message_id(field(f.id, "id", "a string")?)?,
            })
        }
        "ack" | "nack" => {
            const N: &str = "a non-negative integer";
            let topic = topic_field(f.topic)?;
            let consumer: String = required(f.consumer, "consumer", "a string")?;
            let offset: Option<u64> = field(f.offset, "offset", N)?;
            let ack = if kind == "ack" {
                match (offset, field::<u64>(f.upto, "upto", N)?) {
                    (Some(o), None) => AckRequest::Offsets(vec![o]),
                    (None, Some(u)) => AckRequest::Upto(u),
                    _ => {
                        return Err(ApiError::bad_request(
                            "an ack needs exactly one of `offset` and `upto`",
                        ))
                    }
                }
            } else {
                let offset = offset.ok_or_else(|| ApiError::bad_request("`offset` is required"))?;
                AckRequest::Nack {
                    offsets: vec![offset],
                    delay_ms: field(f.delay_ms, "delay_ms", N)?.unwrap_or(0),
                }
            };
            Ok(ClientFrame::Ack {
                topic,
                consumer,
                ack,
            })
        }
        "ping" => Ok(ClientFrame::Ping),
        other => Err(ApiError::bad_request(format!(
            "unknown frame type `{}`",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

/// Renders `{"type":"error","req":..,"code":..,"message":..}`.
pub fn error_frame(req: Option<&RawValue>, error: &ApiError) -> String {
    let mut v = serde_json::json!({"type": "error"});
    if let Some(r) = req {
        v["req"] = serde_json::from_str(r.get()).unwrap_or(serde_json::Value::Null);
    }
    v["code"] = serde_json::Value::from(error.code.as_str());
    v["message"] = serde_json::Value::from(error.message.as_str());
    v.to_string()
}

/// Renders a reply of `kind` with `req` echoed and the given fields.
pub fn reply_frame(kind: &str, req: Option<&RawValue>, fields: serde_json::Value) -> String {
    let mut v = serde_json::json!({"type": kind});
    if let Some(r) = req {
        v["req"] = serde_json::from_str(r.get()).unwrap_or(serde_json::Value::Null);
    }
    if let serde_json::Value::Object(map) = fields {
        for (k, val) in map {
            v[k] = val;
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn parse(s: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(s, 100)
    }

    #[test]
    fn subscribe_with_everything() {
        let f = parse(r#"{"type":"subscribe","topic":"chat","after":41,"epoch":"7f3a","req":1}"#)
            .unwrap();
        match f {
            ClientFrame::Subscribe {
                topic, position, ..
            } => {
                assert_eq!(topic.as_str(), "chat");
                assert_eq!(position.after, Some(41));
                assert_eq!(position.epoch.as_deref(), Some("7f3a"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_keeps_data_text_and_checks_size() {
        match parse(r#"{"type":"publish","topic":"t","data":{"a":[1,2]}}"#).unwrap() {
            ClientFrame::Publish { data, id, .. } => {
                assert_eq!(&data[..], br#"{"a":[1,2]}"#);
                assert_eq!(id, None);
            }
            other => panic!("{other:?}"),
        }
        let big = format!(
            r#"{{"type":"publish","topic":"t","data":"{}","req":9}}"#,
            "x".repeat(200)
        );
        let e = parse(&big).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::TooLarge);
        assert_eq!(e.req.unwrap().get(), "9");
    }

    #[test]
    fn publish_data_is_checked_and_made_one_line() {
        let frame = "{\"type\":\"publish\",\"topic\":\"t\",\"data\":[\n1,\r\n\"a\\nb\"\n]}";
        match parse(frame).unwrap() {
            ClientFrame::Publish { data, .. } => assert_eq!(&data[..], br#"[1,"a\nb"]"#),
            other => panic!("{other:?}"),
        }
        let bad = r#"{"type":"publish","topic":"t","data":["\ud800"],"req":5}"#;
        let e = parse(bad).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert!(
            e.error.message.contains("hex escape"),
            "{}",
            e.error.message
        );
        assert_eq!(e.req.unwrap().get(), "5");
    }

    #[test]
    fn errors_echo_req_and_name_the_field() {
        let e = parse(r#"{"type":"subscribe","topic":"a b","req":7}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidTopic);
        assert_eq!(e.req.unwrap().get(), "7");
        let e = parse(r#"{"type":"subscribe","topic":"a","after":-1,"req":7}"#).unwrap_err();
        assert!(e.error.message.contains("after"));
        let e = parse(r#"{"type":"bogus","req":3}"#).unwrap_err();
        assert!(e.error.message.contains("unknown frame type"));
        let e = parse(r#"{"type":"publish","topic":"$dlq.x","data":1}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Forbidden);
        let e = parse("{not json").unwrap_err();
        assert!(e.req.is_none());
        let e = parse(r#"["ping", 1]"#).unwrap_err();
        assert!(e.error.message.contains("object"));
        assert!(matches!(
            parse(r#"{"type":"publish","topic":"t","data":null}"#),
            Ok(ClientFrame::Publish { .. })
        ));
        let e = parse(r#"{"type":"ping","req":"x"}"#).unwrap_err();
        assert!(e.error.message.contains("req"));
        let e = parse(r#"{"type":"subscribe","topic":"a","epoch":"no-dash"}"#).unwrap_err();
        assert!(e.error.message.contains("epoch"));
    }

    #[test]
    fn replies_echo_req() {
        let req = RawValue::from_string("4".into()).unwrap();
        let s = reply_frame("pong", Some(&req), serde_json::json!({}));
        assert!(s.starts_with(r#"{"type":"pong""#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "pong");
        assert_eq!(v["req"], 4);
        let e = error_frame(Some(&req), &ApiError::bad_request("x"));
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["code"], "bad_request");
        assert_eq!(v["req"], 4);
    }
}
