// inventory: the shop's stock service (TypeScript, clients/typescript).
//
// - Owns the store collection `stock`: one document per SKU, `{sku, available, reservations}`
//   where `reservations` maps a saga (order) id to the quantity it holds. Every change is a
//   conditional write (`Collection.update`: If-Match the ETag read, read again and retry when
//   another writer got there first).
// - Is the participant of the saga's `reserve` step: a consumer group (`inventory`, pull) over
//   the command topic `shop.inventory-steps`, the saga ledger in a JournalStore (an fsync'ed
//   journal file), replies published before each ack (`runParticipant`).
//
// A reservation is idempotent by saga id in the document itself: the store write and the
// ledger are two systems, so after a crash between them the step runs again and must find its
// reservation already made instead of taking the stock twice. The release is idempotent the
// same way. For the same reason a step the ledger fences (a compensation that arrives while
// the ledger has no entry: the orchestrator gave up on an action whose outcome it does not
// know) also releases a reservation the store may hold from an attempt whose ledger entry a
// crash lost.
//
// Environment: CONVERGE_URL (default http://127.0.0.1:8080), INVENTORY_TOKEN,
// INVENTORY_JOURNAL (default var/inventory.journal), INITIAL_STOCK (JSON {sku: quantity}, the
// documents created when absent). Prints `ready` once it consumes; SIGTERM stops it gracefully.
import {
  AlreadyExistsError,
  ConvergeClient,
  JournalStore,
  JournalTx,
  PermissionDeniedError,
  LedgerEntry,
  SagaCommand,
  SagaLedger,
  StepRefused,
  UnauthenticatedError,
  runParticipant,
  sleep,
} from "../../../clients/typescript/src/index.js";

interface Order {
  id: string;
  sku: string;
  qty: number;
  amount: number;
  card: string;
}

interface StockDocument {
  sku: string;
  available: number;
  reservations: Record<string, number>;
}

const COMMAND_TOPIC = "shop.inventory-steps";
const GROUP = "inventory";
const DEFAULT_STOCK = '{"widget": 20, "gadget": 10, "limited": 5, "sold-out": 0}';

const client = new ConvergeClient({
  url: process.env.CONVERGE_URL ?? "http://127.0.0.1:8080",
  token: process.env.INVENTORY_TOKEN,
  timeoutMs: 20_000,
});
const stock = client.collection("stock");
const journal = new JournalStore(process.env.INVENTORY_JOURNAL ?? "var/inventory.journal");

function orderOf(command: SagaCommand): Order {
  const o = command.data as Partial<Order> | undefined;
  if (o === undefined || typeof o.sku !== "string" || typeof o.qty !== "number" || !(o.qty > 0)) {
    throw new StepRefused(`saga ${command.sagaId}: the command holds no order`, "INVALID_ARGUMENT");
  }
  return o as Order;
}

async function reserve(command: SagaCommand, tx: JournalTx): Promise<unknown> {
  const order = orderOf(command);
  const written = await stock.update<StockDocument>(order.sku, (doc) => {
    if (doc === undefined) throw new StepRefused(`unknown sku ${order.sku}`, "NOT_FOUND");
    if (doc.reservations[command.sagaId] !== undefined) return doc;  // made before a crash
    if (doc.available < order.qty) {
      throw new StepRefused(`out of stock: ${order.sku} has ${doc.available}, the order wants ${order.qty}`);
    }
    return {
      ...doc,
      available: doc.available - order.qty,
      reservations: { ...doc.reservations, [command.sagaId]: order.qty },
    };
  });
  tx.set(`reserved/${command.sagaId}`, order.qty);
  return { reserved: order.qty, version: written?.version };
}

/** Gives back what saga `sagaId` holds of `sku`, if anything (idempotent). */
async function releaseReservation(sku: string, sagaId: string): Promise<void> {
  const current = await stock.get<StockDocument>(sku);
  if (current === undefined || current.value.reservations[sagaId] === undefined) return;
  await stock.update<StockDocument>(sku, (doc) => {
    if (doc === undefined) throw new Error(`stock document ${sku} vanished`);
    const held = doc.reservations[sagaId];
    if (held === undefined) return doc;  // released meanwhile
    const reservations = { ...doc.reservations };
    delete reservations[sagaId];
    return { ...doc, available: doc.available + held, reservations };
  });
}

async function release(command: SagaCommand, tx: JournalTx): Promise<void> {
  const order = orderOf(command);
  await releaseReservation(order.sku, command.sagaId);
  tx.delete(`reserved/${command.sagaId}`);
  tx.set(`released/${command.sagaId}`, order.qty);
}

// The journal's ledger, releasing on a fence whatever the store holds for the saga.
const ledger: SagaLedger<JournalTx> = {
  transaction: (fn) => journal.transaction(fn),
  getEntry: (tx, sagaId, step) => journal.getEntry(tx, sagaId, step),
  async putEntry(tx: JournalTx, sagaId: string, step: number, entry: LedgerEntry): Promise<void> {
    if (entry.state === "fenced") {
      for (let page = await stock.list(); ; page = await stock.list({ pageToken: page.next_page_token })) {
        for (const doc of page.documents) {
          if ((doc.value as StockDocument).reservations?.[sagaId] !== undefined) await releaseReservation(doc.key, sagaId);
        }
        if (!page.next_page_token) break;
      }
    }
    await journal.putEntry(tx, sagaId, step, entry);
  },
};

const stop = new AbortController();
process.on("SIGTERM", () => stop.abort());
process.on("SIGINT", () => stop.abort());

/** Retries `fn` until it succeeds (the server may still be starting), or until stopped. A
 * refused token is a configuration error: no retry fixes it. */
async function untilDone<T>(what: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof UnauthenticatedError || err instanceof PermissionDeniedError || stop.signal.aborted) {
        process.stderr.write(`inventory: ${what}: ${String(err)}\n`);
        process.exit(stop.signal.aborted ? 0 : 1);
      }
      if (attempt % 20 === 0) process.stderr.write(`inventory: ${what}: ${String(err)}\n`);
      await sleep(Math.min(1000, 50 * attempt), stop.signal).catch(() => undefined);
    }
  }
}

async function setUp(): Promise<void> {
  await untilDone("collection", () => stock.configure({ owner: "inventory" }));
  const initial = JSON.parse(process.env.INITIAL_STOCK ?? DEFAULT_STOCK) as Record<string, number>;
  for (const [sku, available] of Object.entries(initial)) {
    await untilDone(`stock ${sku}`, async () => {
      try {
        await stock.put(sku, { sku, available, reservations: {} }, { ifNoneMatch: "*" });
      } catch (err) {
        if (!(err instanceof AlreadyExistsError)) throw err;  // kept from an earlier run
      }
    });
  }
  await untilDone("group", () => client.ensureGroup(COMMAND_TOPIC, GROUP, { start: "earliest" }));
}

await setUp();
process.stdout.write("ready\n");
await runParticipant(client, {
  topic: COMMAND_TOPIC,
  group: GROUP,
  consumer: `inventory-${process.pid}`,
  ledger,
  actions: { "inventory.reserve": reserve },
  compensations: { "inventory.release": release },
  waitMs: 2000,
  concurrency: 8,
  signal: stop.signal,
  onError: (err) => process.stderr.write(`inventory: ${String(err)}\n`),
});
journal.close();
