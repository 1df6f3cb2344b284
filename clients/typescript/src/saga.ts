// A saga participant over converge serve (docs/formats/saga.md, "Participants in other
// languages"): it consumes its command topic, keeps one ledger entry per (saga id, step) in the
// caller's database in the same transaction as the step's effect, publishes the reply to the
// command's `sagareplyto` topic in structured mode with typed attributes and the copied
// `sagatoken`, and acks the command only after the reply was published.
import { ConvergeClient, PublishResult } from "./client.js";
import { ConsumeOptions, HandlerContext, PermanentError, consume } from "./consumer.js";
import { ReceivedEvent, bytesToBase64 } from "./events.js";

export type LedgerState = "applied" | "refused" | "fenced" | "compensated";

/** One ledger row (the state of docs/formats/saga.md, "Participant memory"). */
export interface LedgerEntry {
  state: LedgerState;
  /** applied: the action's result (sent again with a repeated reply). */
  result?: string;
  /** refused: the status code name and message sent in the reply. */
  code?: string;
  message?: string;
}

/** What the participant needs from the caller's database: a transaction and one row per step. */
export interface SagaLedger<Tx> {
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  getEntry(tx: Tx, sagaId: string, step: number): Promise<LedgerEntry | undefined>;
  putEntry(tx: Tx, sagaId: string, step: number, entry: LedgerEntry): Promise<void>;
}

/** Thrown by an action: refused for good (reply `failed`, never applied) — except for an
 * action after the pivot (`sagaretriable`), where no failure is final and the reply is
 * `retry`. `code` is a status code name such as FAILED_PRECONDITION (the default). */
export class StepRefused extends Error {
  constructor(message: string, readonly code: string = "FAILED_PRECONDITION") {
    super(message);
    this.name = "StepRefused";
  }
}

/** The command's attributes, read and checked. */
export interface SagaCommand {
  sagaId: string;
  step: number;
  stepName: string;
  kind: "action" | "compensate" | "cancel";
  attempt: number;
  /** Actions after the pivot: a failure is never final (the participant replies `retry`). */
  retriable: boolean;
  type: string;
  replyTo: string;
  token: string | undefined;
  /** The saga's input. */
  data: unknown;
  event: ReceivedEvent;
}

/** An action returns its result (any JSON value or text; sent as the reply's data). */
export type ActionHandler<Tx> = (command: SagaCommand, tx: Tx) => Promise<unknown> | unknown;
export type CompensationHandler<Tx> = (command: SagaCommand, tx: Tx) => Promise<void> | void;

export interface ParticipantOptions<Tx> extends Omit<ConsumeOptions, "retryDelayMs"> {
  /** The participant's command topic (the definition's `participant`). */
  topic: string;
  /** Its consumer group (default the topic name, with characters a group name cannot have as `-`). */
  group?: string;
  ledger: SagaLedger<Tx>;
  /** Action handlers by command type (the definition's `action`). */
  actions: Record<string, ActionHandler<Tx>>;
  /** Compensation handlers by command type (the definition's `compensation`). */
  compensations?: Record<string, CompensationHandler<Tx>>;
}

const REPLY_SOURCE = "/converge/saga/participant";
const UINT = /^(0|[1-9][0-9]*)$/;

function intAttribute(e: ReceivedEvent, name: string): number {
  const v = e[name];
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === "string" && UINT.test(v)) return Number(v);
  throw new Error(`saga command ${e.id}: attribute '${name}' is not a non-negative integer`);
}

function boolAttribute(e: ReceivedEvent, name: string): boolean {
  const v = e[name];
  if (v === undefined || v === false || v === "false") return false;
  if (v === true || v === "true") return true;
  throw new Error(`saga command ${e.id}: attribute '${name}' is not a boolean`);
}

function stringAttribute(e: ReceivedEvent, name: string): string {
  const v = e[name];
  if (typeof v !== "string" || v.length === 0) throw new Error(`saga command ${e.id}: attribute '${name}' is missing`);
  return v;
}

