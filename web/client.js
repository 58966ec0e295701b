// Starling browser client: a dependency-free ES module (ES2020), served by every node at
// GET /v1/client.js, with its TypeScript declarations at GET /v1/client.d.ts.
//
//   import { Starling } from "http://127.0.0.1:8080/v1/client.js";
//   const client = new Starling(["http://127.0.0.1:8080", "http://127.0.0.1:8081"], {
//     transport: "auto",                 // "websocket" | "sse" | "poll" | "auto"
//     getToken: async () => jwt,         // or token: "<jwt>"
//   });
//   client.on("state", (s) => {});       // "connecting" | "connected" | "disconnected"
//   const sub = client.subscribe("chat", { after: 0 });  // or {}, { after, epoch }, { consumer }
//   sub.on("message", (m) => {});        // m: {topic, offset, epoch, id, time, data}
//                                        //    consumers: also m.attempt, m.ack(), m.nack(ms)
//   sub.on("reset", (r) => {});          // a lost position: {epoch, first, head, reason}
//   const reply = await client.publish("chat", { text: "hi" });  // {topic, offset, epoch, id, duplicate}
//   client.close();
//
// The client connects to one node at a time and moves to the next one in the list when a
// connection fails, reconnecting with full-jitter exponential backoff. Every subscription
// resumes from its own (epoch, offset); a stream message is never delivered twice, and a
// lost position is always announced with a "reset" event. Every publish carries an
// idempotency id (a random UUID unless you pass one), so it is retried after a failover
// without being written twice. The exports other than Starling and StarlingError are
// internal helpers, exported for the unit tests (web/test/unit.js); they may change
// without notice.

const DEFAULTS = {
  transport: "auto",
  token: null,
  getToken: null,
  minReconnectDelayMs: 250,
  maxReconnectDelayMs: 10000,
  heartbeatIntervalMs: 15000,
  heartbeatTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  requestTimeoutMs: 15000,
  publishTimeoutMs: 60000,
  pollTimeoutSecs: 25,
  maxMessageBytes: 65536,
  withCredentials: false,
};
const TRANSPORTS = ["auto", "websocket", "sse", "poll"];
/** What `auto` tries when a node is reachable but a transport cannot connect to it. */
const FALLBACK = { websocket: "sse", sse: "poll" };
/** No reconnect waits less than this, whatever the jitter draws. */
const BACKOFF_FLOOR_MS = 50;
/** A connection that lived this long resets the backoff. */
const HEALTHY_AFTER_MS = 10000;
/** How long `auto` remembers a fallback before trying WebSocket again. */
const MEMORY_TTL_MS = 24 * 3600 * 1000;
const MEMORY_KEY = "starling.transport:";
/** Server error codes worth retrying (a publish carries an id, so a retry is safe). */
const RETRYABLE = new Set(["unavailable", "rate_limited"]);
/** How often an ack or nack is sent before its promise rejects. */
const ACK_TRIES = 5;
/** Marks a publish waiting for its retry timer. */
const RETRY = "retry";
const TOPIC_RE = /^(\$dlq\.)?[A-Za-z0-9_.:@-]{1,200}$/;
const CONSUMER_RE = /^[A-Za-z0-9_-]{1,64}$/;
const EPOCH_RE = /^[A-Za-z0-9]{1,32}$/;
const CONSUMER_OPTIONS = {
  ackWaitMs: "ack_wait_ms",
  maxDeliver: "max_deliver",
  maxInflight: "max_inflight",
  backoffMs: "backoff_ms",
};
const enc = encodeURIComponent;

/** An error with the server's (or the client's) error `code`. */
export class StarlingError extends Error {
  constructor(code, message, extra) {
    super(message);
    this.name = "StarlingError";
    this.code = code;
    Object.assign(this, extra);
  }
}

// ---- Pure helpers (internal; exported for the unit tests) ---------------------------------

/**
 * Internal. Full-jitter exponential backoff: uniform in [0, min(maxMs, minMs * 2^attempt)],
 * but never below BACKOFF_FLOOR_MS (50 ms), so a failing node is never hammered in a loop.
 */
export function backoffDelay(attempt, { minMs, maxMs }, random = Math.random) {
  const cap = Math.min(maxMs, minMs * 2 ** attempt);
  return Math.max(BACKOFF_FLOOR_MS, random() * cap);
}

/**
 * Internal. A stream subscription's position: the epoch and offset of the last message
 * delivered (or of the point to resume after). `offset` null: nothing known yet (live);
 * `offset` 0: before the oldest retained message, so whatever comes first is new; `epoch`
 * null: the epoch is not known yet (an `after` given without one).
 */
export class Position {
  constructor(epoch = null, offset = null) {
    this.set(epoch, offset);
  }

  /**
   * What an incoming (epoch, offset) is: "new" (the next one), "duplicate" (already
   * delivered), "gap" (offsets were skipped) or "epoch" (another epoch, unannounced).
   * A new epoch may only arrive through reset(); "gap" and "epoch" mean a lost position
   * the server did not announce, which the client reports as a reset.
   */
  check(epoch, offset) {
    if (this.epoch !== null && epoch !== this.epoch) return "epoch";
    if (this.offset === null || this.offset === 0) return "new";
    if (offset <= this.offset) return "duplicate";
    return offset === this.offset + 1 ? "new" : "gap";
  }

