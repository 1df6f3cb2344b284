// ConvergeClient: the documented HTTP API of converge serve (docs/api/openapi.yaml) as typed
// methods. Higher-level helpers (consumer loop, inbox, outbox, saga participant, store update)
// build on it.
import { Backoff, sleep } from "./backoff.js";
import { ConvergeError, DeadlineExceededError, UnavailableError, badInput, errorFromReply } from "./errors.js";
import {
  CloudEventLike,
  ReceivedEvent,
  fromJsonEvent,
  toBinary,
  toJsonEvent,
  withId,
} from "./events.js";
import { ClientOptions, Transport, jsonBody, path } from "./transport.js";
import { Collection } from "./store.js";

export interface PublishResult {
  id: string;
  partition: number;
  offset: number;
  /** True: (source, id) was published before within the dedup window; nothing was appended. */
  duplicate: boolean;
}

export interface PublishOptions {
  signal?: AbortSignal;
}

export interface Delivery {
  partition: number;
  offset: number;
  lease_id: string;
  attempt: number;
  lease_expires_at_ms: number;
  /** null when the stored record is not a CloudEvent (`error` says why). */
  event: ReceivedEvent | null;
  error?: string;
}

export interface Lease {
  partition: number;
  offset: number;
  lease_id: string;
}

/** What `extendLeases` answers: `lost` are indexes of leases no longer held (acked, nacked,
 * expired or redelivered: not revived); `leases` the extended ones with their new expiry. */
export interface ExtendResult {
  extended: number;
  lost: number[];
  leases: Array<Lease & { lease_expires_at_ms: number }>;
}

export interface Nack extends Lease {
  delay_ms?: number;
  permanent?: boolean;
  reason?: string;
}

export interface FetchOptions {
  maxEvents?: number;
  maxBytes?: number;
  waitMs?: number;
  consumer?: string;
  signal?: AbortSignal;
}

export interface GroupOptions {
  lease_ms?: number;
  max_deliveries?: number;
  max_in_flight?: number;
  start?: "earliest" | "latest";
  session_timeout_ms?: number;
}

export interface TopicOptions {
  partitions?: number;
  durability?: "fsync" | "interval" | "none";
  retention_max_bytes?: number;
  retention_max_age_ms?: number;
  sync_interval_ms?: number;
  dedup_window_ms?: number;
}

export interface AckResult {
  acked: number;
  lost: number[];
}

export interface NackResult {
  nacked: number;
  lost: number[];
  failed: { index: number; code: string; message: string }[];
}

export interface SagaStart {
  definition: string;
  id?: string;
  version?: number;
  data?: unknown;
}

export type SagaState = "running" | "compensating" | "completed" | "compensated";

export interface Saga {
  id: string;
  definition: string;
  version: number;
  state: SagaState;
  step: number;
  stuck: boolean;
  started_micros: number;
  updated_micros: number;
  data?: unknown;
  error?: string;
  steps?: { name: string; state: string; attempts: number }[];
  history?: { time_micros: number; event: string; step?: number; attempt?: number; detail?: string }[];
  [more: string]: unknown;
}

const LEASE_FIELDS = (l: Lease): Lease => ({ partition: l.partition, offset: l.offset, lease_id: String(l.lease_id) });

function checkName(kind: string, name: unknown, pattern: RegExp, rule: string): string {
  if (typeof name !== "string" || !pattern.test(name)) {
    throw badInput(`${kind} name ${JSON.stringify(name)} is invalid: ${rule}`);
  }
  return name;
}
export const checkTopic = (t: unknown): string =>
  checkName("topic", t, /^(?![._])[A-Za-z0-9._-]{1,200}$/, "1..200 characters [A-Za-z0-9._-], not starting with '.' or '_'");
export const checkGroup = (g: unknown): string =>
  checkName("group", g, /^[A-Za-z0-9_-]{1,64}$/, "1..64 characters [A-Za-z0-9_-]");
export const checkConsumer = (c: unknown): string =>
  checkName("consumer", c, /^[A-Za-z0-9._:@-]{1,128}$/, "1..128 characters [A-Za-z0-9._:@-]");

