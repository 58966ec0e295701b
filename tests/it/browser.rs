//! The browser client (`GET /v1/client.js`) in real headless Chromium, on a page served from
//! another origin than the nodes: its unit tests, each transport (with a lost position
//! announced), a consumer acking from the page, the death of the node the page is connected
//! to, a page from an origin the nodes do not allow, and the example chat.

use crate::browser_harness::{Browser, PageServer};
use crate::cluster_harness::Cluster;
use crate::harness::{enc, get_json, publish, wait_for, TestNode};
use serde_json::{json, Value};

fn allowing(page: &PageServer) -> String {
    format!("[http]\nallowed_origins = [\"{}\"]\n", page.origin())
}

/// Loads the client from `node` into the page as `window.S` and sets up `window.log`, where
/// the page scripts below record what the client did.
async fn load_client(b: &Browser, node: &str) {
    b.run(&format!(
        "window.S = await import('{node}/v1/client.js'); window.log = {{}}; return null;"
    ))
    .await;
}

/// Starts a client named `name` on `nodes` with `transport`, subscribed to `topic` from
/// `after` 0; `window.log[name]` records its messages, resets and states.
async fn subscribe_in_page(
    b: &Browser,
    name: &str,
    nodes: &[String],
    transport: &str,
    topic: &str,
) {
    let nodes = json!(nodes);
    b.run(&format!(
        "const l = window.log['{name}'] = {{messages: [], resets: [], states: []}};
         const c = new S.Starling({nodes}, {{transport: '{transport}'}});
         window['client_{name}'] = c;
         c.on('state', (s) => l.states.push(s));
         const sub = c.subscribe('{topic}', {{after: 0}});
         sub.on('message', (m) => l.messages.push([m.epoch, m.offset, m.data]));
         sub.on('reset', (r) => l.resets.push(r));
         return null;"
    ))
    .await;
}