  set(epoch, offset) {
    this.epoch = epoch;
    this.offset = offset;
  }

  /** A lost position: continue in `epoch` from its oldest retained offset `first`. */
  reset(epoch, first) { this.set(epoch, Math.max(0, first - 1)); }

  toJSON() { return { epoch: this.epoch, offset: this.offset }; }
}

/**
 * Internal. What a consumer subscription does with a delivery. The server delivers an
 * offset again only when it has no ack for it: the delivery was not acked in time, was
 * nacked, its connection dropped, or the group's owner crashed before it recorded the
 * delivery or the ack (then even the attempt number can repeat). So every delivery goes to
 * the application ("deliver"), except one of an offset the application acked already: its
 * ack was lost, and is sent again instead ("ack"). Remembers the latest `limit` acks.
 */
export class Deliveries {
  constructor(limit = 10000) {
    this.limit = limit;
    this.acked = new Set();
  }

  admit(epoch, offset) {
    return this.acked.has(`${epoch}:${offset}`) ? "ack" : "deliver";
  }

  /** The application acked (epoch, offset). */
  ack(epoch, offset) {
    const key = `${epoch}:${offset}`;
    this.acked.delete(key);
    this.acked.add(key);
    if (this.acked.size > this.limit) this.acked.delete(this.acked.values().next().value);
  }
}

/** Internal. A single-topic SSE event id: `<offset>:<epoch>`. */
export function formatEventId({ offset, epoch }) {
  return `${offset}:${epoch}`;
}

/**
 * Internal. A multi-topic SSE event id, `a=42:7f3a,b=7:0a1b`, from [topic, {offset, epoch}]
 * pairs (topic names never contain `,` or `=`).
 */
export function formatMultiEventId(entries) {
  return Array.from(entries, ([topic, pos]) => `${topic}=${formatEventId(pos)}`).join(",");
}

/**
 * Internal. The node URLs, in order of preference, and the one in use. URLs are
 * normalized to `http(s)://host[:port][/path]` (ws:// and wss:// are accepted).
 */
export class NodeRing {
  constructor(urls) {
    const list = (typeof urls === "string" ? [urls] : Array.from(urls ?? [])).map(normalizeNode);
    if (!list.length) throw new TypeError("Starling: give at least one node URL");
    this.urls = [...new Set(list)];
    this.index = 0;
  }

  get current() { return this.urls[this.index]; }

  /** Moves to the next node (wrapping around) and returns it. */
  rotate() {
    this.index = (this.index + 1) % this.urls.length;
    return this.current;
  }

  /** Identifies this list of nodes (for remembering what worked with it). */
  get key() { return this.urls.join(","); }
}

function normalizeNode(url) {
  const u = new URL(String(url), globalThis.location?.href);
  const scheme = { "ws:": "http:", "wss:": "https:" }[u.protocol] ?? u.protocol;
  if (scheme !== "http:" && scheme !== "https:") {
    throw new TypeError(`Starling: node URL must be http(s):// or ws(s)://, not ${url}`);
  }
  return `${scheme}//${u.host}${u.pathname.replace(/\/+$/, "")}`;
}

// ---- Small pieces ---------------------------------------------------------------------------

/** on/off/emit; a throwing handler is reported (uncaught, asynchronously), never breaks us. */
class Emitter {
  constructor() { this._handlers = new Map(); }

  /** Adds a handler; returns a function that removes it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) { this._handlers.get(event)?.delete(fn); }

  _emit(event, value) {
    for (const fn of [...(this._handlers.get(event) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
  }

  _listens(event) { return (this._handlers.get(event)?.size ?? 0) > 0; }
}

function checkTopic(topic) {
  if (typeof topic !== "string" || !TOPIC_RE.test(topic)) {
    throw new StarlingError("invalid_topic", `invalid topic name: ${String(topic).slice(0, 64)}`);
  }
}

function newId() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const bytes = c?.getRandomValues
    ? c.getRandomValues(new Uint8Array(16))
    : Uint8Array.from({ length: 16 }, () => Math.floor(Math.random() * 256));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function codeForStatus(status) {
  const codes = { 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large", 429: "rate_limited" };
  return codes[status] ?? (status >= 500 ? "unavailable" : "bad_request");
}

function recall(key) {
  try {
    const m = JSON.parse(localStorage.getItem(MEMORY_KEY + key));
    const fresh = m && Date.now() - m.at < MEMORY_TTL_MS;
    return fresh && (m.transport === "sse" || m.transport === "poll") ? m.transport : null;
  } catch {
    return null;
  }
}

function remember(key, transport) {
  try {
    if (transport === "websocket") localStorage.removeItem(MEMORY_KEY + key);
    else if (recall(key) !== transport) {
      localStorage.setItem(MEMORY_KEY + key, JSON.stringify({ transport, at: Date.now() }));
    }
  } catch {
    // Storage may be unavailable (privacy settings, sandboxed frames): remember nothing.
  }
}

// ---- Subscription -----------------------------------------------------------------------------

/** One subscription of a client (see client.d.ts). */
class Subscription extends Emitter {
  constructor(client, topic, opts) {
    super();
    this.topic = topic;
    this.consumer = opts.consumer ?? null;
    this.closed = false;
    this._client = client;
    const after = opts.after ?? null;
    this._after = after;
    this._pos = new Position(after === null ? null : opts.epoch ?? null, after);
    this._seen = this.consumer ? new Deliveries() : null;
    this._tries = 0;
    this._options = {};
    for (const [camel, snake] of Object.entries(CONSUMER_OPTIONS)) {
      if (opts[camel] !== undefined) this._options[snake] = opts[camel];
    }
  }

