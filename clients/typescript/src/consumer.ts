// The consumer loop: fetch (long poll) or the SSE stream, handlers run per partition key in
// order, ack after the handler, nack with backoff when it throws, graceful stop on an
// AbortSignal.
import { Backoff, BackoffOptions, sleep } from "./backoff.js";
import { ConvergeClient, Delivery, checkConsumer } from "./client.js";
import { ConvergeError } from "./errors.js";
import { ReceivedEvent, partitionKeyOf } from "./events.js";

/** Thrown by a handler: the event can never be handled; dead-letter it now (permanent nack). */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermanentError";
  }
}

export interface HandlerContext {
  delivery: Delivery;
  topic: string;
  group: string;
  /** Aborts when the loop is asked to stop (the handler may finish or give up). */
  signal: AbortSignal;
}

/** Handles one event. Resolve: the event is acked. Throw: nacked (retried later with a delay),
 * or dead-lettered at once for a `PermanentError`. */
export type Handler = (event: ReceivedEvent, context: HandlerContext) => Promise<void> | void;

export interface ConsumeOptions {
  /** `fetch` (long-polling fetch, default) or `stream` (Server-Sent Events). */
  mode?: "fetch" | "stream";
  /** The group member name (default a fresh one per loop). */
  consumer?: string;
  /** Events per fetch (or per server-side fetch of the stream). Default 100. */
  maxEvents?: number;
  /** Long-poll wait of each fetch, ms (default 5000). */
  waitMs?: number;
  /** Keys handled at once (default 16). Events of one key are always handled one at a time, in order. */
  concurrency?: number;
  /** Stop: no new event is started; running handlers finish and are acked, then the loop leaves the group. */
  signal?: AbortSignal;
  /** Backoff after a failed fetch or a broken stream (default 100 ms .. 10 s, full jitter). */
  backoff?: BackoffOptions;
  /** The nack delay for a failed attempt (default 200 ms * 2^(attempt-1), at most 30 s). */
  retryDelayMs?: (attempt: number) => number;
  /** Called with errors the loop handles itself (fetch/ack failures, handler errors). */
  onError?: (error: unknown, delivery?: Delivery) => void;
}

const defaultRetryDelay = (attempt: number): number => Math.min(30_000, 200 * Math.pow(2, Math.max(0, attempt - 1)));

/** Runs tasks one at a time per key, at most `limit` keys at once. */
export class KeyedDispatcher {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly inflight = new Set<Promise<void>>();
  private running = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  submit(key: string, task: () => Promise<void>): void {
    const prev = this.chains.get(key) ?? Promise.resolve();
    const p: Promise<void> = prev.then(() => this.withSlot(task)).catch(() => undefined);
    this.chains.set(key, p);
    this.inflight.add(p);
    void p.finally(() => {
      this.inflight.delete(p);
      if (this.chains.get(key) === p) this.chains.delete(key);
    });
  }

  /** Resolves once every submitted task has finished. */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  get size(): number {
    return this.inflight.size;
  }

