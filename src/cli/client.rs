//! `starling pub` and `starling sub`: small clients for a person at a terminal.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The data argument as JSON: valid JSON as is, anything else as a JSON string.
fn data_json(data: &str) -> serde_json::Value {
    serde_json::from_str(data).unwrap_or_else(|_| serde_json::Value::String(data.to_string()))
}

fn topic_path(topic: &str) -> String {
    percent_encoding::utf8_percent_encode(topic, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn publish(
    base: &str,
    topic: &str,
    data: &str,
    id: Option<String>,
) -> Result<(), String> {
    let mut body = serde_json::json!({"data": data_json(data)});
    if let Some(id) = id {
        body["id"] = serde_json::Value::String(id);
    }
    let url = format!("{base}/v1/topics/{}/messages", topic_path(topic));
    let res = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = res.status();
    let text = res.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    println!("{text}");
    Ok(())
}

pub async fn subscribe(base: &str, topic: &str, after: Option<u64>) -> Result<(), String> {
    let ws_url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .map_err(|e| format!("cannot connect to {ws_url}: {e}"))?;
    let mut sub = serde_json::json!({"type": "subscribe", "topic": topic, "req": 1});
    if let Some(a) = after {
        sub["after"] = a.into();
    }
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = match serde_json::from_str(&t) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("{}", unparseable(&t, &e));
                            continue;
                        }
                    };
                    match v["type"].as_str() {
                        Some("message") => println!("{t}"),
                        Some("subscribed") => eprintln!(
                            "subscribed to {topic}: epoch {} head {} recovered {}",
                            v["epoch"], v["head"], v["recovered"]
                        ),
                        Some("error") => return Err(format!("{}: {}", v["code"], v["message"])),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                    return Err(format!("server closed the connection {why}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed".into()),
            },
            _ = tokio::signal::ctrl_c() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
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