/// The `(epoch, offset)`s client `name` delivered, once it delivered `n`.
async fn delivered(b: &Browser, name: &str, n: usize) -> Vec<(String, u64)> {
    let v = b
        .wait_js(
            &format!("{n} messages in page client {name}"),
            &format!(
                "window.log['{name}'].messages.length >= {n} && window.log['{name}'].messages"
            ),
        )
        .await;
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap_or("").to_string(),
                m[1].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn offsets(seen: &[(String, u64)]) -> Vec<u64> {
    seen.iter().map(|(_, o)| *o).collect()
}

#[tokio::test]
async fn the_clients_unit_tests_pass_in_chromium() {
    let page = PageServer::start().await;
    let node = TestNode::start(&allowing(&page));
    let b = Browser::open(&format!("{}/blank.html", page.origin())).await;
    let result = b
        .run(&format!(
            "const c = await import('{}/v1/client.js');
             const t = await import('{}/test/unit.js');
             return await t.run(c);",
            node.http(),
            page.origin()
        ))
        .await;
    assert_eq!(result["failures"], json!([]), "{result}");
    assert!(result["passed"].as_u64().unwrap_or(0) > 10, "{result}");
}

#[tokio::test]
async fn a_page_on_another_origin_subscribes_and_publishes_over_each_transport() {
    let page = PageServer::start().await;
    let node = TestNode::start(&allowing(&page));
    let b = Browser::open(&format!("{}/blank.html", page.origin())).await;
    load_client(&b, &node.http()).await;
    for transport in ["websocket", "sse", "poll"] {
        let topic = format!("chat.{transport}");
        subscribe_in_page(&b, transport, &[node.http()], transport, &topic).await;
        b.wait_js(
            &format!("{transport} client connected"),
            &format!("window.log['{transport}'].states.includes('connected')"),
        )
        .await;
        // Published from the page: the replies come back to it.
        let replies = b
            .run(&format!(
                "const c = window['client_{transport}'];
                 const out = [];
                 for (const n of [1, 2, 3]) out.push(await c.publish('{topic}', {{n}}));
                 return out;"
            ))
            .await;
        let replied: Vec<u64> = replies
            .as_array()
            .expect("replies")
            .iter()
            .map(|r| r["offset"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(replied, [1, 2, 3], "{transport}: {replies}");
        // And from outside the page: it arrives too.
        assert_eq!(publish(&node, &topic, json!({"n": 4}), None).await.0, 201);
        let seen = delivered(&b, transport, 4).await;
        assert_eq!(offsets(&seen), [1, 2, 3, 4], "{transport}");
        let data = b
            .run(&format!(
                "return window.log['{transport}'].messages.map((m) => m[2].n);"
            ))
            .await;
        assert_eq!(data, json!([1, 2, 3, 4]), "{transport}");
        // A position in an epoch the topic no longer has is announced, never hidden.
        let stale = b
            .run(&format!(
                "const c = new S.Starling({nodes}, {{transport: '{transport}'}});
                 const sub = c.subscribe('{topic}', {{after: 2, epoch: 'stale1'}});
                 const got = [];
                 const reset = await new Promise((done) => {{
                   sub.on('reset', done);
                   sub.on('message', (m) => got.push(m.offset));
                 }});
                 while (got.length < 4) await new Promise((r) => setTimeout(r, 20));
                 c.close();
                 return {{reset, got}};",
                nodes = json!([node.http()])
            ))
            .await;
        assert_eq!(
            stale["reset"]["reason"], "epoch_changed",
            "{transport}: {stale}"
        );
        assert_eq!(stale["reset"]["first"], 1, "{transport}: {stale}");
        assert_eq!(stale["got"], json!([1, 2, 3, 4]), "{transport}: {stale}");
    }
    let errors = b.console_errors().await;
    assert_eq!(errors, Vec::<String>::new());
}

#[tokio::test]
async fn an_sse_consumer_acks_from_the_page_and_its_ack_floor_moves() {
    let page = PageServer::start().await;
    let node = TestNode::start(&allowing(&page));
    let b = Browser::open(&format!("{}/blank.html", page.origin())).await;
    load_client(&b, &node.http()).await;
    let nodes = json!([node.http()]);
    b.run(&format!(
        "const l = window.log.jobs = {{messages: [], acked: [], failed: [], states: []}};
         const c = new S.Starling({nodes}, {{transport: 'sse'}});
         c.on('state', (s) => l.states.push(s));
         const sub = c.subscribe('jobs', {{consumer: 'workers', after: 0}});
         sub.on('message', (m) => {{
           l.messages.push([m.epoch, m.offset, m.attempt]);
           m.ack().then(() => l.acked.push(m.offset), (e) => l.failed.push(String(e)));
         }});
         return null;"
    ))
    .await;
    b.wait_js(
        "the consumer to connect",
        "window.log.jobs.states.includes('connected')",
    )
    .await;
    for n in 0..3 {
        assert_eq!(publish(&node, "jobs", json!({ "n": n }), None).await.0, 201);
    }
    let seen = delivered(&b, "jobs", 3).await;
    assert_eq!(offsets(&seen), [1, 2, 3]);
    let acks = b
        .wait_js(
            "the page's three acks to be answered",
            "(window.log.jobs.acked.length + window.log.jobs.failed.length >= 3) && window.log.jobs",
        )
        .await;
    assert_eq!(acks["failed"], json!([]), "{acks}");
    let state = wait_for("the page's acks to move the ack floor to 3", || async {
        let (_, v) = get_json(&node, "/v1/topics/jobs/consumers/workers").await;
        (v["ack_floor"] == 3).then_some(v)
    })
    .await;
    assert_eq!(state["pending"], 0, "{state}");
}

#[tokio::test]
async fn a_page_receives_everything_through_another_node_when_its_node_is_killed() {
    let page = PageServer::start().await;
    let mut c = Cluster::start(3, &allowing(&page)).await;
    let nodes: Vec<String> = (0..3).map(|i| c.http(i)).collect();
    let b = Browser::open(&format!("{}/blank.html", page.origin())).await;
    load_client(&b, &nodes[0]).await;
    for transport in ["websocket", "sse"] {
        subscribe_in_page(&b, transport, &nodes, transport, "room").await;
    }
    for n in 0..5 {
        c.publish_id(1, "room", json!({ "n": n }), &format!("before-{n}"))
            .await;
    }
    for transport in ["websocket", "sse"] {
        assert_eq!(offsets(&delivered(&b, transport, 5).await), [1, 2, 3, 4, 5]);
    }
    // Both clients are on the first node they were given: kill it.
    for transport in ["websocket", "sse"] {
        let on = b
            .run(&format!("return window['client_{transport}'].node;"))
            .await;
        assert_eq!(on, json!(nodes[0]), "{transport}");
    }
    c.kill9(0);
    for n in 0..5 {
        c.publish_id(1, "room", json!({ "n": n + 5 }), &format!("after-{n}"))
            .await;
    }
    for transport in ["websocket", "sse"] {
        let seen = delivered(&b, transport, 10).await;
        assert_eq!(offsets(&seen), (1..=10).collect::<Vec<_>>(), "{transport}");
        assert!(
            seen.iter().all(|(e, _)| *e == seen[0].0),
            "{transport}: one epoch"
        );
        let log = b.run(&format!("return window.log['{transport}'];")).await;
        assert_eq!(log["resets"], json!([]), "{transport}");
        let states: Vec<Value> = log["states"].as_array().cloned().unwrap_or_default();
        assert!(
            states.contains(&json!("disconnected")),
            "{transport} never noticed its node die: {states:?}"
        );
    }
    let (status, info) = get_json(c.node(1), &format!("/v1/topics/{}", enc("room"))).await;
    assert_eq!((status, info["head"].as_u64()), (200, Some(10)), "{info}");
}

#[tokio::test]
async fn a_page_from_an_origin_that_is_not_allowed_is_refused() {
    let page = PageServer::start().await;
    let node = TestNode::start(&allowing(&page));
    // The same page server under another origin: not in allowed_origins.
    let b = Browser::open(&format!("{}/blank.html", page.other_origin())).await;
    let url = node.http();
    let ws = url.replace("http://", "ws://");
    let outcome = b
        .run(&format!(
            "const out = {{}};
             try {{
               await fetch('{url}/v1/topics/site/messages', {{method: 'POST',
                 headers: {{'content-type': 'application/json'}}, body: '{{\"data\":1}}'}});
               out.post = 'sent';
             }} catch (e) {{ out.post = e.name; }}
             try {{
               await fetch('{url}/v1/topics/site/messages', {{method: 'POST', body: '{{\"data\":2}}'}});
               out.simple_post = 'sent';
             }} catch (e) {{ out.simple_post = e.name; }}
             try {{ await fetch('{url}/v1/topics/site'); out.get = 'read'; }}
             catch (e) {{ out.get = e.name; }}
             out.sse = await new Promise((done) => {{
               const es = new EventSource('{url}/v1/topics/site/events');
               es.onopen = () => {{ es.close(); done('open'); }};
               es.onerror = () => {{ done(es.readyState === EventSource.CLOSED ? 'closed' : 'retrying'); es.close(); }};
             }});
             out.ws = await new Promise((done) => {{
               const w = new WebSocket('{ws}/v1/ws');
               w.onopen = () => {{ w.close(); done('open'); }};
               w.onclose = (e) => done('closed ' + e.code);
             }});
             return out;"
        ))
        .await;
    assert_eq!(
        outcome,
        json!({"post": "TypeError", "simple_post": "TypeError", "get": "TypeError",
               "sse": "closed", "ws": "closed 1006"})
    );
    // The JSON POST's preflight was refused, so it never ran; the plain-text one (no
    // preflight) was refused by the Origin check.
    let (status, _) = get_json(&node, "/v1/topics/site").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_example_chat_sends_and_shows_messages() {
    let page = PageServer::start().await;
    let node = TestNode::start(&allowing(&page));
    let b = Browser::open(&format!(
        "{}/browser.html?nodes={}&topic=lobby",
        page.origin(),
        node.http()
    ))
    .await;
    b.wait_js(
        "the chat to connect",
        "document.getElementById('state').textContent === 'connected'",
    )
    .await;
    b.run(
        "document.getElementById('name').value = 'ada';
         document.getElementById('text').value = 'hello from the page';
         document.getElementById('form').requestSubmit();
         return null;",
    )
    .await;
    b.wait_js(
        "the page's own message in the chat",
        "document.querySelectorAll('#messages li').length >= 1",
    )
    .await;
    let (status, _) = publish(
        &node,
        "lobby",
        json!({"name": "bob", "text": "hi ada"}),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let shown = b
        .wait_js(
            "both messages in the chat",
            "document.querySelectorAll('#messages li').length >= 2 && \
             [...document.querySelectorAll('#messages li')].map((li) => li.textContent)",
        )
        .await;
    let lines: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        lines[0].contains("ada") && lines[0].contains("hello from the page"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("bob") && lines[1].contains("hi ada"),
        "{lines:?}"
    );
    let (_, info) = get_json(&node, "/v1/topics/lobby").await;
    assert_eq!(info["head"], 2);
}
