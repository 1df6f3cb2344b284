// The transactional outbox writer: rows of the documented `converge_outbox` table
// (docs/formats/outbox.md), written through the caller's own query function inside the
// caller's own transaction, so the business change and its events commit together. A relay
// (`relays:` in converge serve, or `converge relay`) publishes them.
//
// The WAL outbox (docs/formats/wal-outbox.md): WalOutboxWriter emits each event as a
// transactional logical message (pg_logical_emit_message) in the caller's PostgreSQL
// transaction; no table is written, and a relay in mode "wal" reads them from a slot.
import { badInput } from "./errors.js";
import { CloudEventLike, extensionsOf, isJsonMediaType, isTextMediaType, toJsonEvent, withId } from "./events.js";
import { checkTopic } from "./client.js";

export type Dialect = "sqlite" | "postgres";
/** Runs one statement with positional parameters (`?` for SQLite, `$n` for PostgreSQL) in the
 * caller's transaction. */
export type QueryFn = (sql: string, params: unknown[]) => Promise<unknown>;

/** The documented schema, statement by statement. */
export const OUTBOX_SCHEMA: Readonly<Record<Dialect, readonly string[]>> = {
  sqlite: [
    `CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT NOT NULL,
  topic           TEXT NOT NULL,
  partition_key   TEXT NOT NULL DEFAULT '',
  source          TEXT NOT NULL,
  type            TEXT NOT NULL,
  subject         TEXT,
  time            TEXT,
  datacontenttype TEXT,
  dataschema      TEXT,
  data_kind       TEXT,
  data            BLOB,
  extensions      TEXT,
  traceparent     TEXT,
  tracestate      TEXT,
  created_at      INTEGER NOT NULL DEFAULT 0
)`,
    "CREATE TABLE IF NOT EXISTS converge_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT OR IGNORE INTO converge_meta (name, value) VALUES ('outbox_format', '1')",
  ],
  postgres: [
    "SELECT pg_advisory_xact_lock(1668706609, 0)",
    `CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             bigserial PRIMARY KEY,
  id              text NOT NULL,
  topic           text NOT NULL,
  partition_key   text NOT NULL DEFAULT '',
  source          text NOT NULL,
  type            text NOT NULL,
  subject         text,
  time            text,
  datacontenttype text,
  dataschema      text,
  data_kind       text,
  data            bytea,
  extensions      text,
  traceparent     text,
  tracestate      text,
  created_at      bigint NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0)`,
    "CREATE TABLE IF NOT EXISTS converge_meta (name text PRIMARY KEY, value text NOT NULL)",
    "INSERT INTO converge_meta (name, value) VALUES ('outbox_format', '1') ON CONFLICT DO NOTHING",
  ],
};

const COLUMNS = [
  "id",
  "topic",
  "partition_key",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data_kind",
  "data",
  "extensions",
  "traceparent",
  "tracestate",
  "created_at",
] as const;

export type OutboxRow = Record<(typeof COLUMNS)[number], unknown>;

/** Per-key commit order on PostgreSQL: the writers' advisory lock (docs/formats/outbox.md, "Ordering"). */
export const PG_KEY_LOCK_SQL =
  "SELECT count(pg_advisory_xact_lock(1668705073, h)) FROM " +
  "(SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS keys";

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