  /** {epoch, offset} of the last message delivered (or where the subscription resumes). */
  get position() { return this._pos.toJSON(); }

  unsubscribe() { this._client._unsubscribe(this); }

  /** Where to start: subscribe-frame fields (the query parameters are the same names). */
  _start() {
    if (this.consumer) {
      const f = { consumer: this.consumer, ...this._options };
      if (this._after !== null) f.after = this._after;
      return f;
    }
    const f = {};
    if (this._pos.offset !== null) f.after = this._pos.offset;
    if (this._pos.offset !== null && this._pos.epoch !== null) f.epoch = this._pos.epoch;
    return f;
  }

  _query(extra) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...this._start(), ...extra })) {
      q.set(k, Array.isArray(v) ? v.join(",") : String(v));
    }
    return q;
  }
}

// ---- The client ---------------------------------------------------------------------------------

export class Starling extends Emitter {
  constructor(nodes, options = {}) {
    super();
    this._ring = new NodeRing(nodes);
    this._opt = { ...DEFAULTS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) this._opt[k] = v;
    if (!TRANSPORTS.includes(this._opt.transport)) {
      throw new TypeError(`Starling: transport must be one of ${TRANSPORTS.join(", ")}`);
    }
    this._auto = this._opt.transport === "auto";
    this._transport = this._auto ? recall(this._ring.key) ?? "websocket" : this._opt.transport;
    this._subs = new Map(); // topic -> Subscription
    this._outbox = new Set(); // publishes waiting for their reply
    this._conn = null; // the connection being opened or in use
    this._token = null;
    this._state = null;
    this._shownTransport = null;
    this._attempt = 0;
    this._timer = null; // the next reconnect
    this._healthy = null;
    this._closed = false;
    this._onOnline = () => this._online();
    globalThis.addEventListener?.("online", this._onOnline);
    queueMicrotask(() => this._connect());
  }

  /** "connecting" | "connected" | "disconnected" */
  get state() { return this._state ?? "connecting"; }

  /** The transport in use (or being tried). */
  get transport() { return this._transport; }

  /** The node in use (or being tried). */
  get node() { return this._ring.current; }

  subscribe(topic, opts = {}) {
    checkTopic(topic);
    if (this._closed) throw new StarlingError("closed", "the client is closed");
    if (this._subs.has(topic)) {
      throw new StarlingError("bad_request", `already subscribed to ${topic}; unsubscribe first`);
    }
    const { after, epoch, consumer } = opts;
    if (after != null && !(Number.isSafeInteger(after) && after >= 0)) {
      throw new StarlingError("bad_request", "`after` must be a non-negative integer");
    }
    if (epoch != null && !EPOCH_RE.test(epoch)) {
      throw new StarlingError("bad_request", "`epoch` must be 1-32 characters of A-Z a-z 0-9");
    }
    if (consumer != null && !CONSUMER_RE.test(consumer)) {
      throw new StarlingError("bad_request", "`consumer` must be 1-64 characters of A-Z a-z 0-9 _ -");
    }
    const sub = new Subscription(this, topic, opts);
    this._subs.set(topic, sub);
    this._live()?.subscribe(sub);
    return sub;
  }

