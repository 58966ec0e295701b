// Unit tests of client.js's pure helpers, with no framework: run them in a browser with
//
//   const client = await import("/v1/client.js");
//   const { run } = await import("./unit.js");
//   const { passed, failures } = await run(client);   // failures: [] when all is well
//
// Nothing here touches the network: the Starling instances made below are either closed in
// the same tick, before their first connection attempt, or talk to a simulated node (see
// `simulated`) through a fake EventSource where they need one.

export async function run(client) {
  const { backoffDelay, Position, Deliveries, NodeRing, Starling, StarlingError } = client;
  const { formatEventId, formatMultiEventId } = client;
  let passed = 0;
  const failures = [];
  let current = "";
  const fail = (message) => failures.push(`${current}: ${message}`);
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const eq = (actual, expected, what) => {
    if (same(actual, expected)) passed++;
    else fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  };
  const ok = (cond, what) => (cond ? passed++ : fail(what));
  const throws = (f, code, what) => {
    try {
      f();
      fail(`${what}: did not throw`);
    } catch (e) {
      eq(code === undefined ? e instanceof TypeError : e.code, code === undefined ? true : code, what);
    }
  };
  const rejects = async (promise, code, what) => {
    try {
      await promise;
      fail(`${what}: did not reject`);
    } catch (e) {
      eq(e.code, code, what);
    }
  };
  const test = async (name, body) => {
    current = name;
    try {
      await body();
    } catch (e) {
      fail(`threw ${e && e.stack ? e.stack : e}`);
    }
  };

  await test("backoffDelay stays within full-jitter bounds and grows", () => {
    const b = { minMs: 250, maxMs: 10000 };
    eq(backoffDelay(0, b, () => 0.999999), 0.999999 * 250, "attempt 0, top of range");
    eq(backoffDelay(3, b, () => 1), 2000, "attempt 3 caps at min * 2^3");
    eq(backoffDelay(10, b, () => 1), 10000, "a large attempt caps at maxMs");
    eq(backoffDelay(5000, b, () => 1), 10000, "a huge attempt still caps at maxMs");
    eq(backoffDelay(2, b, () => 0.5), 500, "uniform in [0, cap]: half of 1000");
    eq(backoffDelay(4, b, () => 0), 50, "never below the 50 ms floor");
    eq(backoffDelay(0, { minMs: 10, maxMs: 20 }, () => 1), 50, "the floor wins over a tiny cap");
    let previous = 0;
    for (let attempt = 0; attempt < 8; attempt++) {
      const top = backoffDelay(attempt, b, () => 1);
      ok(top >= previous, `the upper bound does not shrink at attempt ${attempt}`);
      previous = top;
    }
    for (let i = 0; i < 200; i++) {
      const attempt = i % 12;
      const d = backoffDelay(attempt, b);
      const cap = Math.min(10000, 250 * 2 ** attempt);
      ok(d >= 50 && d <= Math.max(50, cap), `random delay ${d} within [50, ${cap}]`);
    }
  });

  await test("Position: new, duplicate, gap and epoch decisions", () => {
    const live = new Position();
    eq(live.check("e1", 42), "new", "nothing known: whatever comes is new");
    const p = new Position("e1", 5);
    eq(p.check("e1", 6), "new", "the next offset");
    eq(p.check("e1", 5), "duplicate", "the same offset");
    eq(p.check("e1", 2), "duplicate", "an older offset");
    eq(p.check("e1", 8), "gap", "a skipped offset");
    eq(p.check("e2", 6), "epoch", "another epoch without a reset");
    p.set("e1", 6);
    eq(p.check("e1", 6), "duplicate", "after advancing, the delivered offset is a duplicate");
    eq(p.check("e1", 7), "new", "after advancing, the next one is new");
    p.reset("e2", 10);
    eq(p.toJSON(), { epoch: "e2", offset: 9 }, "a reset continues before `first` in the new epoch");
    eq(p.check("e2", 10), "new", "after a reset, `first` is new");
    eq(p.check("e1", 10), "epoch", "after a reset, the old epoch is foreign");
    p.reset("e3", 1);
    eq(p.toJSON(), { epoch: "e3", offset: 0 }, "a reset to first=1 is offset 0");
    const start = new Position("e1", 0);
    eq(start.check("e1", 37), "new", "after=0: the oldest retained message is new, whatever its offset");
    eq(start.check("e9", 37), "epoch", "after=0 in a named epoch: another epoch is not");
    const noEpoch = new Position(null, 5);
    eq(noEpoch.check("e7", 5), "duplicate", "an `after` without epoch still drops what it covers");
    eq(noEpoch.check("e7", 6), "new", "an `after` without epoch accepts the next");
  });

  await test("Deliveries: every delivery goes to the application but those of acked offsets", () => {
    const d = new Deliveries(3);
    eq(d.admit("e", 1), "deliver", "a first delivery");
    eq(d.admit("e", 1), "deliver", "the same offset again, not acked: the server needs an ack for it");
    d.ack("e", 1);
    eq(d.admit("e", 1), "ack", "an acked offset delivered again: its ack was lost, send it again");
    eq(d.admit("f", 1), "deliver", "the same offset in another epoch");
    d.ack("e", 2);
    d.ack("e", 3);
    d.ack("e", 1); // acked again: now the latest
    d.ack("e", 4); // four acks with a limit of 3: the oldest (e:2) is forgotten
    eq(d.acked.size, 3, "memory stays bounded");
    eq([d.admit("e", 1), d.admit("e", 2)], ["ack", "deliver"], "the oldest ack is the one forgotten");
  });

  await test("SSE ids: format", () => {
    eq(formatEventId({ offset: 42, epoch: "7f3a9c01" }), "42:7f3a9c01", "single format");
    eq(formatEventId({ offset: 0, epoch: "A" }), "0:A", "offset 0");
    const entries = [
      ["chat", { offset: 42, epoch: "7f3a9c01" }],
      ["a:b", { offset: 7, epoch: "0a1b" }],
      ["c@d.e-f_g", { offset: 0, epoch: "Z9" }],
      ["$dlq.jobs", { offset: 12345678, epoch: "abc" }],
    ];
    const text = formatMultiEventId(entries);
    eq(text, "chat=42:7f3a9c01,a:b=7:0a1b,c@d.e-f_g=0:Z9,$dlq.jobs=12345678:abc", "multi format");
    eq(formatMultiEventId(new Map(entries)), text, "a Map formats the same");
    eq(formatMultiEventId([["a", { offset: 1, epoch: "e" }]]), "a=1:e", "one topic");
  });

  await test("NodeRing: normalizes and rotates", () => {
    const one = new NodeRing("http://127.0.0.1:8080/");
    eq(one.urls, ["http://127.0.0.1:8080"], "a single string, trailing slash dropped");
    eq(one.rotate(), "http://127.0.0.1:8080", "one node rotates onto itself");
    const ring = new NodeRing(["http://a:1", "ws://b:2", "wss://c:3/prefix/", "http://a:1"]);
    eq(ring.urls, ["http://a:1", "http://b:2", "https://c:3/prefix"], "ws(s) mapped to http(s), duplicates dropped");
    eq(ring.current, "http://a:1", "starts at the first");
    eq(ring.rotate(), "http://b:2", "rotates to the second");
    eq(ring.rotate(), "https://c:3/prefix", "then the third");
    eq(ring.rotate(), "http://a:1", "then wraps around");
    eq(ring.key, "http://a:1,http://b:2,https://c:3/prefix", "key names the list");
    throws(() => new NodeRing([]), undefined, "an empty list is refused");
    throws(() => new NodeRing(["ftp://x"]), undefined, "another scheme is refused");
  });

  await test("Starling: argument checks (no network)", async () => {
    throws(() => new Starling("http://127.0.0.1:9", { transport: "carrier-pigeon" }), undefined, "unknown transport");
    // Everything up to close() runs in one tick: the client never gets to connect.
    const c = new Starling(["http://127.0.0.1:9"], { transport: "poll" });
    eq(c.state, "connecting", "a new client is connecting");
    eq(c.transport, "poll", "transport as asked");
    throws(() => c.subscribe("bad topic"), "invalid_topic", "a topic with a space");
    throws(() => c.subscribe("x".repeat(201)), "invalid_topic", "a topic of 201 bytes");
    throws(() => c.subscribe("t", { after: -1 }), "bad_request", "a negative after");
    throws(() => c.subscribe("t", { consumer: "no spaces" }), "bad_request", "a bad consumer name");
    const sub = c.subscribe("t.a:b@c", { after: 3, epoch: "e1" });
    eq(sub.position, { epoch: "e1", offset: 3 }, "position starts at after/epoch");
    eq(c.subscribe("live").position, { epoch: null, offset: null }, "a live subscription knows no position");
    throws(() => c.subscribe("t.a:b@c"), "bad_request", "a second subscription to one topic");
    sub.unsubscribe();
    eq(sub.closed, true, "unsubscribe closes it");
    ok(c.subscribe("t.a:b@c") !== sub, "the topic may be subscribed again");
    const tooLarge = c.publish("t", "x".repeat(70000));
    const invalid = c.publish("$dlq.t!", 1);
    const cyclic = {};
    cyclic.self = cyclic;
    const notJson = c.publish("t", cyclic);
    const pending = c.publish("t", { text: "hi" }, { id: "k1" });
    const states = [];
    c.on("state", (s) => states.push(s));
    c.close();
    eq(states, ["disconnected"], "close() says disconnected");
    throws(() => c.subscribe("u"), "closed", "subscribe after close()");
    await rejects(tooLarge, "too_large", "data over maxMessageBytes");
    await rejects(invalid, "invalid_topic", "publish to an invalid topic");
    await rejects(notJson, "bad_request", "data that is not JSON");
    await rejects(pending, "closed", "close() rejects publishes still waiting");
    await rejects(c.publish("t", 1), "closed", "publish after close()");
    ok(new StarlingError("x", "m") instanceof Error, "StarlingError is an Error");
  });

  await test("Emitter: on returns an unsubscribe function, off removes", () => {
    const c = new Starling("http://127.0.0.1:9", { transport: "poll" });
    const seen = [];
    const offA = c.on("transport", (t) => seen.push(`a:${t}`));
    const b = (t) => seen.push(`b:${t}`);
    c.on("transport", b);
    c._emit("transport", "x");
    offA();
    c.off("transport", b);
    c._emit("transport", "y");
    eq(seen, ["a:x", "b:x"], "handlers run once each, then never");
    c.close();
  });

  // A client whose node is simulated: the node always answers the connection's probe,
  // and every other request waits in `requests` until the test answers it.
  const simulated = (options = {}, nodes = "http://sim:1") => {
    const c = new Starling(nodes, { transport: "poll", ...options });
    const requests = [];
    c._probe = async () => "ok";
    c._request = (method, node, token, path, body) =>
      new Promise((resolve, reject) => requests.push({ method, node, path, body, resolve, reject }));
    return { c, requests };
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const settle = () => sleep(0);
  // Runs `body` with an EventSource that records the ones made (the test may call their
  // onerror) and never connects.
  const withFakeEventSource = async (body) => {
    const real = globalThis.EventSource;
    const opened = [];
    globalThis.EventSource = class {
      constructor(url) {
        this.url = url;
        opened.push(this);
      }
      addEventListener() {}
      close() {}
    };
    try {
      await body(opened);
    } finally {
      globalThis.EventSource = real;
    }
  };
  const envelope = (offset, attempt) => ({ topic: "jobs", offset, epoch: "e1", id: `m${offset}`, time: 1, data: offset, attempt });
  const polled = (messages) => ({ messages, next: messages.at(-1)?.offset ?? 0, epoch: "e1", recovered: true, first: 1, head: 9 });

  await test("A subscription made by a transport or state handler is sent once", async () => {
    const { c, requests } = simulated();
    c.on("transport", () => c.subscribe("early"));
    c.on("state", (s) => s === "connected" && c.subscribe("late"));
    await settle();
    for (const topic of ["early", "late"]) {
      eq(requests.filter((r) => r.path.startsWith(`/v1/topics/${topic}/`)).length, 1, `${topic}: one poll loop`);
    }
    c.close();
  });

  await test("SSE: a start that comes back after its connection failed changes nothing", async () => {
    const { c, requests } = simulated({ transport: "sse" });
    const sub = c.subscribe("t");
    await settle();
    eq(requests.length, 1, "the subscription's start is asked for");
    c._failed(c._conn, {}); // the node fails meanwhile
    requests[0].resolve({ messages: [], next: 7, epoch: "e1", recovered: true, first: 1, head: 7 });
    await settle();
    eq(sub.position, { epoch: null, offset: null }, "the position is the next connection's to learn");
    c.close();
  });

  await test("SSE: a topic that does not exist yet joins the stream at its epoch, not live", () =>
    withFakeEventSource(async (opened) => {
      const { c, requests } = simulated({ transport: "sse" });
      const sub = c.subscribe("new.topic");
      await settle();
      // As a node answers: no info for a topic never written to, but a poll has its epoch.
      const r = requests[0];
      if (r.path.includes("/messages?")) r.resolve({ messages: [], next: 0, epoch: "e1", recovered: true, first: 1, head: 0 });
      else r.reject(new StarlingError("not_found", "topic new.topic does not exist", { status: 404 }));
      await settle();
      eq(sub.position, { epoch: "e1", offset: 0 }, "position");
      eq(opened.length, 1, "the stream is opened");
      eq(new URL(opened[0].url).searchParams.get("last_event_id"), "new.topic=0:e1", "and resumes the topic from 0");
      c.close();
    }));

  await test("SSE: a subscription made while another one's start fails still joins the stream", () =>
    withFakeEventSource(async (opened) => {
      const { c, requests } = simulated({ transport: "sse" });
      const a = c.subscribe("a");
      await settle();
      a.unsubscribe();
      c.subscribe("b");
      requests[0].reject(new StarlingError("forbidden", "not a's", { status: 403 }));
      await settle();
      const b = requests.find((r) => r.path.startsWith("/v1/topics/b"));
      ok(b, "b's start is asked for");
      b?.resolve({ messages: [], next: 3, epoch: "e1", recovered: true, first: 1, head: 3 });
      await settle();
      eq(opened.map((es) => new URL(es.url).searchParams.getAll("topic")), [["b"]], "the stream holds b");
      c.close();
    }));

  await test("SSE: a consumer stream the node refuses ends that subscription, not the connection", () =>
    withFakeEventSource(async (opened) => {
      const { c } = simulated({ transport: "sse" });
      const states = [];
      c.on("state", (s) => states.push(s));
      const sub = c.subscribe("jobs", { consumer: "g", ackWaitMs: 5000 });
      const errors = [];
      sub.on("error", (e) => errors.push(e.code));
      await settle();
      // EventSource hides the status; fetch shows it.
      const realFetch = globalThis.fetch;
      const refusal = { error: { code: "bad_request", message: "`ack_wait_ms` 5000 differs from the group's 2000" } };
      globalThis.fetch = async () => new Response(JSON.stringify(refusal), { status: 400 });
      try {
        opened[0].onerror();
        await settle();
      } finally {
        globalThis.fetch = realFetch;
      }
      eq(errors, ["bad_request"], "the subscription gets the node's error");
      eq(sub.closed, true, "and is closed");
      eq(states, ["connecting", "connected"], "the connection stays");
      c.close();
    }));

  await test("A publish answered \"unavailable\" is sent again, with its id, to the next node", async () => {
    const { c, requests } = simulated({ minReconnectDelayMs: 1 }, ["http://a:1", "http://b:2"]);
    const reply = c.publish("t", 1, { id: "k1" });
    await settle();
    const posts = () => requests.filter((r) => r.method === "POST");
    eq(posts().map((r) => r.node), ["http://a:1"], "sent to the first node");
    posts()[0].reject(new StarlingError("unavailable", "cut off from the majority", { status: 503 }));
    await settle();
    eq(c.node, "http://b:2", "the client moved to the next node");
    await sleep(200); // both backoffs are 50 ms here
    eq(posts().map((r) => [r.node, JSON.parse(r.body).id]), [["http://a:1", "k1"], ["http://b:2", "k1"]], "and sent it there");
    posts()[1]?.resolve({ topic: "t", offset: 1, epoch: "e1", id: "k1", duplicate: false });
    eq((await reply).offset, 1, "the reply");
    c.close();
  });

  await test("Consumer: redeliveries reach the application, acked offsets are acked again", async () => {
    const { c, requests } = simulated();
    const sub = c.subscribe("jobs", { consumer: "w" });
    const got = [];
    sub.on("message", (m) => got.push(m));
    await settle();
    const polls = () => requests.filter((r) => r.path.startsWith("/v1/topics/jobs/messages?"));
    polls()[0].resolve(polled([envelope(1, 1), envelope(2, 1)]));
    await settle();
    got[0].ack();
    // The group's owner crashed before it recorded these deliveries: both come again, as
    // attempt 1.
    polls()[1].resolve(polled([envelope(1, 1), envelope(2, 1)]));
    await settle();
    eq(got.map((m) => [m.offset, m.attempt]), [[1, 1], [2, 1], [2, 1]], "offset 2, never acked, is delivered again");
    const acks = requests.filter((r) => r.path === "/v1/topics/jobs/consumers/w/ack").map((r) => JSON.parse(r.body));
    eq(acks, [{ offsets: [1] }, { offsets: [1] }], "offset 1, acked, is acked again instead");
    c.close();
  });

  await test("An ack waiting to be retried is not sent after close()", async () => {
    const { c, requests } = simulated({ minReconnectDelayMs: 1 });
    const sub = c.subscribe("jobs", { consumer: "w" });
    let message;
    sub.on("message", (m) => (message = m));
    await settle();
    requests[0].resolve(polled([envelope(1, 1)]));
    await settle();
    const acked = message.ack();
    const acks = () => requests.filter((r) => r.path.endsWith("/ack"));
    acks()[0].reject(new StarlingError("unavailable", "no answer", { status: 0 }));
    await settle(); // the retry waits 50 ms
    c.close();
    const outcome = await Promise.race([acked.then(() => "resolved", (e) => e.code), sleep(200).then(() => "pending")]);
    eq(outcome, "closed", "the ack's promise rejects");
    eq(acks().length, 1, "and it was not sent again");
  });

  await test("The probe: a node that answers serves, unless it refuses the token", async () => {
    const c = new Starling("http://sim:1", { transport: "poll" });
    const verdicts = [0, 401, 403, 404, 429, 500, 503].map((status) => {
      c._request = async () => {
        throw new StarlingError("x", "y", { status });
      };
      return c._probe("http://sim:1", null);
    });
    c.close();
    eq(await Promise.all(verdicts), ["down", "auth", "ok", "ok", "ok", "down", "down"], "0 401 403 404 429 500 503");
  });

  return { passed, failures };
}