function bytesOf(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

// Drivers bind a Buffer as a BLOB / bytea (a Buffer is a Uint8Array).
function blob(bytes: Uint8Array): Uint8Array {
  const B = (globalThis as { Buffer?: { from(b: Uint8Array): Uint8Array } }).Buffer;
  return B === undefined ? bytes : B.from(bytes);
}

/** The outbox row of one event (checked as the relay will check it). */
export function outboxRow(topic: string, event: CloudEventLike, options: { partitionKey?: string } = {}): OutboxRow {
  checkTopic(topic);
  if (event === null || typeof event !== "object") throw badInput("an event must be an object");
  if (typeof event.source !== "string" || event.source === "") throw badInput("attribute 'source' is required");
  if (typeof event.type !== "string" || event.type === "") throw badInput("attribute 'type' is required");
  const ext = extensionsOf(event);
  const partitionKey = options.partitionKey ?? (typeof ext.partitionkey === "string" ? ext.partitionkey : "");
  const traceparent = typeof ext.traceparent === "string" ? ext.traceparent : null;
  if (traceparent !== null && !TRACEPARENT.test(traceparent)) throw badInput(`traceparent '${traceparent}' is not valid W3C Trace Context`);
  delete ext.partitionkey;
  delete ext.traceparent;
  const tracestate = typeof ext.tracestate === "string" ? ext.tracestate : null;
  delete ext.tracestate;
  const ct = typeof event.datacontenttype === "string" ? event.datacontenttype : undefined;
  let dataKind: string | null = null;
  let data: Uint8Array | null = null;
  const bytes = bytesOf(event.data) ?? (typeof event.data_base64 === "string" ? Uint8Array.from(atob(event.data_base64), (c) => c.charCodeAt(0)) : undefined);
  if (bytes !== undefined) {
    dataKind = "binary";
    data = bytes;
  } else if (event.data !== undefined) {
    if (isJsonMediaType(ct)) {
      dataKind = "json";
      data = new TextEncoder().encode(JSON.stringify(event.data));
    } else if (typeof event.data === "string") {
      dataKind = isTextMediaType(ct!) ? "text" : "binary";
      data = new TextEncoder().encode(event.data);
    } else {
      throw badInput(`data of media type '${ct}' must be a string or bytes`);
    }
  }
  const time = event.time instanceof Date ? event.time.toISOString() : event.time ?? new Date().toISOString();
  return {
    id: typeof event.id === "string" && event.id !== "" ? event.id : crypto.randomUUID(),
    topic,
    partition_key: partitionKey,
    source: event.source,
    type: event.type,
    subject: event.subject ?? null,
    time,
    datacontenttype: ct ?? null,
    dataschema: event.dataschema ?? null,
    data_kind: dataKind,
    data: data === null ? null : blob(data),
    extensions: Object.keys(ext).length === 0 ? null : JSON.stringify(ext),
    traceparent,
    tracestate,
    created_at: Date.now() * 1000,
  };
}

export class OutboxWriter {
  readonly dialect: Dialect;

  constructor(dialect: Dialect) {
    if (dialect !== "sqlite" && dialect !== "postgres") throw badInput(`unknown dialect '${String(dialect)}'`);
    this.dialect = dialect;
  }

  /** Creates the table (run once; PostgreSQL: inside a transaction, it takes the DDL lock). */
  async createSchema(query: QueryFn): Promise<void> {
    for (const sql of OUTBOX_SCHEMA[this.dialect]) await query(sql, []);
  }

  /** The insert statement of one row. */
  insertSql(): string {
    const marks = COLUMNS.map((_, i) => (this.dialect === "sqlite" ? "?" : `$${i + 1}`));
    return `INSERT INTO converge_outbox (${COLUMNS.join(", ")}) VALUES (${marks.join(", ")})`;
  }

  /**
   * Writes the events' rows with `query`, which must run in the caller's open transaction (the
   * one that makes the business change). PostgreSQL: takes the per-key locks first. Returns
   * the rows (their ids: the events' ids).
   */
  async write(query: QueryFn, topic: string, events: CloudEventLike[], options: { partitionKey?: string } = {}): Promise<OutboxRow[]> {
    if (!Array.isArray(events) || events.length === 0) throw badInput("write needs a non-empty array of events");
    const rows = events.map((e) => outboxRow(topic, e, options));
    if (this.dialect === "postgres") {
      const keys = [...new Set(rows.map((r) => r.partition_key as string).filter((k) => k !== ""))];
      if (keys.length > 0) await query(PG_KEY_LOCK_SQL, [keys]);
    }
    const sql = this.insertSql();
    for (const row of rows) await query(sql, COLUMNS.map((c) => row[c]));
    return rows;
  }

  /** PostgreSQL: wake the relay now (send after COMMIT; optional, relays also poll). */
  static readonly NOTIFY_SQL = "SELECT pg_notify('converge_outbox', '')";
}

/** The WAL outbox: a message's prefix is this and the topic (docs/formats/wal-outbox.md). */
export const WAL_PREFIX = "converge:";
/** Emits one event: $1 the prefix, $2 the event in CloudEvents JSON structured mode. */
export const WAL_EMIT_SQL = "SELECT pg_logical_emit_message(true, $1, $2)";

/**
 * The two parameters of WAL_EMIT_SQL for one event, checked as the relay checks them (as the C++
 * `outbox_format::BuildEmitParams` after `Outbox::Emit`'s checks): `converge:<topic>` and the
 * event as CloudEvents JSON, with an id (a UUID) and a time (now) filled in when absent. Throws
 * a ClientInputError for a bad topic, an invalid event or a bad traceparent.
 */
export function walEmitParams(topic: string, event: CloudEventLike): [string, string] {
  checkTopic(topic);
  const body = toJsonEvent(withId(event));
  const traceparent = body.traceparent;
  if (traceparent !== undefined && (typeof traceparent !== "string" || !TRACEPARENT.test(traceparent))) {
    throw badInput(`traceparent '${String(traceparent)}' is not valid W3C Trace Context`);
  }
  if (body.time === undefined) body.time = new Date().toISOString();
  return [WAL_PREFIX + topic, JSON.stringify(body)];
}

export class WalOutboxWriter {
  /**
   * Emits one message per event, in the order given, with `query` ($1/$2 parameters), which
   * must run in the caller's open PostgreSQL transaction: the messages commit or roll back with
   * it. Every event is checked before anything is emitted. Returns the events' ids.
   */
  async emit(query: QueryFn, topic: string, events: CloudEventLike[]): Promise<string[]> {
    if (!Array.isArray(events) || events.length === 0) throw badInput("emit needs a non-empty array of events");
    const params = events.map((e) => walEmitParams(topic, e));
    for (const p of params) await query(WAL_EMIT_SQL, p);
    return params.map((p) => (JSON.parse(p[1]) as { id: string }).id);
  }
}