/** Reads a command event (throws for an event that is not one). */
export function parseSagaCommand(event: ReceivedEvent): SagaCommand {
  const kind = stringAttribute(event, "sagakind");
  if (kind !== "action" && kind !== "compensate" && kind !== "cancel") {
    throw new Error(`saga command ${event.id}: unknown sagakind '${kind}'`);
  }
  return {
    sagaId: stringAttribute(event, "sagaid"),
    step: intAttribute(event, "sagastep"),
    stepName: typeof event.sagastepname === "string" ? event.sagastepname : "",
    kind,
    attempt: intAttribute(event, "sagaattempt"),
    retriable: boolAttribute(event, "sagaretriable"),
    type: event.type,
    replyTo: stringAttribute(event, "sagareplyto"),
    token: typeof event.sagatoken === "string" ? event.sagatoken : undefined,
    data: event.data,
    event,
  };
}

export interface SagaReply {
  outcome: "ok" | "failed" | "retry";
  applied?: boolean;
  code?: string;
  /** ok: the result; failed/retry: the error message. */
  body?: string;
}

function resultText(result: unknown): string | undefined {
  if (result === undefined || result === null) return undefined;
  if (typeof result === "string") return result;
  if (result instanceof Uint8Array) return new TextDecoder().decode(result);
  return JSON.stringify(result);
}

/**
 * Publishes the reply to a command. Structured mode, so `sagastep` and `sagaattempt` travel as
 * JSON integers and `sagaapplied` as a boolean; `sagatoken` is copied; the saga id is the
 * partition key; the reply id is the command id + "/reply" (a repeated reply is deduplicated).
 */
export async function publishSagaReply(client: ConvergeClient, command: SagaCommand, reply: SagaReply): Promise<PublishResult> {
  const event: Record<string, unknown> = {
    specversion: "1.0",
    id: `${command.event.id}/reply`,
    source: REPLY_SOURCE,
    type: "converge.saga.reply",
    sagaid: command.sagaId,
    sagastep: command.step,
    sagakind: command.kind,
    sagaattempt: command.attempt,
    sagaoutcome: reply.outcome,
    partitionkey: command.sagaId,
  };
  if (command.token !== undefined) event.sagatoken = command.token;
  if (reply.applied !== undefined) event.sagaapplied = reply.applied;
  if (reply.code !== undefined) event.sagacode = reply.code;
  if (reply.body !== undefined && reply.body.length > 0) {
    // The reply's data is opaque bytes to the orchestrator (the result or the message).
    event.datacontenttype = "application/octet-stream";
    event.data_base64 = bytesToBase64(new TextEncoder().encode(reply.body));
  }
  return client.publish(command.replyTo, event as { source: string; type: string });
}

/**
 * Decides and records the reply to one command in the ledger transaction (fencing, repeats,
 * refusals). Throws for a transient failure of the handler: nothing was recorded then.
 */
export async function handleSagaCommand<Tx>(
  command: SagaCommand,
  ledger: SagaLedger<Tx>,
  actions: Record<string, ActionHandler<Tx>>,
  compensations: Record<string, CompensationHandler<Tx>>,
): Promise<SagaReply> {
  return ledger.transaction(async (tx) => {
    const entry = await ledger.getEntry(tx, command.sagaId, command.step);
    if (command.kind === "action") {
      if (entry?.state === "applied") return { outcome: "ok", body: entry.result };
      if (entry?.state === "refused") return { outcome: "failed", code: entry.code, body: entry.message };
      if (entry?.state === "fenced" || entry?.state === "compensated") {
        // Compensated or cancelled before (or after) it ran: a late action must never apply.
        return { outcome: "failed", code: "ABORTED", body: "the step was fenced by a compensation or cancel" };
      }
      const action = actions[command.type];
      if (action === undefined) {
        const message = `no action handler for command type '${command.type}'`;
        // After the pivot nothing is final: the step waits for a participant that has one.
        if (command.retriable) return { outcome: "retry", code: "FAILED_PRECONDITION", body: message };
        await ledger.putEntry(tx, command.sagaId, command.step, { state: "refused", code: "FAILED_PRECONDITION", message });
        return { outcome: "failed", code: "FAILED_PRECONDITION", body: message };
      }
      let result: unknown;
      try {
        result = await action(command, tx);
      } catch (err) {
        // Transient, or any failure after the pivot: roll back, reply retry.
        if (!(err instanceof StepRefused) || command.retriable) throw err;
        await ledger.putEntry(tx, command.sagaId, command.step, { state: "refused", code: err.code, message: err.message });
        return { outcome: "failed", code: err.code, body: err.message };
      }
      const text = resultText(result);
      await ledger.putEntry(tx, command.sagaId, command.step, text === undefined ? { state: "applied" } : { state: "applied", result: text });
      return { outcome: "ok", body: text };
    }
    // compensate or cancel
    if (entry === undefined) {
      await ledger.putEntry(tx, command.sagaId, command.step, { state: "fenced" });
      return { outcome: "ok", applied: false };
    }
    if (entry.state === "fenced" || entry.state === "refused") return { outcome: "ok", applied: false };
    if (entry.state === "compensated") return { outcome: "ok", applied: true };
    // applied
    if (command.kind === "cancel") return { outcome: "ok", applied: true };
    const compensation = compensations[command.type];
    if (compensation === undefined) throw new Error(`no compensation handler for command type '${command.type}'`);
    await compensation(command, tx);
    await ledger.putEntry(tx, command.sagaId, command.step, { state: "compensated" });
    return { outcome: "ok", applied: true };
  });
}

