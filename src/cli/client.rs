//! `starling pub`, `starling sub` and `starling recover-shard`: small clients for a person
//! at a terminal, on the typed client crate.

use starling_client::{Client, Error, Frame, Subscribe, WsConn};
use std::time::Duration;

/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The data argument as JSON: valid JSON as is, anything else as a JSON string.
fn data_json(data: &str) -> serde_json::Value {
    serde_json::from_str(data).unwrap_or_else(|_| serde_json::Value::String(data.to_string()))
}

pub async fn publish(
    base: &str,
    token: Option<String>,
    topic: &str,
    data: &str,
    id: Option<String>,
) -> Result<(), String> {
    let client = Client::new(base).token(token);
    let published = client.publish(topic, &data_json(data), id.as_deref()).await;
    print_reply(base, published)
}

/// Prints a node's reply as one JSON line, or says why there is none.
fn print_reply<T: serde::Serialize>(base: &str, reply: Result<T, Error>) -> Result<(), String> {
    let reply = match reply {
        Ok(reply) => reply,
        Err(Error::Api {
            status,
            code,
            message,
        }) => return Err(format!("HTTP {status}: {code}: {message}")),
        Err(e) => return Err(format!("cannot reach {base}: {e}")),
    };
    let line = serde_json::to_string(&reply).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

/// `starling recover-shard`: asks the node at `base` to recover `shard` from its copy.
pub async fn recover_shard(
    base: &str,
    token: Option<String>,
    shard: u32,
    yes: bool,
    force: bool,
) -> Result<(), String> {
    if !yes {
        return Err(format!(
            "recovering shard {shard} starts it anew from {base}'s copy under new epochs: acknowledged messages that copy lacks are lost for good. Use it only when a majority of the shard's voters lost their data, and add --yes"
        ));
    }
    let client = Client::new(base).token(token);
    print_reply(base, client.recover_shard(shard, force).await)
}

pub async fn subscribe(
    base: &str,
    token: Option<String>,
    topic: &str,
    after: Option<u64>,
) -> Result<(), String> {
    let mut ws = WsConn::connect_as(base, token.as_deref(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", starling_client::ws_url(base)))?;
    let mut sub = Subscribe::topic(topic);
    sub.after = after;
    ws.send_subscribe(&sub, 1)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let text = tokio::select! {
            text = ws.next_text() => text.map_err(|e| match e {
                Error::ClosedBy { code, reason } => {
                    format!("server closed the connection {code} {reason}")
                }
                e => e.to_string(),
            })?,
            _ = tokio::signal::ctrl_c() => {
                ws.close().await;
                return Ok(());
            }
        };
        match Frame::parse(&text) {
            Ok(Frame::Message(_)) => println!("{text}"),
            Ok(Frame::Subscribed(s)) => eprintln!(
                "subscribed to {topic}: epoch {:?} head {} recovered {}",
                s.epoch, s.head, s.recovered
            ),
            Ok(Frame::Error(e)) => return Err(format!("{:?}: {:?}", e.code, e.message)),
            Ok(_) => {}
            Err(e) => eprintln!("{}", unparseable(&text, &e)),
        }
    }
}
/// The line `sub` prints for a frame it cannot parse, rather than skipping it: the offset if
/// the text shows one, the error, and the frame itself on one line.
fn unparseable(frame: &str, e: &serde_json::Error) -> String {
    const KEY: &str = "\"offset\":";
    let offset = frame.find(KEY).and_then(|at| {
        let digits = &frame[at + KEY.len()..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse::<u64>().ok()
    });
    let which = match offset {
        Some(o) => format!("message at offset {o}"),
        None => "frame".to_string(),
    };
    format!("error: cannot parse a {which} ({e}); as received: {frame:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparseable_frame_is_reported_with_its_offset_on_one_line() {
        let frame = "{\"type\":\"message\",\"offset\":17,\"data\":[\n\"\\ud800\"]}";
        let e = serde_json::from_str::<serde_json::Value>(frame).unwrap_err();
        let line = unparseable(frame, &e);
        assert!(line.contains("message at offset 17"), "{line}");
        assert!(line.contains("ud800"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let e = serde_json::from_str::<serde_json::Value>("{x").unwrap_err();
        assert!(unparseable("{x", &e).contains("cannot parse a frame"));
    }
}
