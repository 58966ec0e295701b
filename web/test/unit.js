// Unit tests of client.js's pure helpers, with no framework: run them in a browser with
//
//   const client = await import("/v1/client.js");
//   const { run } = await import("./unit.js");
//   const { passed, failures } = await run(client);   // failures: [] when all is well
//
// Nothing here touches the network: the Starling instances made below are closed in the
// same tick, before their first connection attempt.

export async function run(client) {
  const { backoffDelay, Position, Deliveries, NodeRing, Starling, StarlingError } = client;
  const { formatEventId, parseEventId, formatMultiEventId, parseMultiEventId } = client;
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

  await test("Deliveries: consumer redeliveries pass, repeats of one attempt do not", () => {
    const d = new Deliveries(3);
    eq(d.admit("e", 1, 1), true, "a first delivery");
    eq(d.admit("e", 1, 1), false, "the same attempt again");
    eq(d.admit("e", 1, 2), true, "a redelivery (attempt 2)");
    eq(d.admit("e", 1, 1), false, "an older attempt after a newer one");
    eq(d.admit("f", 1, 1), true, "the same offset in another epoch");
    eq(d.admit("e", 2), true, "attempt defaults to 1");
    eq(d.admit("e", 2, 1), false, "and counts as attempt 1");
    d.admit("e", 3, 1); // four keys with a limit of 3: the oldest (e:1) is forgotten
    eq(d.seen.size, 3, "memory stays bounded");
    eq(d.admit("e", 1, 2), true, "a forgotten delivery is admitted again");
  });

  await test("SSE ids: parse and format round trips", () => {
    eq(formatEventId({ offset: 42, epoch: "7f3a9c01" }), "42:7f3a9c01", "single format");
    eq(parseEventId("42:7f3a9c01"), { offset: 42, epoch: "7f3a9c01" }, "single parse");
    eq(parseEventId("0:A"), { offset: 0, epoch: "A" }, "offset 0 parses");
    for (const bad of ["", "42", ":e", "x:e", "-1:e", "42:", "42:e-f", "1:2:3", "4 2:e", `1:${"a".repeat(33)}`]) {
      eq(parseEventId(bad), null, `bad single id ${JSON.stringify(bad)}`);
    }
    const entries = [
      ["chat", { offset: 42, epoch: "7f3a9c01" }],
      ["a:b", { offset: 7, epoch: "0a1b" }],
      ["c@d.e-f_g", { offset: 0, epoch: "Z9" }],
      ["$dlq.jobs", { offset: 12345678, epoch: "abc" }],
    ];
    const text = formatMultiEventId(entries);
    eq(text, "chat=42:7f3a9c01,a:b=7:0a1b,c@d.e-f_g=0:Z9,$dlq.jobs=12345678:abc", "multi format");
    eq(parseMultiEventId(text), entries, "multi round trip, in order");
    eq(formatMultiEventId(new Map(entries)), text, "a Map formats the same");
    eq(parseMultiEventId("a=42:ep"), [["a", { offset: 42, epoch: "ep" }]], "one topic");
    for (const bad of ["", "a", "a=1", "a=1:e,", "=1:e", "a b=1:e", "a=1:e,b", "a=b=1:e"]) {
      eq(parseMultiEventId(bad), null, `bad multi id ${JSON.stringify(bad)}`);
    }
    for (let i = 0; i < 50; i++) {
      const n = 1 + (i % 4);
      const gen = Array.from({ length: n }, (_, k) => [
        `t${i}.${k}:x@y-${"_".repeat(k)}`,
        { offset: Math.floor(Math.random() * 1e12), epoch: Math.random().toString(36).slice(2, 10) || "e" },
      ]);
      eq(parseMultiEventId(formatMultiEventId(gen)), gen, `generated round trip ${i}`);
    }
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

  return { passed, failures };
}
