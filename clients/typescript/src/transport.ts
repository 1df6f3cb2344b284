// One HTTP call to converge serve over the fetch Node ships (undici: keep-alive connection
// pool per origin). Error replies become typed errors (errors.ts).
import { ConvergeError, DeadlineExceededError, UnavailableError, errorFromReply } from "./errors.js";

export interface ClientOptions {
  /** Base URL of converge serve (default http://127.0.0.1:8080). */
  url?: string;
  /** Bearer token (omit when the server runs without auth). */
  token?: string;
  /** Per-request timeout in ms (default 30000); long polls add their wait to it. */
  timeoutMs?: number;
  /** Attempts for calls that are safe to repeat (publish, reads) on a retryable error (default 4). */
  maxAttempts?: number;
  /** A fetch implementation (default the global one). */
  fetch?: typeof fetch;
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
  headers: Headers;
  text: string;
}

/** Joins path segments, each percent-encoded (RFC 3986; `+` is sent as %2B). */
export function path(...segments: string[]): string {
  return "/" + segments.map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join("/");
}

export class Transport {
  readonly baseUrl: string;
  readonly maxAttempts: number;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.url ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 4);
    this.fetchImpl = options.fetch ?? fetch;
  }

  url(target: string, query?: RequestOptions["query"]): string {
    let u = this.baseUrl + target;
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

  /**
   * Sends the request and returns the raw response; throws on transport errors. The caller's
   * signal keeps aborting the response body until `release()` is called.
   */
  async open(
    method: string,
    target: string,
    options: RequestOptions = {},
    timeout = true,
  ): Promise<{ response: Response; release: () => void }> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (this.token !== undefined) headers["authorization"] = `Bearer ${this.token}`;
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) controller.abort();
    const ms = options.timeoutMs ?? this.timeoutMs;
    let timedOut = false;
    const timer = timeout
      ? setTimeout(() => {
          timedOut = true;
          controller.abort();
        }, ms)
      : undefined;
    try {
      const response = await this.fetchImpl(this.url(target, options.query), {
        method,
        headers,
        body: options.body,
        signal: controller.signal,
      });
      return { response, release: () => options.signal?.removeEventListener("abort", onAbort) };
    } catch (err) {
      options.signal?.removeEventListener("abort", onAbort);
      if (timedOut) throw new DeadlineExceededError("DEADLINE_EXCEEDED", `${method} ${target}: no reply within ${ms} ms`, { cause: err });
      if (options.signal?.aborted) throw err;
      throw new UnavailableError("UNAVAILABLE", `${method} ${target}: ${(err as Error).message}`, { cause: err });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** One request; a non-2xx reply throws its typed error. */
  async call(method: string, target: string, options: RequestOptions = {}): Promise<Reply> {
    const { response, release } = await this.open(method, target, options);
    // The timeout covers the body too.
    const ms = options.timeoutMs ?? this.timeoutMs;
    let text: string;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      text = await Promise.race([
        response.text(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new DeadlineExceededError("DEADLINE_EXCEEDED", `${method} ${target}: no reply within ${ms} ms`)), ms);
        }),
      ]);
    } catch (err) {
      if (err instanceof ConvergeError) throw err;
      throw new UnavailableError("UNAVAILABLE", `${method} ${target}: ${(err as Error).message}`, { cause: err });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      release();
    }
    if (response.status < 200 || response.status > 299) {
      throw errorFromReply(response.status, text, response.headers.get("retry-after"));
    }
    return { status: response.status, headers: response.headers, text };
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
