//! The shortest path through the contract: publish, then receive over WebSocket and SSE.

use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn publish_reaches_ws_and_sse_subscribers() {
    let node = TestNode::start("");
    let mut ws = WsClient::connect(&node).await;
    let sub = ws.subscribe("chat", None, None).await;
    assert_eq!(sub["req"], 1);
    assert_eq!(sub["recovered"], true);
    let mut sse = SseClient::connect(&node, "/v1/topics/chat/events", None).await;
    assert_eq!(sse.status, 200);
    let first = sse.next().await.expect("retry event");
    assert_eq!(first.retry, Some(3000));
    // The SSE subscription is registered once the stream is open: publish after that.
    let offset = publish_ok(&node, "chat", json!({"text": "hi"})).await;
    assert_eq!(offset, 1);
    let m = ws.recv_type("message").await;
    assert_eq!(m["offset"], 1);
    assert_eq!(m["data"]["text"], "hi");
    let ev = sse.next_data().await;
    assert_eq!(ev.event, "message");
    assert_eq!(ev.json()["offset"], 1);
    let epoch = m["epoch"].as_str().unwrap();
    assert_eq!(ev.id.as_deref(), Some(format!("1:{epoch}").as_str()));
}
