// The shared store (`/v1/collections/...`): documents with versions and strong ETags, and
// `update(key, fn)`, a read-modify-write that retries when another writer got there first.
import { Backoff, sleep } from "./backoff.js";
import { ConvergeClient } from "./client.js";
import { AbortedError, AlreadyExistsError, ConvergeError, NotFoundError, badInput } from "./errors.js";
import { jsonBody, path } from "./transport.js";

export interface StoredDocument<T = unknown> {
  key: string;
  value: T;
  version: number;
  /** The strong ETag, quotes included (`"42"`): pass it back as `ifMatch`. */
  etag: string;
  expiresAtMs?: number;
}

export interface WriteResult {
  version: number;
  etag: string;
  created: boolean;
  merged: boolean;
  /** `Converge-Consistency-Token` of the write (read-your-writes on a replica). */
  consistencyToken?: string;
}

export interface PutOptions {
  /** Write only if the document is at this ETag (`"42"`), or exists (`*`). */
  ifMatch?: string;
  /** `*`: write only if the document does not exist. */
  ifNoneMatch?: "*";
  ttlMs?: number;
}

export interface CollectionConfig {
  owner?: string;
  writers?: string[];
  default_ttl_ms?: number;
  max_document_bytes?: number;
  merge_fields?: Record<string, string>;
}

export interface TransactionOp {
  op: "put" | "delete" | "check";
  collection: string;
  key: string;
  value?: unknown;
  if_match?: string;
  if_none_match?: "*";
  ttl_ms?: number;
}

export interface UpdateOptions {
  /** Attempts before the last stale-ETag error is thrown (default 20). */
  maxAttempts?: number;
  ttlMs?: number;
}

/** Returned by an update function to delete the document instead of writing it. */
export const DELETE = Symbol("converge.store.delete");

function checkKey(key: unknown): string {
  if (typeof key !== "string" || key.length === 0) throw badInput("a document key is a non-empty string");
  return key;
}

export class Collection {
  constructor(private readonly client: ConvergeClient, readonly name: string) {
    if (typeof name !== "string" || name.length === 0) throw badInput("a collection name is a non-empty string");
  }

  private docPath(key: string): string {
    return path("v1/collections", this.name, "docs", checkKey(key));
  }

  /** Creates or reconfigures the collection. */
  async configure(config: CollectionConfig = {}): Promise<Record<string, unknown>> {
    return this.client.transport.json("PUT", path("v1/collections", this.name), jsonBody(config));
  }

  /** The document, or undefined when there is none. */
  async get<T = unknown>(key: string): Promise<StoredDocument<T> | undefined> {
    try {
      const r = await this.client.transport.call("GET", this.docPath(key));
      const expires = r.headers.get("converge-expires-at-ms");
      return {
        key,
        value: JSON.parse(r.text) as T,
        version: Number(r.headers.get("converge-version")),
        etag: r.headers.get("etag") ?? "",
        ...(expires === null ? {} : { expiresAtMs: Number(expires) }),
      };
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async put(key: string, value: unknown, options: PutOptions = {}): Promise<WriteResult> {
    if (value === undefined) throw badInput("a document value must be JSON (not undefined)");
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (options.ifMatch !== undefined) headers["if-match"] = options.ifMatch;
    if (options.ifNoneMatch !== undefined) headers["if-none-match"] = options.ifNoneMatch;
    if (options.ttlMs !== undefined) headers["converge-ttl-ms"] = String(options.ttlMs);
    const r = await this.client.transport.call("PUT", this.docPath(key), { body: JSON.stringify(value), headers });
    const result = JSON.parse(r.text) as WriteResult;
    const token = r.headers.get("converge-consistency-token");
    if (token !== null) result.consistencyToken = token;
    return result;
  }

  async delete(key: string, options: { ifMatch?: string } = {}): Promise<void> {
    const headers: Record<string, string> = {};
    if (options.ifMatch !== undefined) headers["if-match"] = options.ifMatch;
    await this.client.transport.call("DELETE", this.docPath(key), { headers });
  }

  /** One page of documents in key order. */
  async list(options: { prefix?: string; startKey?: string; endKey?: string; limit?: number; pageToken?: string } = {}) {
    return this.client.transport.json<{ documents: Array<{ key: string; version: number; etag: string; value: unknown }>; next_page_token: string }>(
      "GET",
      path("v1/collections", this.name, "docs"),
      { query: { prefix: options.prefix, start_key: options.startKey, end_key: options.endKey, limit: options.limit, page_token: options.pageToken } },
    );
  }

  /**
   * Read-modify-write: `fn` gets the current value (undefined when absent) and returns the new
   * one (or `DELETE`). The write is conditional on what was read (`If-Match` its ETag, or
   * `If-None-Match: *` when absent); when another writer changed the document meanwhile the
   * server answers 412 and `fn` runs again on the new value. `fn` may therefore run more than
   * once: keep it free of other side effects.
   */
  async update<T = unknown>(
    key: string,
    fn: (current: T | undefined, document: StoredDocument<T> | undefined) => T | typeof DELETE | Promise<T | typeof DELETE>,
    options: UpdateOptions = {},
  ): Promise<WriteResult | undefined> {
    const maxAttempts = options.maxAttempts ?? 20;
    const backoff = new Backoff({ baseMs: 5, maxMs: 500 });
    for (let attempt = 1; ; attempt++) {
      const doc = await this.get<T>(key);
      const next = await fn(doc?.value, doc);
      try {
        if (next === DELETE) {
          if (doc === undefined) return undefined;
          await this.delete(key, { ifMatch: doc.etag });
          return undefined;
        }
        return await this.put(key, next, doc === undefined ? { ifNoneMatch: "*", ttlMs: options.ttlMs } : { ifMatch: doc.etag, ttlMs: options.ttlMs });
      } catch (err) {
        // 412 ABORTED: a stale If-Match; 412 ALREADY_EXISTS: created since we read; 404 on a
        // delete: deleted since we read. All mean "read again".
        const stale =
          err instanceof AbortedError ||
          (err instanceof AlreadyExistsError && err.status === 412) ||
          (next === DELETE && err instanceof NotFoundError);
        if (!stale || attempt >= maxAttempts) throw err;
        await sleep(backoff.next());
      }
    }
  }
}

/** `POST /v1/collections/_transaction`: all ops commit or none. */
export async function commitTransaction(client: ConvergeClient, ops: TransactionOp[]): Promise<{ commit_seq: number; results: WriteResult[] }> {
  if (!Array.isArray(ops) || ops.length === 0) throw badInput("a transaction needs at least one op");
  return client.transport.json("POST", "/v1/collections/_transaction", jsonBody({ ops }));
}
