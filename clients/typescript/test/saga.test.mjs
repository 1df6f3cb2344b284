// Saga participants and the starter against the real orchestrator: a participant process
// killed mid-step (after its transaction committed and before its reply; after its reply and
// before its ack) — the saga completes and the step's effect happens once; a refused pivot
// compensates the earlier step once; fencing; the reply's attributes and mode.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { Serve, eventually, lib } from "./serve.mjs";

const DEFINITION = `name: order
version: 1
steps:
  - name: reserve
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 3000
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 3000
  - name: ship
    participant: shipping
    action: shipping.schedule
    timeout_ms: 3000
`;

let serve;
let client;
let stopInProcess;
let inProcessDone;
const payments = [];
before(async () => {
  serve = await new Serve().start();
  client = serve.client();
  assert.deepEqual(await client.registerSagaDefinition(DEFINITION), { name: "order", version: 1 });
  // Short leases: a killed participant's command comes back quickly.
  await client.ensureGroup("inventory", "inventory", { lease_ms: 1000, session_timeout_ms: 1000, max_deliveries: 1000 });
  // payments and shipping run in this process.
  const store = new lib.JournalStore(join(serve.dir, "others.journal"));
  stopInProcess = new AbortController();
  const common = { ledger: store, signal: stopInProcess.signal, waitMs: 300 };
  inProcessDone = Promise.all([
    lib.runParticipant(client, {
      ...common,
      topic: "payments",
      actions: {
        "payments.charge": async (cmd) => {
          payments.push(cmd.sagaId);
          if (cmd.data?.declined) throw new lib.StepRefused("card declined", "FAILED_PRECONDITION");
          return "charged";
        },
      },
    }),
    lib.runParticipant(client, {
      ...common,
      topic: "shipping",
      actions: {
        "shipping.schedule": async (cmd) => {
          // After the pivot a refusal is not final: the participant replies retry.
          if (cmd.data?.refuseShipping && cmd.attempt === 1) throw new lib.StepRefused("no courier yet");
          return "scheduled";
        },
      },
    }),
  ]);
});
after(async () => {
  stopInProcess.abort();
  await inProcessDone;
  await serve.close();
});

