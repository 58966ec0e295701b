// Type declarations for Starling's browser client (GET /v1/client.js; this file is served
// at GET /v1/client.d.ts). The wire protocol is PROTOCOL.md; the server's own notes are
// in the README ("Protocol notes and extensions", "Consumers").

/** How the client talks to a node. */
export type Transport = "websocket" | "sse" | "poll";

/** The connection's state, as the "state" event reports it. */
export type ConnectionState = "connecting" | "connected" | "disconnected";

export interface StarlingOptions {
  /**
   * "websocket" (`/v1/ws`), "sse" (EventSource on `/v1/events`, publishes and acks by POST),
   * "poll" (HTTP long polling, one request per subscription) or "auto" (default):
   * WebSocket first; when a node is reachable over HTTP but a WebSocket cannot connect to
   * it, SSE; when an SSE stream cannot open either, long polling. What worked is
   * remembered in `localStorage` per list of node URLs for 24 hours, so the next page load
   * starts with it.
   */
  transport?: Transport | "auto";
  /**
   * A token (JWT): sent as `Authorization: Bearer` on requests made with fetch, and as the
   * `token` query parameter on EventSource and WebSocket URLs (which cannot carry headers).
   */
  token?: string | null;
  /**
   * Called before every connection attempt, and again when a node refuses the token
   * (HTTP 401, WebSocket close 4001); takes precedence over `token`.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** Reconnect backoff: full jitter, uniform in [0, min(max, min * 2^attempt)], never below 50 ms. Default 250. */
  minReconnectDelayMs?: number;
  /** Default 10000. The attempt count starts again once a connection has lived 10 s. */
  maxReconnectDelayMs?: number;
  /**
   * WebSocket: after this long without any frame the client sends a ping. SSE and long
   * polling: after twice this long without an event or a reply it asks the node
   * `GET /v1/cluster` (EventSource hides the server's keepalive comments). Default 15000.
   */
  heartbeatIntervalMs?: number;
  /**
   * A ping (or that SSE check) unanswered this long means the connection is dead: the
   * client reconnects to the next node. Long polls time out after pollTimeoutSecs plus
   * this. Default 10000.
   */
  heartbeatTimeoutMs?: number;
  /** A WebSocket or EventSource that has not opened within this is given up. Default 10000. */
  connectTimeoutMs?: number;
  /** Timeout of one HTTP request (publish, ack, topic info, probe). Default 15000. */
  requestTimeoutMs?: number;
  /**
   * How long publish() keeps trying (across reconnects and node failures) before it
   * rejects with code "unavailable". Default 60000.
   */
  publishTimeoutMs?: number;
  /** The server-side wait of each long poll, in seconds (server maximum: 120). Default 25. */
  pollTimeoutSecs?: number;
  /** publish() refuses larger `data` (as UTF-8 JSON) with "too_large" without sending it. Default 65536, the server's default. */
  maxMessageBytes?: number;
  /** Send cookies (e.g. `starling_token`) with cross-origin fetch and EventSource requests. Default false. */
  withCredentials?: boolean;
}

export interface SubscribeOptions {
  /**
   * Deliver every retained message with an offset greater than this, then live ones
   * (0: from the oldest retained message). Without it the subscription is live only, from
   * the head at the time it is first made: when the node answers its subscribe (WebSocket)
   * or its first request (SSE, long polling; a publish sent meanwhile on another request
   * may land just before it, so pass `after` to be sure to get it). After a reconnect it
   * resumes from its position either way.
   */
  after?: number;
  /** The epoch `after` belongs to (as `position.epoch` gave it). Ignored without `after`. */
  epoch?: string;
  /**
   * Consumer mode: the server keeps the position of this consumer group, every message
   * must be acked (`m.ack()`), and the group's messages are shared among its members.
   * For a new group, `after` says where it starts (default: the head).
   */
  consumer?: string;
  /** Consumer group settings, used when this subscription creates the group. */
  ackWaitMs?: number;
  maxDeliver?: number;
  maxInflight?: number;
  backoffMs?: number[];
}

