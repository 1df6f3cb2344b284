// One HTTP call to converge serve. By default over node:http with a keep-alive agent (one
// pooled connection per concurrent request; about 4-6x the request rate of the global fetch
// on the same machine, see docs/benchmarks.md); a `fetch` implementation can be given
// instead. Error replies become typed errors (errors.ts).
import * as http from "node:http";
import * as https from "node:https";
import { ConvergeError, DeadlineExceededError, UnavailableError, errorFromReply } from "./errors.js";

export interface ClientOptions {
  /** Base URL of converge serve (default http://127.0.0.1:8080). */
  url?: string;
  /** Bearer token (omit when the server runs without auth). */
  token?: string;
  /** Per-request timeout in ms (default 30000); long polls add their wait to it. */
  timeoutMs?: number;
  /** Attempts for calls that are safe to repeat (publish, idempotent saga starts) on a retryable error (default 4). */
  maxAttempts?: number;
  /** Connections kept per server (default 64). */
  maxConnections?: number;
  /** Send requests with this fetch implementation instead of node:http (tests, proxies, other runtimes). */
  fetch?: typeof fetch;
  /** https: PEM certificates of the CAs to trust instead of Node's default ones (a private CA,
   * or the server's self-signed certificate). The host name is verified either way. */
  ca?: string;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface Reply {
  status: number;
  headers: { get(name: string): string | null };
  text: string;
}

/** A response whose body has not been read yet. */
export interface OpenResponse {
  status: number;
  header(name: string): string | null;
  /** The body as it arrives. */
  chunks(): AsyncIterable<Uint8Array>;
  text(): Promise<string>;
  /** Drops the connection (a stream the caller no longer wants). */
  cancel(): void;
}

/** Joins path segments, each percent-encoded (RFC 3986; `+` is sent as %2B). */
export function path(...segments: string[]): string {
  return "/" + segments.map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join("/");
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** UTF-8 length of a string without encoding it when it is ASCII. */
export function utf8ByteLength(s: string): number {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s) ? s.length : encoder.encode(s).length;
}

function concatText(parts: Uint8Array[]): string {
  let size = 0;
  for (const p of parts) size += p.length;
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return decoder.decode(all);
}

async function readAll(chunks: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const c of chunks) {
    parts.push(c);
    size += c.length;
  }
  if (parts.length === 1) return decoder.decode(parts[0]);
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return decoder.decode(all);
}