  publish(topic, data, { id } = {}) {
    try {
      checkTopic(topic);
      if (this._closed) throw new StarlingError("closed", "the client is closed");
      const json = JSON.stringify(data === undefined ? null : data);
      if (json === undefined) throw new StarlingError("bad_request", "data must be JSON-serializable");
      const bytes = new TextEncoder().encode(json).length;
      if (bytes > this._opt.maxMessageBytes) {
        throw new StarlingError("too_large", `message data is ${bytes} bytes, more than ${this._opt.maxMessageBytes}`);
      }
      const p = { topic, json, id: id ?? newId(), conn: null, tries: 0, last: null, retry: null };
      return new Promise((resolve, reject) => {
        Object.assign(p, { resolve, reject });
        p.timer = setTimeout(() => {
          const why = p.last ? ` (last error: ${p.last.code}: ${p.last.message})` : "";
          this._settle(p, new StarlingError("unavailable",
            `no reply within ${this._opt.publishTimeoutMs} ms${why}; publishing again with the same id is safe`,
            { id: p.id }));
        }, this._opt.publishTimeoutMs);
        this._outbox.add(p);
        if (this._live()) this._send(p);
      });
    } catch (e) {
      return Promise.reject(e instanceof StarlingError ? e : new StarlingError("bad_request", e.message));
    }
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._healthy);
    globalThis.removeEventListener?.("online", this._onOnline);
    this._conn?.close();
    this._conn = null;
    for (const sub of this._subs.values()) sub.closed = true;
    this._subs.clear();
    for (const p of [...this._outbox]) {
      this._settle(p, new StarlingError("closed", "the client was closed before the reply", { id: p.id }));
    }
    this._setState("disconnected");
  }

  // ---- connection life ----

  /** The open connection, if any. */
  _live() { return this._conn?.ready ? this._conn : null; }

  async _connect() {
    this._timer = null;
    if (this._closed) return;
    this._setState("connecting");
    try {
      const o = this._opt;
      this._token = o.getToken ? await o.getToken() : o.token;
    } catch (e) {
      if (this._closed) return;
      this._error("unauthorized", `getToken failed: ${e?.message ?? e}`);
      return this._retry(false, this._backoff());
    }
    if (this._closed) return;
    const Conn = this._transport === "websocket" ? WsConn : HttpConn;
    const conn = (this._conn = new Conn(this, this._ring.current, this._token, this._transport));
    try {
      conn.open();
    } catch (e) {
      // e.g. a ws:// node from an https:// page: the constructor throws.
      this._error("unavailable", `cannot connect to ${conn.node}: ${e.message}`);
      this._failed(conn, {});
    }
  }

  _opened(conn) {
    if (conn !== this._conn || this._closed) return;
    conn.ready = true;
    if (this._auto) remember(this._ring.key, conn.kind);
    this._healthy = setTimeout(() => (this._attempt = 0), HEALTHY_AFTER_MS);
    for (const sub of this._subs.values()) conn.subscribe(sub);
    for (const p of this._outbox) if (p.conn === null) this._send(p);
    // Handlers run last: one that subscribes or publishes is sent once, not again above.
    if (this._shownTransport !== conn.kind) {
      this._shownTransport = conn.kind;
      this._emit("transport", conn.kind);
    }
    if (conn === this._conn) this._setState("connected");
  }

  /**
   * A connection failed. `code`: a WebSocket close code, "unauthorized" or "heartbeat";
   * `preOpen`: it never opened, so the node is probed to tell a dead node from a transport
   * that cannot get through (auto then falls back) or a refused token.
   */
  async _failed(conn, { code, preOpen = false, reason = "" } = {}) {
    if (conn !== this._conn) return;
    this._conn = null;
    conn.close();
    clearTimeout(this._healthy);
    for (const p of this._outbox) if (p.conn === conn) p.conn = null;
    this._setState("disconnected");
    if (this._closed) return; // also when a "state" handler closed the client just now
    let auth = code === 4001 || code === "unauthorized";
    if (preOpen && !auth) {
      const probe = await this._probe(conn.node, conn.token);
      if (this._closed) return;
      auth = probe === "auth";
      if (probe === "ok" && this._auto && FALLBACK[conn.kind]) {
        this._transport = FALLBACK[conn.kind];
        return this._retry(false, 0);
      }
    }
    if (auth) {
      this._error("unauthorized", "the node refused the token; reconnecting with a fresh one");
      return this._retry(false, this._backoff());
    }
    if (code === 1001) {
      // The node is shutting down: go to the next one now (unless that keeps happening).
      const first = this._attempt === 0;
      const delay = this._backoff();
      return this._retry(true, first ? 0 : delay);
    }
    if (code === 4008) return this._retry(false, this._backoff()); // slow consumer: resume here
    if (code === 4000 || code === 4003) {
      this._error(code === 4000 ? "bad_request" : "forbidden", `the node closed the connection (${code} ${reason})`);
      return this._retry(true, this._opt.maxReconnectDelayMs);
    }
    this._retry(true, this._backoff());
  }

  /** The next reconnect delay (`attempt`: this client's, a publish's or a subscription's). */
  _backoff(attempt = this._attempt++) {
    const o = this._opt;
    return backoffDelay(attempt, { minMs: o.minReconnectDelayMs, maxMs: o.maxReconnectDelayMs });
  }

  _retry(rotate, delay) {
    if (rotate) this._ring.rotate();
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /** The browser is back online: reconnect now, or check that the connection still lives. */
  _online() {
    if (this._timer) {
      clearTimeout(this._timer);
      this._attempt = 0;
      this._connect();
    } else {
      this._live()?.check(true);
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit("state", state);
  }

  _error(code, message) { this._emit("error", new StarlingError(code, message)); }

  // ---- HTTP ----

  /** A JSON request; rejects with a StarlingError (`status` 0: no answer, or a timeout). */
  async _request(method, node, token, path, body, timeoutMs = this._opt.requestTimeoutMs, signal) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    const abort = () => ctl.abort();
    signal?.addEventListener("abort", abort);
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res, text;
    try {
      res = await fetch(node + path, {
        method, headers, body, signal: ctl.signal, cache: "no-store",
        credentials: this._opt.withCredentials ? "include" : "same-origin",
      });
      text = await res.text();
    } catch (e) {
      const why = ctl.signal.aborted ? `no answer within ${timeoutMs} ms` : e.message;
      throw new StarlingError("unavailable", `${method} ${node}${path}: ${why}`, { status: 0 });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
    const json = parseJson(text);
    if (res.ok) {
      if (json !== null) return json;
      // A 2xx that is not JSON comes from something in front of the node (a captive portal).
      throw new StarlingError("unavailable", `${method} ${node}${path}: not a JSON reply`, { status: 0 });
    }
    const err = json?.error;
    throw new StarlingError(err?.code ?? codeForStatus(res.status),
      err?.message ?? `${method} ${path}: HTTP ${res.status}`, { status: res.status });
  }

  /**
   * Is `node` serving us? "ok", "auth" (it refuses the token) or "down" (no answer, or
   * 5xx). Any other answer (say a 403: a token not granted the cluster's info) comes from
   * a node that serves.
   */
  _probe(node, token, timeoutMs) {
    return this._request("GET", node, token, "/v1/cluster", undefined, timeoutMs).then(
      () => "ok",
      (e) => (e.status === 401 ? "auth" : e.status >= 400 && e.status < 500 ? "ok" : "down"),
    );
  }

  // ---- publishing ----

  _send(p) {
    p.conn = this._conn;
    this._conn.publish(p);
  }

  _settle(p, err, reply) {
    if (!this._outbox.delete(p)) return;
    clearTimeout(p.timer);
    clearTimeout(p.retry);
    if (err) p.reject(err);
    else p.resolve(reply);
  }

  /**
   * A publish attempt on `conn` failed: retry what may be retried (its id makes it safe).
   * No answer, a refused token or "unavailable" (a node cut off from its cluster's
   * majority answers so) also end the connection: the client reconnects, to the next node.
   */
  _publishFailed(p, err, conn) {
    if (!this._outbox.has(p) || p.conn !== conn) return;
    if (!RETRYABLE.has(err.code) && err.status !== 401) return this._settle(p, err);
    p.last = err;
    p.conn = RETRY;
    p.retry = setTimeout(() => {
      p.conn = null;
      if (this._live()) this._send(p);
    }, this._backoff(p.tries++));
    if (err.status === 0 || err.status === 401 || err.code === "unavailable") {
      this._failed(conn, { code: err.status === 401 ? "unauthorized" : undefined });
    }
  }

  // ---- subscriptions ----

  _unsubscribe(sub) {
    if (sub.closed) return;
    sub.closed = true;
    if (this._subs.get(sub.topic) === sub) this._subs.delete(sub.topic);
    this._live()?.unsubscribe(sub);
  }

  /**
   * The server refused a subscription: "unavailable" ends the connection (as for a
   * publish), other transient errors are retried, anything else ends it with "error".
   */
  _subscribeFailed(sub, err, conn) {
    if (sub.closed) return;
    if (err.code === "unavailable") return this._failed(conn, {});
    if (RETRYABLE.has(err.code) || err.code === "internal") {
      setTimeout(() => !sub.closed && this._live() === conn && conn.subscribe(sub), this._backoff(sub._tries++));
      return;
    }
    this._unsubscribe(sub);
    sub._emit("error", err);
    if (!sub._listens("error")) this._emit("error", err);
  }

  /** A WebSocket `subscribed` frame (a reply, or unsolicited when the server moved it). */
  _subscribed(sub, f) {
    sub._tries = 0;
    if (sub.consumer) return;
    if (f.recovered === false) return this._reset(sub, f);
    const pos = sub._pos;
    if (pos.offset === null) pos.set(f.epoch, f.head); // live: resume from the head we were told
    else if (pos.epoch === null) pos.set(f.epoch, pos.offset);
  }

  _reset(sub, { epoch, first, head, reason }) {
    if (sub.closed) return;
    sub._pos.reset(epoch, first);
    sub._emit("reset", { epoch, first, head, reason });
  }

  /** One envelope (a WebSocket message frame, an SSE event's data or a poll entry). */
  _deliver(sub, envelope) {
    if (sub.closed) return;
    const { type, ...m } = envelope;
    if (sub.consumer) {
      if (sub._seen.admit(m.epoch, m.offset) === "ack") {
        this._ack(sub, m.offset).catch((e) => sub.closed || this._emit("error", e));
        return;
      }
      sub._pos.set(m.epoch, m.offset);
      m.ack = () => {
        sub._seen.ack(m.epoch, m.offset);
        return this._ack(sub, m.offset);
      };
      m.nack = (delayMs = 0) => this._ack(sub, m.offset, delayMs);
    } else {
      const verdict = sub._pos.check(m.epoch, m.offset);
      if (verdict === "duplicate") return;
      if (verdict !== "new") {
        // Never expected from the server (it announces resets); never hidden either.
        const reason = verdict === "gap" ? "gap" : "epoch_changed";
        this._reset(sub, { epoch: m.epoch, first: m.offset, head: null, reason });
      }
      sub._pos.set(m.epoch, m.offset);
    }
    sub._emit("message", m);
  }

  /** A poll reply for `sub`. */
  _polled(sub, r) {
    if (sub.closed) return;
    if (r.recovered === false) this._reset(sub, r);
    for (const m of r.messages) this._deliver(sub, m);
    const pos = sub._pos;
    if (!sub.consumer && !r.messages.length && (pos.offset === null || pos.epoch === null)) {
      pos.set(r.epoch, r.next);
    }
  }

  /**
   * Acks (or, with `delayMs`, nacks) one consumer delivery over the transport in use. An ack
   * is idempotent, so one that failed on the way (no answer, 503, 429) is sent again with
   * backoff, up to ACK_TRIES times, rather than left to come back after `ack_wait`.
   */
  async _ack(sub, offset, delayMs) {
    const body = delayMs === undefined ? { offsets: [offset] } : { nack: [offset], delay_ms: delayMs };
    const path = `/v1/topics/${enc(sub.topic)}/consumers/${enc(sub.consumer)}/ack`;
    for (let attempt = 1; ; attempt++) {
      const conn = this._live();
      if (conn?.kind === "websocket" && conn.ack(sub, offset, delayMs)) return;
      try {
        await this._request("POST", this._ring.current, this._token, path, JSON.stringify(body));
        return;
      } catch (e) {
        if (e.status === 401 && conn) this._failed(conn, { code: "unauthorized" });
        const transient = e.status === 0 || RETRYABLE.has(e.code);
        if (!transient || attempt >= ACK_TRIES || this._closed || sub.closed) throw e;
      }
      await new Promise((resolve) => setTimeout(resolve, this._backoff(attempt)));
      if (this._closed || sub.closed) {
        throw new StarlingError("closed", "the subscription was closed before the ack was sent");
      }
    }
  }
}

// ---- WebSocket ------------------------------------------------------------------------------

class WsConn {
  constructor(client, node, token) {
    this.client = client;
    this.node = node;
    this.token = token;
    this.kind = "websocket";
    this.req = 0;
    this.pending = new Map(); // req -> {pub} | {sub} | {}
    this.pingAt = 0; // when the unanswered ping went out (0: none is)
    this.live = new Map(); // topic -> sub whose `subscribed` came on this connection
    this.opened = false;
    this.ready = false; // opened, and taken into use by the client
  }

  open() {
    const c = this.client;
    const o = c._opt;
    const url = `${this.node.replace(/^http/, "ws")}/v1/ws${this.token ? `?token=${enc(this.token)}` : ""}`;
    const ws = (this.ws = new WebSocket(url));
    this.deadline = setTimeout(() => c._failed(this, { preOpen: true }), o.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(this.deadline);
      this.opened = true;
      this.rx = Date.now();
      const every = Math.min(o.heartbeatIntervalMs, o.heartbeatTimeoutMs) / 3;
      this.tick = setInterval(() => this.check(false), every);
      c._opened(this);
    };
    ws.onclose = (e) => c._failed(this, { code: e.code, reason: e.reason, preOpen: !this.opened });
    ws.onmessage = (e) => {
      this.rx = Date.now();
      this.pingAt = 0;
      const f = parseJson(e.data);
      if (f) this.frame(f);
    };
  }

  /**
   * Heartbeat: after heartbeatIntervalMs without a frame, ping; a ping with no frame at all
   * within heartbeatTimeoutMs means the connection is dead. (Timers of background tabs may
   * be throttled: only a ping sent and unanswered counts, never a long gap between ticks.)
   */
  check(now) {
    const o = this.client._opt;
    const t = Date.now();
    if (this.pingAt) {
      if (t - this.pingAt > o.heartbeatTimeoutMs) this.client._failed(this, { code: "heartbeat" });
    } else if (now || t - this.rx >= o.heartbeatIntervalMs) {
      this.pingAt = t;
      this.send({ type: "ping", req: ++this.req });
    }
  }

  send(frame) {
    if (this.ws.readyState !== 1) return false;
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  frame(f) {
    const c = this.client;
    const waiting = f.req === undefined ? undefined : this.pending.get(f.req);
    if (waiting) this.pending.delete(f.req);
    switch (f.type) {
      case "message": {
        const sub = this.live.get(f.topic);
        if (sub) c._deliver(sub, f);
        return;
      }
      case "subscribed": {
        const sub = waiting ? waiting.sub : this.live.get(f.topic);
        if (!sub || sub.closed) return;
        this.live.set(f.topic, sub);
        return c._subscribed(sub, f);
      }
      case "published": {
        if (!waiting?.pub) return;
        const { type, req, ...reply } = f;
        return c._settle(waiting.pub, null, reply);
      }
      case "error": {
        const err = new StarlingError(f.code, f.message);
        if (waiting?.pub) return c._publishFailed(waiting.pub, err, this);
        if (waiting?.sub) return c._subscribeFailed(waiting.sub, err, this);
        if (!waiting) c._emit("error", err); // an ack's, or one about no request of ours
      }
    }
  }

  subscribe(sub) {
    const req = ++this.req;
    this.pending.set(req, { sub });
    this.send({ type: "subscribe", topic: sub.topic, ...sub._start(), req });
  }

  unsubscribe(sub) {
    if (this.live.get(sub.topic) === sub) this.live.delete(sub.topic);
    const req = ++this.req;
    this.pending.set(req, {});
    this.send({ type: "unsubscribe", topic: sub.topic, req });
  }

  publish(p) {
    const req = ++this.req;
    this.pending.set(req, { pub: p });
    this.send(`{"type":"publish","topic":${JSON.stringify(p.topic)},"id":${JSON.stringify(p.id)},` +
      `"req":${req},"data":${p.json}}`);
  }

  /** Sends an ack or nack frame; false if this connection cannot (the caller uses HTTP). */
  ack(sub, offset, delayMs) {
    if (this.live.get(sub.topic) !== sub) return false;
    const f = { type: delayMs === undefined ? "ack" : "nack", topic: sub.topic, consumer: sub.consumer, offset };
    if (delayMs !== undefined) f.delay_ms = delayMs;
    return this.send(f);
  }

  close() {
    clearTimeout(this.deadline);
    clearInterval(this.tick);
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onclose = ws.onmessage = null;
    if (ws.readyState <= 1) ws.close(1000);
  }
}

// ---- SSE and long polling ---------------------------------------------------------------------

/**
 * `sse`: one EventSource on /v1/events for every stream subscription, one per consumer
 * subscription. `poll`: one long-poll loop per subscription. Both publish and ack by POST.
 * The connection counts as open once the node answers GET /v1/cluster.
 */
class HttpConn {
  constructor(client, node, token, kind) {
    this.client = client;
    this.node = node;
    this.token = token;
    this.kind = kind;
    this.streams = new Map(); // sub -> {close()}: a consumer's EventSource, or a poll loop
    this.multi = null; // the stream subscriptions' EventSource: {subs: Map, close()}
    this.dirty = false;
    this.syncing = false;
    this.dead = false;
    this.ready = false; // the node answered, and the client took this connection into use
    this.rx = 0;
  }

  async open() {
    const c = this.client;
    const probe = await c._probe(this.node, this.token, c._opt.connectTimeoutMs);
    if (this.dead) return;
    if (probe !== "ok") return c._failed(this, { code: probe === "auth" ? "unauthorized" : undefined });
    this.rx = Date.now();
    this.tick = setInterval(() => this.check(false), c._opt.heartbeatIntervalMs);
    c._opened(this);
  }

  /**
   * Heartbeat. EventSource hides the server's keepalive comments, so a node silent for two
   * heartbeat intervals is asked GET /v1/cluster, which must answer within
   * heartbeatTimeoutMs. (Long polls answer at least every pollTimeoutSecs by themselves.)
   */
  check(now) {
    const o = this.client._opt;
    if (this.dead || this.probing || (!now && Date.now() - this.rx < 2 * o.heartbeatIntervalMs)) return;
    this.probing = true;
    this.client._probe(this.node, this.token, o.heartbeatTimeoutMs).then((r) => {
      this.probing = false;
      if (r === "ok") this.rx = Date.now();
      else this.client._failed(this, { code: r === "auth" ? "unauthorized" : "heartbeat" });
    });
  }

  request(method, path, body, timeoutMs, signal) {
    return this.client._request(method, this.node, this.token, path, body, timeoutMs, signal)
      .then((json) => {
        this.rx = Date.now();
        return json;
      });
  }

  publish(p) {
    const body = `{"data":${p.json},"id":${JSON.stringify(p.id)}}`;
    this.request("POST", `/v1/topics/${enc(p.topic)}/messages`, body).then(
      (reply) => this.client._settle(p, null, reply),
      (e) => this.client._publishFailed(p, e, this),
    );
  }

  subscribe(sub) {
    if (this.kind === "poll") {
      const stop = new AbortController();
      this.streams.set(sub, { close: () => stop.abort() });
      this.poll(sub, stop.signal);
    } else if (sub.consumer) {
      const path = `/v1/topics/${enc(sub.topic)}/events?${sub._query()}`;
      this.streams.set(sub, this.eventSource(path, sub, (type, data) => {
        if (type === "message") this.client._deliver(sub, data);
      }));
    } else {
      this.resync();
    }
  }

  unsubscribe(sub) {
    this.streams.get(sub)?.close();
    this.streams.delete(sub);
    if (this.kind === "sse" && !sub.consumer) this.resync();
  }

  /**
   * A request of subscription `sub` (null: of the stream of all stream subscriptions)
   * failed. Its own fault (a 4xx but 401, 408 and 429) ends the subscription, or is
   * reported for the stream; anything else ends the connection, as that does too.
   */
  streamFailed(sub, e) {
    const c = this.client;
    const own = e.status >= 400 && e.status < 500 && ![401, 408, 429].includes(e.status);
    if (own && sub) return c._subscribeFailed(sub, e, this);
    if (own) c._emit("error", e);
    c._failed(this, { code: e.status === 401 ? "unauthorized" : undefined });
  }

  async poll(sub, signal) {
    const c = this.client;
    const o = c._opt;
    // A live subscription's first poll is a short one: it learns the head to resume from
    // at once, not only when a message comes (or after a node failure, never).
    const path = () => {
      const timeout = !sub.consumer && sub._pos.offset === null ? 0 : o.pollTimeoutSecs;
      return `/v1/topics/${enc(sub.topic)}/messages?${sub._query({ timeout, limit: 100 })}`;
    };
    while (!this.dead && !signal.aborted) {
      let reply;
      try {
        reply = await this.request("GET", path(), undefined, o.pollTimeoutSecs * 1000 + o.heartbeatTimeoutMs, signal);
      } catch (e) {
        if (!this.dead && !signal.aborted) this.streamFailed(sub, e);
        return;
      }
      if (this.dead || signal.aborted) return;
      c._polled(sub, reply);
    }
  }

  /** Reopens the stream subscriptions' EventSource when their set changed (batched). */
  resync() {
    this.dirty = true;
    if (this.syncing) return;
    this.syncing = true;
    queueMicrotask(() => this.sync());
  }

  async sync() {
    while (this.dirty && !this.dead) {
      this.dirty = false;
      const subs = [...this.client._subs.values()].filter((s) => !s.consumer && !s.closed);
      const m = this.multi;
      if (m && m.subs.size === subs.length && subs.every((s) => m.subs.get(s.topic) === s)) continue;
      for (const sub of subs) {
        if (sub._pos.epoch !== null || sub.closed) continue;
        try {
          await this.resolve(sub);
        } catch (e) {
          // This ends the connection or the subscription; either way, look again.
          if (!this.dead && !sub.closed) this.streamFailed(sub, e);
          this.dirty = true;
          break;
        }
        if (this.dirty || this.dead) break;
      }
      if (this.dirty || this.dead) continue;
      this.multi?.close();
      this.multi = subs.length ? this.openMulti(subs) : null;
    }
    this.syncing = false;
  }

  /**
   * Gives `sub` an epoch before it joins the stream, which resumes every topic from an id
   * (`<offset>:<epoch>`; a topic without one would start live, missing what is published
   * meanwhile). A short poll tells it: a live subscription starts at the head, an `after`
   * given without an epoch is checked (the server announces a lost one), and a topic that
   * does not exist yet has an epoch too.
   */
  async resolve(sub) {
    const path = `/v1/topics/${enc(sub.topic)}/messages?${sub._query({ timeout: 0, limit: 1 })}`;
    const r = await this.request("GET", path);
    if (this.dead || sub.closed) return;
    if (r.recovered === false) this.client._reset(sub, r);
    else sub._pos.set(r.epoch, sub._pos.offset ?? r.next);
  }

  openMulti(subs) {
    const c = this.client;
    const byTopic = new Map(subs.map((s) => [s.topic, s]));
    const q = new URLSearchParams(subs.map((s) => ["topic", s.topic]));
    q.set("last_event_id", formatMultiEventId(subs.map((s) => [s.topic, s._pos])));
    const es = this.eventSource(`/v1/events?${q}`, null, (type, data) => {
      const sub = byTopic.get(data.topic);
      if (!sub || sub.closed) return;
      if (type === "reset") c._reset(sub, data);
      else c._deliver(sub, data);
    });
    return { subs: byTopic, close: () => es.close() };
  }

  /**
   * An EventSource, for `sub` (null: for the stream subscriptions), that this client
   * manages: on any error it is closed and the connection fails, so that the client (not
   * the browser, which would retry the same dead node) reconnects, to the next node, with
   * explicit positions. One that fails before it opens may have been refused (a consumer
   * group's other settings, a forbidden topic): that ends `sub` (see streamFailed), not
   * the connection.
   */
  eventSource(path, sub, onEvent) {
    const c = this.client;
    const url = this.node + path + (this.token ? `&token=${enc(this.token)}` : "");
    const es = new EventSource(url, { withCredentials: c._opt.withCredentials });
    let opened = false;
    let closed = false;
    const deadline = setTimeout(() => c._failed(this, { preOpen: true }), c._opt.connectTimeoutMs);
    es.onopen = () => {
      opened = true;
      clearTimeout(deadline);
      this.rx = Date.now();
    };
    es.onerror = async () => {
      clearTimeout(deadline);
      es.close();
      if (opened) return c._failed(this, {});
      const refused = await this.refusal(url);
      if (this.dead || closed) return;
      if (refused) this.streamFailed(sub, refused);
      else c._failed(this, { preOpen: true }); // it would open: EventSource cannot get through
    };
    for (const type of ["message", "reset"]) {
      es.addEventListener(type, (e) => {
        this.rx = Date.now();
        const data = parseJson(e.data);
        if (data) onEvent(type, data);
      });
    }
    return {
      close() {
        closed = true;
        clearTimeout(deadline);
        es.close();
      },
    };
  }

  /**
   * Why an EventSource did not open, which it does not tell: the same request with fetch,
   * given up as soon as its status is known. The node's error, or null for a stream that
   * opens (then, for a consumer, its member joined the group and left again at once).
   */
  async refusal(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.client._opt.connectTimeoutMs);
    try {
      const res = await fetch(url, {
        headers: { Accept: "text/event-stream" }, signal: ctl.signal, cache: "no-store",
        credentials: this.client._opt.withCredentials ? "include" : "same-origin",
      });
      if (res.ok) return null;
      const err = parseJson(await res.text())?.error;
      const code = err?.code ?? codeForStatus(res.status);
      return new StarlingError(code, err?.message ?? `HTTP ${res.status}`, { status: res.status });
    } catch (e) {
      return new StarlingError("unavailable", `no answer to an event stream: ${e.message}`, { status: 0 });
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
  }

  close() {
    this.dead = true;
    clearInterval(this.tick);
    for (const s of this.streams.values()) s.close();
    this.multi?.close();
  }
}
