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
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
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