/**
 * Runs a participant until `options.signal` aborts. Per command: ledger transaction (effect +
 * entry), then the reply, then the ack. A handler that throws anything but `StepRefused` is
 * transient: the reply says `retry` (nothing applied) and the command is acked; a failed
 * reply publish leaves the command unacked, so it comes again and the ledger repeats the reply.
 */
export async function runParticipant<Tx>(client: ConvergeClient, options: ParticipantOptions<Tx>): Promise<void> {
  const compensations = options.compensations ?? {};
  // Group names take fewer characters than topic names ([A-Za-z0-9_-], at most 64).
  const group = options.group ?? options.topic.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64);
  await consume(
    client,
    options.topic,
    group,
    async (event: ReceivedEvent, _context: HandlerContext) => {
      let command: SagaCommand;
      try {
        command = parseSagaCommand(event);
      } catch (err) {
        throw new PermanentError((err as Error).message);
      }
      let reply: SagaReply;
      try {
        reply = await handleSagaCommand(command, options.ledger, options.actions, compensations);
      } catch (err) {
        const code = err instanceof StepRefused ? err.code : "UNAVAILABLE";
        reply = { outcome: "retry", code, body: err instanceof Error ? err.message : String(err) };
        if (command.kind !== "action") {
          // A compensation must eventually happen: leave the command to come again.
          throw err;
        }
      }
      await publishSagaReply(client, command, reply);
      // consume() acks after this resolves: the reply is published by then.
    },
    { ...options, retryDelayMs: (attempt) => Math.min(10_000, 100 * Math.pow(2, attempt - 1)) },
  );
}

/** Starts sagas and waits for them (the starter side; the same calls as on ConvergeClient). */
export class SagaStarter {
  constructor(private readonly client: ConvergeClient) {}

  start(definition: string, data?: unknown, id?: string): Promise<string> {
    return this.client.startSaga({ definition, data, id });
  }

  wait(id: string, timeoutMs = 60_000) {
    return this.client.waitForSaga(id, { timeoutMs });
  }
}

/**
 * The ledger table of the C++ `SqlSagaLedger` (src/saga/sql_ledger.cc), so participants in
 * C++, Python and TypeScript can keep their ledgers the same way: one row per (saga_id, step),
 * `state` 1 applied, 2 refused, 3 fenced, 4 compensated; `result` the applied action's result,
 * or for a refusal the status text `CODE: message`.
 */
