// The inbox: an event's effect happens exactly once. The caller's database records the event's
// identity in the same transaction as the effect (docs/formats/outbox.md, "The inbox table");
// a redelivered event finds its row and is only acked.
import { Handler, HandlerContext } from "./consumer.js";
import { ReceivedEvent, eventIdentity } from "./events.js";

/**
 * What the inbox needs from the caller's database driver. `Tx` is whatever the driver calls a
 * transaction (a pg client inside BEGIN, a better-sqlite3 database in a transaction, ...).
 */
export interface InboxStore<Tx> {
  /** Runs `fn` in one transaction: commit when it resolves, roll back when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Inserts (consumer, eventId) unless present, in `tx`. True when it was inserted now. */
  recordEvent(tx: Tx, consumer: string, eventId: string): Promise<boolean>;
}

/** The effect of one event, inside the transaction that records it. */
export type Effect<Tx> = (event: ReceivedEvent, tx: Tx, context: HandlerContext) => Promise<void> | void;

/**
 * A consumer handler that applies `effect` at most once per event identity
 * (`<len(source)>:<source><id>`, the id the C++ inbox and the log use) and lets the loop ack
 * only after the transaction committed. `consumer` names the application (default: the group).
 */
export function inboxHandler<Tx>(store: InboxStore<Tx>, effect: Effect<Tx>, consumer?: string): Handler {
  return async (event, context) => {
    const id = inboxEventId(event);
    await store.transaction(async (tx) => {
      if (await store.recordEvent(tx, consumer ?? context.group, id)) {
        await effect(event, tx, context);
      }
    });
  };
}

/**
 * The id the inbox records for an event: its identity `<len(source)>:<source><id>`, except for
 * the store's change feed (source `/converge/store`), whose log records keep their unique bare
 * ids — what the C++ inbox consumer records too (docs/formats/outbox.md, "The inbox table"), so
 * consumers in both languages can share one inbox table.
 */
export function inboxEventId(event: { source: string; id: string }): string {
  return event.source === STORE_FEED_SOURCE ? event.id : eventIdentity(event.source, event.id);
}
const STORE_FEED_SOURCE = "/converge/store";

/** A minimal SQL connection inside a transaction: what a driver's query call returns. */
export interface SqlTx {
  query(sql: string, params: unknown[]): Promise<{ rowCount?: number | null; changes?: number; rows?: unknown[] }>;
}

/** The documented inbox table and insert, per database (docs/formats/outbox.md). */
export const INBOX_SQL = {
  sqlite: {
    create: [
      "CREATE TABLE IF NOT EXISTS converge_inbox (consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at INTEGER NOT NULL, PRIMARY KEY (consumer, event_id)) WITHOUT ROWID",
      "CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at)",
    ],
    insert: "INSERT INTO converge_inbox (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
  },
  postgres: {
    create: [
      "CREATE TABLE IF NOT EXISTS converge_inbox (consumer text NOT NULL, event_id text NOT NULL, processed_at bigint NOT NULL, PRIMARY KEY (consumer, event_id))",
      "CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at)",
    ],
    insert: "INSERT INTO converge_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
  },
} as const;

/** `recordEvent` over a SQL driver: one documented insert; inserted when it changed a row. */
export function sqlRecordEvent(dialect: "sqlite" | "postgres"): (tx: SqlTx, consumer: string, eventId: string) => Promise<boolean> {
  return async (tx, consumer, eventId) => {
    const r = await tx.query(INBOX_SQL[dialect].insert, [consumer, eventId, Date.now() * 1000]);
    return (r.rowCount ?? r.changes ?? 0) > 0;
  };
}