export class Transport {
  readonly baseUrl: string;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch | undefined;
  private readonly url0: URL;
  private readonly agent: http.Agent | https.Agent | undefined;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.url ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    this.url0 = new URL(this.baseUrl);
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 4);
    this.fetchImpl = options.fetch;
    if (this.fetchImpl === undefined) {
      const agentOptions = { keepAlive: true, maxSockets: options.maxConnections ?? 64, maxFreeSockets: options.maxConnections ?? 64 };
      this.agent =
        this.url0.protocol === "https:"
          ? new https.Agent(options.ca === undefined ? agentOptions : { ...agentOptions, ca: options.ca })
          : new http.Agent(agentOptions);
    }
  }

  url(target: string, query?: RequestOptions["query"]): string {
    return this.baseUrl + this.target(target, query);
  }

  private target(target: string, query?: RequestOptions["query"]): string {
    const base = this.url0.pathname.replace(/\/+$/, "");
    let u = base + target;
    if (query !== undefined) {
      const parts: string[] = [];
      for (const [k, v] of Object.entries(query)) {
        if (v === undefined) continue;
        parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
      }
      if (parts.length > 0) u += "?" + parts.join("&");
    }
    return u;
  }

  /** Closes the pooled connections. */
  close(): void {
    this.agent?.destroy();
  }

  /**
   * Sends the request; resolves when the status and header arrived. `timeout` bounds that
   * wait (not the body: see `call`). The caller's signal keeps aborting the body until it is
   * read or cancelled. Transport failures throw UnavailableError / DeadlineExceededError.
   */
  async open(
    method: string,
    target: string,
    options: RequestOptions = {},
    timeout = true,
    register?: (cancel: (error: Error) => void) => void,
  ): Promise<OpenResponse> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (this.token !== undefined) headers["authorization"] = `Bearer ${this.token}`;
    const ms = options.timeoutMs ?? this.timeoutMs;
    const what = `${method} ${target}`;
    if (this.fetchImpl !== undefined) return this.openWithFetch(method, target, options, headers, timeout ? ms : undefined);
    if (options.signal?.aborted) throw new UnavailableError("UNAVAILABLE", `${what}: aborted`);
    const body = options.body;
    if (body !== undefined) headers["content-length"] = String(typeof body === "string" ? utf8ByteLength(body) : body.length);
    return new Promise<OpenResponse>((resolve, reject) => {
      const req = (this.url0.protocol === "https:" ? https : http).request({
        protocol: this.url0.protocol,
        hostname: this.url0.hostname,
        port: this.url0.port === "" ? undefined : this.url0.port,
        path: this.target(target, options.query),
        method,
        headers,
        agent: this.agent,
      });
      register?.((error) => req.destroy(error));
      let settled = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => req.destroy(new UnavailableError("UNAVAILABLE", `${what}: aborted`));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const release = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      };
      if (timeout) {
        timer = setTimeout(() => req.destroy(new DeadlineExceededError("DEADLINE_EXCEEDED", `${what}: no reply within ${ms} ms`)), ms);
      }
      req.on("error", (err) => {
        release();
        if (settled) return;
        settled = true;
        reject(err instanceof ConvergeError ? err : new UnavailableError("UNAVAILABLE", `${what}: ${err.message}`, { cause: err }));
      });
      req.on("response", (res) => {
        if (timer !== undefined) clearTimeout(timer);
        settled = true;
        const chunks = async function* (): AsyncGenerator<Uint8Array> {
          try {
            for await (const c of res) yield c;
          } catch (err) {
            if (err instanceof ConvergeError) throw err;
            throw new UnavailableError("UNAVAILABLE", `${what}: ${(err as Error).message}`, { cause: err });
          } finally {
            release();
          }
        };
        resolve({
          status: res.statusCode ?? 0,
          header: (name) => {
            const v = res.headers[name.toLowerCase()];
            return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
          },
          chunks,
          // Event-driven: cheaper per reply than the async iterator.
          text: () =>
            new Promise<string>((resolveText, rejectText) => {
              const parts: Uint8Array[] = [];
              res.on("data", (c) => parts.push(c));
              res.on("end", () => {
                release();
                resolveText(parts.length === 1 ? decoder.decode(parts[0]) : concatText(parts));
              });
              res.on("error", (err) => {
                release();
                rejectText(err instanceof ConvergeError ? err : new UnavailableError("UNAVAILABLE", `${what}: ${err.message}`, { cause: err }));
              });
            }),
          cancel: () => {
            release();
            res.destroy();
            req.destroy();
          },
        });
      });
      req.end(body);
    });
  }

  private async openWithFetch(
    method: string,
    target: string,
    options: RequestOptions,
    headers: Record<string, string>,
    ms: number | undefined,
  ): Promise<OpenResponse> {
    const what = `${method} ${target}`;
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) controller.abort();
    let timedOut = false;
    const timer =
      ms === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            controller.abort();
          }, ms);
    const release = (): void => options.signal?.removeEventListener("abort", onAbort);
    try {
      const response = await this.fetchImpl!(this.url(target, options.query), { method, headers, body: options.body, signal: controller.signal });
      const chunks = async function* (): AsyncGenerator<Uint8Array> {
        if (response.body === null) return;
        const reader = response.body.getReader();
        try {
          for (;;) {
            const r = await reader.read();
            if (r.done) return;
            yield r.value;
          }
        } catch (err) {
          throw new UnavailableError("UNAVAILABLE", `${what}: ${(err as Error).message}`, { cause: err });
        } finally {
          release();
          reader.cancel().catch(() => undefined);
        }
      };
      return {
        status: response.status,
        header: (name) => response.headers.get(name),
        chunks,
        text: () => readAll(chunks()),
        cancel: () => {
          release();
          controller.abort();
        },
      };
    } catch (err) {
      release();
      if (timedOut) throw new DeadlineExceededError("DEADLINE_EXCEEDED", `${what}: no reply within ${ms} ms`, { cause: err });
      if (err instanceof ConvergeError) throw err;
      throw new UnavailableError("UNAVAILABLE", `${what}: ${(err as Error).message}`, { cause: err });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** One request; the timeout covers the whole reply. A non-2xx reply throws its typed error. */
  async call(method: string, target: string, options: RequestOptions = {}): Promise<Reply> {
    if (this.fetchImpl !== undefined) return this.callWithFetch(method, target, options);
    const ms = options.timeoutMs ?? this.timeoutMs;
    // One timer for the whole exchange: it destroys the request, which fails whichever read
    // is pending (the header or the body).
    let cancel: ((error: Error) => void) | undefined;
    const timer = setTimeout(
      () => cancel?.(new DeadlineExceededError("DEADLINE_EXCEEDED", `${method} ${target}: no reply within ${ms} ms`)),
      ms,
    );
    let response: OpenResponse;
    let text: string;
    try {
      response = await this.open(method, target, options, false, (c) => (cancel = c));
      text = await response.text();
    } finally {
      clearTimeout(timer);
    }
    return this.reply(response, text);
  }

  private reply(response: OpenResponse, text: string): Reply {
    if (response.status < 200 || response.status > 299) {
      throw errorFromReply(response.status, text, response.header("retry-after"));
    }
    return { status: response.status, headers: { get: (name) => response.header(name) }, text };
  }

  private async callWithFetch(method: string, target: string, options: RequestOptions): Promise<Reply> {
    const ms = options.timeoutMs ?? this.timeoutMs;
    const started = Date.now();
    const response = await this.open(method, target, options);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let text: string;
    try {
      text = await Promise.race([
        response.text(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            response.cancel();
            reject(new DeadlineExceededError("DEADLINE_EXCEEDED", `${method} ${target}: no reply within ${ms} ms`));
          }, Math.max(0, ms - (Date.now() - started)));
        }),
      ]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
    return this.reply(response, text);
  }


  async json<T>(method: string, target: string, options: RequestOptions = {}): Promise<T> {
    const reply = await this.call(method, target, options);
    return (reply.text.length === 0 ? undefined : JSON.parse(reply.text)) as T;
  }
}

/** A JSON request body with its media type. */
export function jsonBody(value: unknown): Pick<RequestOptions, "body" | "headers"> {
  return { body: JSON.stringify(value), headers: { "content-type": "application/json" } };
}