/** A delivered message: the envelope's fields. */
export interface Message<T = unknown> {
  topic: string;
  /** Per-topic offset: 1, 2, 3, ... within one epoch. */
  offset: number;
  epoch: string;
  /** The publisher's idempotency id (a UUID unless it gave one). */
  id: string;
  /** Unix milliseconds at the topic's owner. */
  time: number;
  data: T;
}

/**
 * A consumer delivery. Delivery is at least once: a redelivery (not acked in time, nacked,
 * its connection dropped, or the group's owner crashed before it recorded the delivery,
 * when even `attempt` can repeat) is delivered again, because it still needs an ack.
 * Only a redelivery of an offset this subscription acked already is not: the server lost
 * that ack, and the client sends it again instead (a failure of that ack is an "error"
 * event of the client). Deduplicate on `id` in the application if processing twice is
 * harmful.
 */
export interface ConsumerMessage<T = unknown> extends Message<T> {
  /** 1 for the first delivery, more for redeliveries. */
  attempt: number;
  /** Acks over the WebSocket in use, else by POST; resolves once sent (WebSocket) or accepted (HTTP). */
  ack(): Promise<void>;
  /** Asks for redelivery after `delayMs` (default 0). */
  nack(delayMs?: number): Promise<void>;
}

/**
 * A lost position, never hidden: messages after the previous position are gone (trimmed
 * by retention, or the topic's history was lost and it has a new epoch). Delivery goes on
 * from `first` in `epoch`. `reason` is the server's ("trimmed", "epoch_changed",
 * "beyond_head") or, should the server ever deliver a hole or a new epoch without
 * announcing it, the client's ("gap", "epoch_changed"; then `head` is null).
 */
export interface Reset {
  epoch: string;
  first: number;
  head: number | null;
  reason: string;
}

/** Errors from the server (`code` as in PROTOCOL.md) and from the client. */
export class StarlingError extends Error {
  constructor(code: string, message: string, extra?: { status?: number; id?: string });
  /**
   * "bad_request" | "invalid_topic" | "too_large" | "not_found" | "unauthorized" |
   * "forbidden" | "rate_limited" | "unavailable" | "internal", and from the client:
   * "closed" (after close(), or an ack of a subscription closed meanwhile) and
   * "unavailable" for a request with no answer.
   */
  code: string;
  /** HTTP errors: the status (0: no answer, or a timeout). */
  status?: number;
  /** Failed publishes: the id used, to retry safely with the same id. */
  id?: string;
}

/** What `Starling.subscribe` returns (not constructed by the application). */
export interface Subscription<T = unknown> {
  readonly topic: string;
  /** The consumer group, or null for a stream subscription. */
  readonly consumer: string | null;
  /** True after unsubscribe(), client.close(), or a refusal (an "error" event). */
  readonly closed: boolean;
  /**
   * The epoch and offset of the last message delivered, or where the subscription resumes
   * (`offset` null: a live subscription that has not learned the head yet). Store it and
   * pass it back as `{after: offset, epoch}` to resume in a later page.
   */
  readonly position: { epoch: string | null; offset: number | null };
  on(event: "message", handler: (m: Message<T> & Partial<ConsumerMessage<T>>) => void): () => void;
  /** A lost position (see Reset). Delivery continues from `first`. */
  on(event: "reset", handler: (r: Reset) => void): () => void;
  /**
   * The server refused the subscription (e.g. "forbidden", "invalid_topic"): it is closed.
   * Without a handler here the error goes to the client's "error" event.
   */
  on(event: "error", handler: (e: StarlingError) => void): () => void;
  off(event: "message" | "reset" | "error", handler: (...args: any[]) => void): void;
  unsubscribe(): void;
}

export interface PublishReply {
  topic: string;
  offset: number;
  epoch: string;
  id: string;
  /** True when the id was seen before (within the server's dedupe window): not stored again. */
  duplicate: boolean;
}

