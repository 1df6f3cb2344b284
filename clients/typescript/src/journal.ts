// An example `InboxStore` and `SagaLedger`: a small key-value state kept in memory and made
// durable by an append-only journal file. Node 20 has no built-in SQLite, so this is what the
// tests (and quick prototypes) use; a real service implements the same two interfaces over its
// own database driver (see INBOX_SQL and the README).
//
// A transaction buffers its writes and commits them as ONE journal line, written with one
// write(2) and then fsync'd: after a crash the line is either complete (the whole transaction
// happened) or torn (the tail is cut at the next open, nothing of it happened). Transactions
// run one at a time (a queue), so the state a transaction reads is never changed under it.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, truncateSync, writeSync } from "node:fs";
import { InboxStore } from "./inbox.js";
import { LedgerEntry, SagaLedger } from "./saga.js";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

/** The transaction handle: reads see the transaction's own writes. */
export class JournalTx {
  readonly writes = new Map<string, JsonValue | undefined>();
  constructor(private readonly state: Map<string, JsonValue>) {}

  get(key: string): JsonValue | undefined {
    return this.writes.has(key) ? this.writes.get(key) : this.state.get(key);
  }
  set(key: string, value: JsonValue): void {
    this.writes.set(key, value);
  }
  delete(key: string): void {
    this.writes.set(key, undefined);
  }
}

export class JournalStore implements InboxStore<JournalTx>, SagaLedger<JournalTx> {
  private readonly state = new Map<string, JsonValue>();
  private queue: Promise<unknown> = Promise.resolve();
  private fd: number;

  /** Opens (or creates) the journal at `file`, replaying every complete transaction. */
  constructor(readonly file: string) {
    if (existsSync(file)) {
      const text = readFileSync(file, "utf8");
      let good = 0;
      for (let at = 0; at < text.length; ) {
        const nl = text.indexOf("\n", at);
        if (nl < 0) break;  // a torn last line: that transaction never committed
        let entry: [string, JsonValue | null][];
        try {
          entry = JSON.parse(text.slice(at, nl));
        } catch {
          break;
        }
        for (const [k, v] of entry) {
          if (v === null) this.state.delete(k);
          else this.state.set(k, v);
        }
        at = nl + 1;
        good = at;
      }
      // Cut a torn tail so the next line starts clean (byte length of the good prefix).
      const goodBytes = new TextEncoder().encode(text.slice(0, good)).length;
      if (goodBytes !== new TextEncoder().encode(text).length) truncateSync(file, goodBytes);
    }
    this.fd = openSync(file, "a");
  }

  /** The committed value of `key`. */
  get(key: string): JsonValue | undefined {
    return this.state.get(key);
  }

  /** Committed keys starting with `prefix`. */
  keys(prefix = ""): string[] {
    return [...this.state.keys()].filter((k) => k.startsWith(prefix));
  }

  transaction<T>(fn: (tx: JournalTx) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      const tx = new JournalTx(this.state);
      const result = await fn(tx);  // a throw: nothing is written (rollback)
      if (tx.writes.size > 0) {
        const entry = [...tx.writes].map(([k, v]) => [k, v === undefined ? null : v]);
        writeSync(this.fd, JSON.stringify(entry) + "\n");
        fsyncSync(this.fd);
        for (const [k, v] of tx.writes) {
          if (v === undefined) this.state.delete(k);
          else this.state.set(k, v);
        }
      }
      return result;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  async recordEvent(tx: JournalTx, consumer: string, eventId: string): Promise<boolean> {
    const key = `inbox/${consumer}/${eventId}`;
    if (tx.get(key) !== undefined) return false;
    tx.set(key, Date.now());
    return true;
  }

  async getEntry(tx: JournalTx, sagaId: string, step: number): Promise<LedgerEntry | undefined> {
    return tx.get(`ledger/${sagaId}/${step}`) as LedgerEntry | undefined;
  }

  async putEntry(tx: JournalTx, sagaId: string, step: number, entry: LedgerEntry): Promise<void> {
    tx.set(`ledger/${sagaId}/${step}`, entry as unknown as JsonValue);
  }

  close(): void {
    closeSync(this.fd);
  }
}