function participant(options) {
  const child = spawn(process.execPath, [new URL("./participant_child.mjs", import.meta.url).pathname, JSON.stringify({ url: serve.url, ...options })], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  child.ready = new Promise((resolve) => child.stdout.on("data", (b) => b.toString().includes("ready") && resolve()));
  return child;
}

async function stopped(child) {
  await child.ready;  // its SIGTERM handler is installed
  child.kill("SIGTERM");
  assert.equal((await child.exited).code, 0);
}

for (const crash of ["after-commit", "after-reply"]) {
  test(`inventory killed ${crash} on its first command: the saga completes, reserved once`, async () => {
    const journal = join(serve.dir, `inventory-${crash}.journal`);
    const id = await new lib.SagaStarter(client).start("order", { sku: "a" }, `saga-${crash}`);
    const first = participant({ journal, crash });
    assert.equal((await first.exited).signal, "SIGKILL");
    const second = participant({ journal });
    const saga = await client.waitForSaga(id, { timeoutMs: 60_000 });
    await stopped(second);
    assert.equal(saga.state, "completed", JSON.stringify(saga.history));
    const store = new lib.JournalStore(journal);
    assert.equal(store.get(`reserved/${id}`), 1);
    assert.equal(store.get(`released/${id}`), undefined);
    assert.equal(store.get(`ledger/${id}/0`).state, "applied");
    store.close();
  });
}

test("a refused pivot compensates the reservation once", async () => {
  const journal = join(serve.dir, "inventory-refused.journal");
  const p = participant({ journal });
  const id = await client.startSaga({ definition: "order", id: "declined-1", data: { declined: true } });
  const saga = await client.waitForSaga(id, { timeoutMs: 60_000 });
  await stopped(p);
  assert.equal(saga.state, "compensated", JSON.stringify(saga.history));
  const store = new lib.JournalStore(journal);
  assert.equal(store.get(`reserved/${id}`), 1);
  assert.equal(store.get(`released/${id}`), 1);
  assert.equal(store.get(`ledger/${id}/0`).state, "compensated");
  store.close();
});

test("a refusal after the pivot is retried, not final: the saga completes", async () => {
  const journal = join(serve.dir, "inventory-ship.journal");
  const p = participant({ journal });
  const id = await client.startSaga({ definition: "order", id: "ship-retry-1", data: { refuseShipping: true } });
  const saga = await client.waitForSaga(id, { timeoutMs: 60_000 });
  await stopped(p);
  assert.equal(saga.state, "completed", JSON.stringify(saga.history));
  assert.ok(saga.steps[2].attempts >= 2, JSON.stringify(saga.steps));
});

test("fencing: a compensation before the action fences it; repeats return the remembered reply", async () => {
  const store = new lib.JournalStore(join(serve.dir, "fence.journal"));
  let applied = 0;
  const actions = { "x.do": async () => ++applied };
  const compensations = { "x.undo": async () => undefined };
  const cmd = (kind, type, step = 0, retriable = false) => ({ sagaId: "s", step, stepName: "x", kind, attempt: 1, retriable, type, replyTo: "r", token: "t", data: null, event: {} });
  assert.deepEqual(await lib.handleSagaCommand(cmd("compensate", "x.undo"), store, actions, compensations), { outcome: "ok", applied: false });
  const late = await lib.handleSagaCommand(cmd("action", "x.do"), store, actions, compensations);
  assert.equal(late.outcome, "failed");
  assert.equal(late.code, "ABORTED");
  assert.equal(applied, 0);
  // A repeated action repeats its first outcome without running again.
  assert.deepEqual(await lib.handleSagaCommand(cmd("action", "x.do", 1), store, actions, compensations), { outcome: "ok", body: "1" });
  assert.deepEqual(await lib.handleSagaCommand(cmd("action", "x.do", 1), store, actions, compensations), { outcome: "ok", body: "1" });
  assert.equal(applied, 1);
  // A cancel of an applied step reports it applied; a transient failure records nothing.
  assert.deepEqual(await lib.handleSagaCommand(cmd("cancel", "converge.saga.cancel", 1), store, actions, compensations), { outcome: "ok", applied: true });
  const boom = { "x.do": async () => { throw new Error("db down"); } };
  await assert.rejects(lib.handleSagaCommand(cmd("action", "x.do", 2), store, boom, compensations), /db down/);
  assert.equal(store.get("ledger/s/2"), undefined);
  // After the pivot a refusal is not final: nothing is recorded and the participant says retry
  // (the orchestrator's transport of that reply is the same as any other).
  const refuse = { "x.do": async () => { throw new lib.StepRefused("not now"); } };
  await assert.rejects(lib.handleSagaCommand(cmd("action", "x.do", 3, true), store, refuse, compensations), /not now/);
  assert.equal(store.get("ledger/s/3"), undefined);
  const refused = await lib.handleSagaCommand(cmd("action", "x.do", 4, false), store, refuse, compensations);
  assert.deepEqual(refused, { outcome: "failed", code: "FAILED_PRECONDITION", body: "not now" });
  assert.equal(store.get("ledger/s/4").state, "refused");
  store.close();
});

test("a reply is structured JSON with typed attributes, the copied token and the saga id as key", async () => {
  await client.createTopic("replies-check");
  const command = lib.parseSagaCommand({
    specversion: "1.0",
    id: "o-1/2/compensate/3",
    source: "/converge/saga",
    type: "inventory.release",
    sagaid: "o-1",
    sagastep: "2",  // as a binary-mode command would carry it
    sagakind: "compensate",
    sagaattempt: 3,
    sagareplyto: "replies-check",
    sagatoken: "0123456789abcdef0123456789abcdef",
  });
  await lib.publishSagaReply(client, command, { outcome: "ok", applied: true, body: "done" });
  const [d] = await client.fetch("replies-check", "g", { waitMs: 1000 });
  const r = d.event;
  assert.equal(r.id, "o-1/2/compensate/3/reply");
  assert.equal(r.type, "converge.saga.reply");
  assert.equal(r.source, "/converge/saga/participant");
  assert.equal(r.sagastep, 2);
  assert.equal(r.sagaattempt, 3);
  assert.equal(r.sagaapplied, true);
  assert.equal(r.sagaoutcome, "ok");
  assert.equal(r.sagatoken, "0123456789abcdef0123456789abcdef");
  assert.equal(r.partitionkey, "o-1");
  assert.equal(new TextDecoder().decode(r.data), "done");
  assert.equal(command.retriable, false);
  assert.equal(lib.parseSagaCommand({ ...command.event, sagaretriable: "true" }).retriable, true);
  assert.equal(lib.parseSagaCommand({ ...command.event, sagaretriable: true }).retriable, true);
  assert.throws(() => lib.parseSagaCommand({ ...command.event, sagaretriable: "yes" }), /sagaretriable/);
  assert.throws(() => lib.parseSagaCommand({ ...command.event, sagastep: "07" }), /sagastep/);
  assert.throws(() => lib.parseSagaCommand({ ...command.event, sagakind: "undo" }), /sagakind/);
});