export class ConvergeClient {
  readonly transport: Transport;

  constructor(options: ClientOptions = {}) {
    this.transport = new Transport(options);
  }

  /** Closes the pooled connections (the process can also just exit). */
  close(): void {
    this.transport.close();
  }

  // ---- publish ----

  /**
   * Publishes with retries: the event gets an id before the first attempt (a UUID when it
   * has none) and keeps it, so a retry after a lost reply is recognized by the server as the
   * same event (`duplicate: true`) within the topic's dedup window.
   */
  private async publishWithRetry<T>(send: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const backoff = new Backoff({ baseMs: 50, maxMs: 2000 });
    for (let attempt = 1; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        if (!(err instanceof ConvergeError) || !err.retryable || attempt >= this.transport.maxAttempts || signal?.aborted) {
          throw err;
        }
        await sleep(Math.max(backoff.next(), err.retryAfterMs ?? 0), signal);
      }
    }
  }

  /** Structured mode: one event as `application/cloudevents+json`. */
  async publish(topic: string, event: CloudEventLike, options: PublishOptions = {}): Promise<PublishResult> {
    checkTopic(topic);
    const body = JSON.stringify(toJsonEvent(withId(event)));
    return this.publishWithRetry(async () => {
      const r = await this.transport.json<{ results: PublishResult[] }>("POST", path("v1/topics", topic, "events"), {
        body,
        headers: { "content-type": "application/cloudevents+json" },
        signal: options.signal,
      });
      return r.results[0]!;
    }, options.signal);
  }

  /** Batched mode: all events or none (`application/cloudevents-batch+json`). */
  async publishBatch(topic: string, events: CloudEventLike[], options: PublishOptions = {}): Promise<PublishResult[]> {
    checkTopic(topic);
    if (!Array.isArray(events) || events.length === 0) throw badInput("publishBatch needs a non-empty array of events");
    const body = JSON.stringify(events.map((e, i) => toJsonEvent(withId(e), `event[${i}]: `)));
    return this.publishWithRetry(async () => {
      const r = await this.transport.json<{ results: PublishResult[] }>("POST", path("v1/topics", topic, "events"), {
        body,
        headers: { "content-type": "application/cloudevents-batch+json" },
        signal: options.signal,
      });
      return r.results;
    }, options.signal);
  }

  /** Binary mode: attributes as `ce-` headers, the data as the body. */
  async publishBinary(topic: string, event: CloudEventLike, options: PublishOptions = {}): Promise<PublishResult> {
    checkTopic(topic);
    const { headers, body } = toBinary(withId(event));
    return this.publishWithRetry(async () => {
      const r = await this.transport.json<{ results: PublishResult[] }>("POST", path("v1/topics", topic, "events"), {
        body,
        headers,
        signal: options.signal,
      });
      return r.results[0]!;
    }, options.signal);
  }

  // ---- topics and groups ----

  async createTopic(name: string, options: TopicOptions = {}): Promise<Record<string, unknown>> {
    checkTopic(name);
    return this.transport.json("POST", "/v1/topics", jsonBody({ name, ...options }));
  }

  /** Creates the topic unless it exists (ALREADY_EXISTS is success here). */
  async ensureTopic(name: string, options: TopicOptions = {}): Promise<void> {
    try {
      await this.createTopic(name, options);
    } catch (err) {
      if (!(err instanceof ConvergeError) || err.code !== "ALREADY_EXISTS") throw err;
    }
  }

  async describeTopic(name: string): Promise<Record<string, unknown>> {
    checkTopic(name);
    return this.transport.json("GET", path("v1/topics", name));
  }

  async createGroup(topic: string, group: string, options: GroupOptions = {}): Promise<Record<string, unknown>> {
    checkTopic(topic);
    checkGroup(group);
    return this.transport.json("POST", path("v1/topics", topic, "groups"), jsonBody({ name: group, ...options }));
  }

  async ensureGroup(topic: string, group: string, options: GroupOptions = {}): Promise<void> {
    try {
      await this.createGroup(topic, group, options);
    } catch (err) {
      if (!(err instanceof ConvergeError) || err.code !== "ALREADY_EXISTS") throw err;
    }
  }

  // ---- consume ----

  /** Leases up to `maxEvents` events (long-polls `waitMs`). */
  async fetch(topic: string, group: string, options: FetchOptions = {}): Promise<Delivery[]> {
    checkTopic(topic);
    checkGroup(group);
    const body: Record<string, unknown> = {};
    if (options.maxEvents !== undefined) body.max_events = options.maxEvents;
    if (options.maxBytes !== undefined) body.max_bytes = options.maxBytes;
    if (options.waitMs !== undefined) body.wait_ms = options.waitMs;
    if (options.consumer !== undefined) body.consumer = checkConsumer(options.consumer);
    const r = await this.transport.json<{ deliveries: Array<Omit<Delivery, "event"> & { event: Record<string, unknown> | null }> }>(
      "POST",
      path("v1/topics", topic, "groups", group, "fetch"),
      // A long poll may take its wait on top of the usual reply time.
      { ...jsonBody(body), signal: options.signal, timeoutMs: this.transport.timeoutMs + (options.waitMs ?? 0) },
    );
    return r.deliveries.map(parseDelivery);
  }

  async ack(topic: string, group: string, leases: Lease[], consumer?: string): Promise<AckResult> {
    checkTopic(topic);
    checkGroup(group);
    const body: Record<string, unknown> = { acks: leases.map(LEASE_FIELDS) };
    if (consumer !== undefined) body.consumer = checkConsumer(consumer);
    return this.transport.json("POST", path("v1/topics", topic, "groups", group, "ack"), jsonBody(body));
  }

  /** Keeps leased events for `leaseMs` from now (a handler slower than the group's lease): they
   * are not redelivered meanwhile. Call it before the leases expire; a retry is harmless. */
  async extendLeases(topic: string, group: string, leases: Lease[], leaseMs: number, consumer?: string): Promise<ExtendResult> {
    checkTopic(topic);
    checkGroup(group);
    if (!Number.isSafeInteger(leaseMs) || leaseMs < 1) throw badInput(`leaseMs must be an integer >= 1, got ${String(leaseMs)}`);
    const body: Record<string, unknown> = { leases: leases.map(LEASE_FIELDS), lease_ms: leaseMs };
    if (consumer !== undefined) body.consumer = checkConsumer(consumer);
    return this.transport.json("POST", path("v1/topics", topic, "groups", group, "extend"), jsonBody(body));
  }

  async nack(topic: string, group: string, nacks: Nack[], consumer?: string): Promise<NackResult> {
    checkTopic(topic);
    checkGroup(group);
    const body: Record<string, unknown> = {
      nacks: nacks.map((n) => {
        const o: Record<string, unknown> = LEASE_FIELDS(n) as unknown as Record<string, unknown>;
        if (n.delay_ms !== undefined) o.delay_ms = Math.max(0, Math.floor(n.delay_ms));
        if (n.permanent !== undefined) o.permanent = n.permanent;
        if (n.reason !== undefined) o.reason = n.reason.slice(0, 4096);
        return o;
      }),
    };
    if (consumer !== undefined) body.consumer = checkConsumer(consumer);
    return this.transport.json("POST", path("v1/topics", topic, "groups", group, "nack"), jsonBody(body));
  }

  /** Leaves the group at once: unacked leases are redelivered without using up an attempt. */
  async leave(topic: string, group: string, consumer?: string): Promise<boolean> {
    checkTopic(topic);
    checkGroup(group);
    const body = consumer === undefined ? {} : { consumer: checkConsumer(consumer) };
    const r = await this.transport.json<{ left: boolean }>("POST", path("v1/topics", topic, "groups", group, "leave"), jsonBody(body));
    return r.left;
  }

  /** Opens the SSE stream (`GET .../stream`) and yields its deliveries until it ends. */
  async *stream(
    topic: string,
    group: string,
    options: { consumer?: string; maxEvents?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<Delivery> {
    checkTopic(topic);
    checkGroup(group);
    const query: Record<string, string | number | undefined> = {
      consumer: options.consumer === undefined ? undefined : checkConsumer(options.consumer),
      max_events: options.maxEvents,
    };
    const response = await this.transport.open("GET", path("v1/topics", topic, "groups", group, "stream"), {
      query,
      headers: { accept: "text/event-stream" },
      signal: options.signal,
    });
    if (response.status !== 200) {
      throw errorFromReply(response.status, await response.text(), response.header("retry-after"));
    }
    const decoder = new TextDecoder();
    let buffer = "";
    let eventName = "";
    let data: string[] = [];
    try {
      for await (const chunk of response.chunks()) {
        buffer += decoder.decode(chunk, { stream: true });
        for (;;) {
          const nl = buffer.indexOf("\n");
          if (nl < 0) break;
          let line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            // End of an SSE event.
            if (data.length > 0) {
              const text = data.join("\n");
              if (eventName === "delivery" || eventName === "") {
                yield parseDelivery(JSON.parse(text));
              } else if (eventName === "error") {
                throw errorFromReply(503, text, null);
              }
            }
            eventName = "";
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue;  // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") eventName = value;
          else if (field === "data") data.push(value);
        }
      }
    } catch (err) {
      if (options.signal?.aborted) return;
      throw err;
    } finally {
      response.cancel();
    }
  }

  /** The shared store's collection `name` (documents, `update(key, fn)`). */
  collection(name: string): Collection {
    return new Collection(this, name);
  }

  // ---- sagas (the starter side) ----

  /** Registers a definition (a JSON object, or YAML/JSON text). Admin token. */
  async registerSagaDefinition(definition: string | Record<string, unknown>): Promise<{ name: string; version: number }> {
    const text = typeof definition === "string" ? definition : JSON.stringify(definition);
    const yaml = typeof definition === "string" && !/^\s*\{/.test(definition);
    return this.transport.json("POST", "/v1/saga-definitions", {
      body: text,
      headers: { "content-type": yaml ? "application/yaml" : "application/json" },
    });
  }

  /** Starts a saga; `id` is an idempotency key (starting it again returns it). */
  async startSaga(start: SagaStart): Promise<string> {
    if (typeof start?.definition !== "string" || start.definition.length === 0) {
      throw badInput("startSaga needs a definition name");
    }
    if (start.id !== undefined && (typeof start.id !== "string" || start.id.length === 0 || start.id.length > 128)) {
      throw badInput("a saga id is 1..128 characters");
    }
    const body: Record<string, unknown> = { definition: start.definition };
    if (start.id !== undefined) body.id = start.id;
    if (start.version !== undefined) body.version = start.version;
    if (start.data !== undefined) body.data = start.data;
    // With an id the start is idempotent, so it may be retried like a publish.
    const send = async (): Promise<string> =>
      (await this.transport.json<{ id: string }>("POST", "/v1/sagas", jsonBody(body))).id;
    return start.id === undefined ? send() : this.publishWithRetry(send);
  }

  async getSaga(id: string): Promise<Saga> {
    return this.transport.json("GET", path("v1/sagas", id));
  }

  async cancelSaga(id: string, reason?: string): Promise<Record<string, unknown>> {
    return this.transport.json("POST", path("v1/sagas", id, "cancel"), jsonBody(reason === undefined ? {} : { reason }));
  }

  /** Polls until the saga is in one of `states` (default completed or compensated). */
  async waitForSaga(
    id: string,
    options: { states?: SagaState[]; timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
  ): Promise<Saga> {
    const states = options.states ?? ["completed", "compensated"];
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      const saga = await this.getSaga(id);
      if (states.includes(saga.state)) return saga;
      if (Date.now() >= deadline || options.signal?.aborted) {
        throw new DeadlineExceededError(
          "DEADLINE_EXCEEDED",
          `saga ${id} is ${saga.state}, not ${states.join("/")}, after ${options.timeoutMs ?? 60_000} ms`,
        );
      }
      await sleep(options.intervalMs ?? 100, options.signal);
    }
  }
}

function parseDelivery(d: Omit<Delivery, "event"> & { event: Record<string, unknown> | null }): Delivery {
  return { ...d, lease_id: String(d.lease_id), event: d.event === null ? null : fromJsonEvent(d.event) };
}