  private async withSlot(task: () => Promise<void>): Promise<void> {
    while (this.running >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
    this.running++;
    try {
      await task();
    } finally {
      this.running--;
      this.waiters.shift()?.();
    }
  }
}

/**
 * Consumes `topic` as a member of `group` until `options.signal` aborts; resolves once stopped.
 * Delivery is at least once: make the handler's effect idempotent, or use `inboxHandler`.
 */
export async function consume(
  client: ConvergeClient,
  topic: string,
  group: string,
  handler: Handler,
  options: ConsumeOptions = {},
): Promise<void> {
  const consumer = checkConsumer(options.consumer ?? `ts-${crypto.randomUUID()}`);
  const signal = options.signal ?? new AbortController().signal;
  const onError = options.onError ?? ((): void => undefined);
  const retryDelay = options.retryDelayMs ?? defaultRetryDelay;
  const dispatcher = new KeyedDispatcher(Math.max(1, options.concurrency ?? 16));
  const backoff = new Backoff(options.backoff);
  // Keys whose earlier event failed in this round: their later events are nacked too, so a
  // key never gets ahead of its failed event.
  const failedKeys = new Map<string, number>();
  const blockFailedKeys = (options.mode ?? "fetch") === "fetch";

  const handleOne = async (key: string, d: Delivery): Promise<void> => {
    if (signal.aborted) return;  // not started: the group redelivers it after we leave
    const blocked = blockFailedKeys ? failedKeys.get(key) : undefined;
    if (blocked !== undefined) {
      await client.nack(topic, group, [{ ...d, delay_ms: blocked, reason: "an earlier event of its key failed" }], consumer).catch((e) => onError(e, d));
      return;
    }
    if (d.event === null) {
      await client
        .nack(topic, group, [{ ...d, permanent: true, reason: `not a CloudEvent: ${d.error ?? "undecodable"}` }], consumer)
        .catch((e) => onError(e, d));
      return;
    }
    try {
      await handler(d.event, { delivery: d, topic, group, signal });
    } catch (err) {
      onError(err, d);
      const permanent = err instanceof PermanentError;
      const delay = retryDelay(d.attempt);
      if (!permanent) failedKeys.set(key, delay);
      const reason = err instanceof Error ? err.message : String(err);
      await client
        .nack(topic, group, [{ ...d, permanent, delay_ms: permanent ? undefined : delay, reason }], consumer)
        .catch((e) => onError(e, d));
      return;
    }
    try {
      await client.ack(topic, group, [d], consumer);
    } catch (err) {
      // The effect happened; the event comes again after its lease (an inbox makes that a no-op).
      onError(err, d);
    }
  };

  const submit = (d: Delivery): void => {
    const key = (d.event && partitionKeyOf(d.event)) ?? `\u0000${d.partition}:${d.offset}`;
    dispatcher.submit(key, () => handleOne(key, d));
  };

  if ((options.mode ?? "fetch") === "fetch") {
    while (!signal.aborted) {
      let deliveries: Delivery[];
      try {
        deliveries = await client.fetch(topic, group, {
          consumer,
          maxEvents: options.maxEvents ?? 100,
          waitMs: options.waitMs ?? 5000,
          signal,
        });
        backoff.reset();
      } catch (err) {
        if (signal.aborted) break;
        onError(err);
        await sleep(Math.max(backoff.next(), err instanceof ConvergeError ? err.retryAfterMs ?? 0 : 0), signal);
        continue;
      }
      failedKeys.clear();
      deliveries.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
      for (const d of deliveries) submit(d);
      await dispatcher.idle();
    }
  } else {
    while (!signal.aborted) {
      // The stream has its own controller: on stop it stays open until the running handlers
      // are acked (closing it earlier would hand their leases back as failed attempts).
      const streamControl = new AbortController();
      const stopStream = (): void => {
        void (async () => {
          await dispatcher.idle();
          await client.leave(topic, group, consumer).catch(() => undefined);
          streamControl.abort();
        })();
      };
      signal.addEventListener("abort", stopStream, { once: true });
      try {
        for await (const d of client.stream(topic, group, { consumer, maxEvents: options.maxEvents, signal: streamControl.signal })) {
          backoff.reset();
          // The server holds a key's later events while an earlier one is leased or waiting,
          // so a stream needs no blocking here; after a stop nothing new is started.
          if (!signal.aborted) submit(d);
        }
      } catch (err) {
        if (!signal.aborted) onError(err);
      } finally {
        signal.removeEventListener("abort", stopStream);
      }
      await dispatcher.idle();
      if (signal.aborted) {
        streamControl.abort();
        break;
      }
      streamControl.abort();
      await sleep(backoff.next(), signal);
    }
  }
  await dispatcher.idle();
  // Hand back what was leased and not started, at once and without using up an attempt.
  await client.leave(topic, group, consumer).catch((e) => onError(e));
}