/**
 * A client of a Starling cluster. It connects to one node at a time, in the order given,
 * and on a failure moves to the next one (a node's death is a reconnect, not an outage),
 * reconnecting with full-jitter exponential backoff, at once when the browser comes back
 * `online`, and never after close(). Close codes: 1001 (node shutting down): the next
 * node at once; 4008 (slow consumer): the same node; 4001 (unauthorized): a new token;
 * 4000 and 4003: an "error" event, then retries at the maximum delay; others, and an
 * "unavailable" answer to a publish or a subscription: the next node, with backoff.
 *
 * Every subscription resumes from its own (epoch, offset) after a reconnect, a stream
 * message is never delivered twice, and a lost position is always a "reset" event.
 */
export class Starling {
  /** One node URL or several (http(s):// or ws(s)://, e.g. "http://127.0.0.1:8080"). */
  constructor(nodes: string | string[], options?: StarlingOptions);
  readonly state: ConnectionState;
  /** The transport in use, or being tried. */
  readonly transport: Transport;
  /** The node URL in use, or being tried. */
  readonly node: string;

  on(event: "state", handler: (state: ConnectionState) => void): () => void;
  /**
   * The transport of a connection that opens, when it differs from the last one's (so also
   * at the first connection). Runs before the "state" event says "connected".
   */
  on(event: "transport", handler: (transport: Transport) => void): () => void;
  /**
   * Errors that belong to no call: a refused token or a failing getToken, close codes
   * 4000/4003, error frames of no request (a refused WebSocket ack), a node that cannot
   * be reached at all (e.g. ws:// from an https:// page), a failed re-ack (see
   * ConsumerMessage).
   */
  on(event: "error", handler: (e: StarlingError) => void): () => void;
  off(event: "state" | "transport" | "error", handler: (...args: any[]) => void): void;

  /**
   * Subscribes to `topic` (one subscription per topic and client: a second one throws
   * "bad_request" until the first is unsubscribed). Throws "invalid_topic" for a name
   * that is not 1-200 bytes of `A-Z a-z 0-9 _ - . : @` (or `$dlq.` and such a name).
   */
  subscribe<T = unknown>(topic: string, options?: SubscribeOptions): Subscription<T>;

  /**
   * Publishes `data` (any JSON value) and resolves with the server's reply once the
   * message is durable. Every publish carries an idempotency id: `options.id`, or a random
   * UUID (crypto.randomUUID) generated here. So a publish whose connection dropped
   * before the reply is sent again after the reconnect, to the next node, and is never
   * stored twice (within the server's dedupe window, 2 minutes by default); replies
   * "unavailable" (then at the next node: a node cut off from its cluster's majority
   * answers so) and "rate_limited" are retried the same way, with backoff. Rejects with
   * a StarlingError: the server's code for a refused publish, "too_large" above
   * maxMessageBytes, "unavailable" after publishTimeoutMs (its `id` lets you try again
   * safely), "closed" after close(). Publishes sent concurrently are independent: their
   * order is kept while nothing fails, not necessarily across a failover.
   */
  publish<T = unknown>(topic: string, data: T, options?: { id?: string }): Promise<PublishReply>;

  /** Closes the connection and every subscription; pending publishes reject with "closed". */
  close(): void;
}

// Internal helpers, exported for the unit tests (web/test/unit.js); not a stable API.
export function backoffDelay(attempt: number, bounds: { minMs: number; maxMs: number }, random?: () => number): number;
export class Position {
  constructor(epoch?: string | null, offset?: number | null);
  epoch: string | null;
  offset: number | null;
  check(epoch: string, offset: number): "new" | "duplicate" | "gap" | "epoch";
  set(epoch: string | null, offset: number | null): void;
  reset(epoch: string, first: number): void;
  toJSON(): { epoch: string | null; offset: number | null };
}
export class Deliveries {
  constructor(limit?: number);
  readonly limit: number;
  readonly acked: Set<string>;
  admit(epoch: string, offset: number): "deliver" | "ack";
  ack(epoch: string, offset: number): void;
}
export function formatEventId(pos: { offset: number; epoch: string }): string;
export function formatMultiEventId(entries: Iterable<[string, { offset: number; epoch: string }]>): string;
export class NodeRing {
  constructor(urls: string | Iterable<string>);
  readonly urls: string[];
  index: number;
  readonly current: string;
  rotate(): string;
  readonly key: string;
}