export const SAGA_LEDGER_SQL = {
  sqlite: {
    create: [
      "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER NOT NULL, state INTEGER NOT NULL, result BLOB, updated_micros INTEGER NOT NULL, PRIMARY KEY(saga_id, step))",
      "CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated ON converge_saga_ledger(updated_micros)",
    ],
    lock: undefined as string | undefined,
    select: "SELECT state, result FROM converge_saga_ledger WHERE saga_id = ? AND step = ?",
    upsert:
      "INSERT INTO converge_saga_ledger(saga_id, step, state, result, updated_micros) VALUES (?, ?, ?, ?, ?) " +
      "ON CONFLICT(saga_id, step) DO UPDATE SET state = excluded.state, result = excluded.result, updated_micros = excluded.updated_micros",
  },
  postgres: {
    create: [
      "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER NOT NULL, state SMALLINT NOT NULL, result BYTEA, updated_micros BIGINT NOT NULL, PRIMARY KEY(saga_id, step))",
      "CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated ON converge_saga_ledger(updated_micros)",
    ],
    // Two deliveries of one command serialize here (a row that does not exist yet cannot be
    // locked), as in the C++ ledger.
    lock: "SELECT pg_advisory_xact_lock(hashtext($1), $2::int)" as string | undefined,
    select: "SELECT state, result FROM converge_saga_ledger WHERE saga_id = $1 AND step = $2",
    upsert:
      "INSERT INTO converge_saga_ledger(saga_id, step, state, result, updated_micros) VALUES ($1, $2, $3, $4, $5) " +
      "ON CONFLICT(saga_id, step) DO UPDATE SET state = excluded.state, result = excluded.result, updated_micros = excluded.updated_micros",
  },
};

const STATE_CODES: Record<LedgerState, number> = { applied: 1, refused: 2, fenced: 3, compensated: 4 };
const STATE_NAMES: Record<number, LedgerState> = { 1: "applied", 2: "refused", 3: "fenced", 4: "compensated" };

/** A driver's rows: objects by column name, or arrays in column order. */
type SqlRow = Record<string, unknown> | unknown[];
/** A connection inside the caller's transaction (what `SqlTx` in inbox.ts also is). */
export interface SqlLedgerTx {
  query(sql: string, params: unknown[]): Promise<{ rows?: SqlRow[] }>;
}

function cell(row: SqlRow, name: string, index: number): unknown {
  return Array.isArray(row) ? row[index] : row[name];
}

function textOf(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === "string") {
    // psql and some drivers show bytea as hex text.
    if (/^\\x([0-9a-f]{2})*$/i.test(v)) {
      const hex = v.slice(2);
      const bytes = new Uint8Array(hex.length / 2);
      for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
      return new TextDecoder().decode(bytes);
    }
    return v;
  }
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  return String(v);
}

/**
 * `getEntry` and `putEntry` of a `SagaLedger` over the C++ ledger table, for a caller whose
 * `transaction` hands out a `SqlLedgerTx` (`toSql(tx)` adapts any other handle).
 */
export function sqlSagaLedger<Tx>(
  dialect: "sqlite" | "postgres",
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>,
  toSql: (tx: Tx) => SqlLedgerTx = (tx) => tx as unknown as SqlLedgerTx,
): SagaLedger<Tx> {
  const sql = SAGA_LEDGER_SQL[dialect];
  return {
    transaction,
    async getEntry(tx, sagaId, step) {
      const q = toSql(tx);
      if (sql.lock !== undefined) await q.query(sql.lock, [sagaId, step]);
      const r = await q.query(sql.select, [sagaId, step]);
      const row = r.rows?.[0];
      if (row === undefined) return undefined;
      const state = STATE_NAMES[Number(cell(row, "state", 0))];
      if (state === undefined) throw new Error(`saga ledger: bad state ${String(cell(row, "state", 0))} for ${sagaId}/${step}`);
      const result = textOf(cell(row, "result", 1));
      if (state === "refused") {
        const text = result ?? "";
        const colon = text.indexOf(": ");
        const code = colon > 0 && /^[A-Z_]+$/.test(text.slice(0, colon)) ? text.slice(0, colon) : "FAILED_PRECONDITION";
        return { state, code, message: colon > 0 ? text.slice(colon + 2) : text };
      }
      return result === undefined || result === "" ? { state } : { state, result };
    },
    async putEntry(tx, sagaId, step, entry) {
      const result = entry.state === "refused" ? `${entry.code ?? "FAILED_PRECONDITION"}: ${entry.message ?? ""}` : entry.result ?? "";
      const bytes = new TextEncoder().encode(result);
      const B = (globalThis as { Buffer?: { from(b: Uint8Array): Uint8Array } }).Buffer;
      await toSql(tx).query(sql.upsert, [sagaId, step, STATE_CODES[entry.state], B === undefined ? bytes : B.from(bytes), Date.now() * 1000]);
    },
  };
}
