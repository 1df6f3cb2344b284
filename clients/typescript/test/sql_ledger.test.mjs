// The SQL pieces an application plugs into its own driver, against a real PostgreSQL 15 (psql
// as the driver): the inbox insert and the saga ledger in the C++ SqlSagaLedger's table, inside
// the application's transactions — the effect, the inbox row and the ledger entry commit or roll
// back together.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { lib } from "./serve.mjs";
import { Postgres, PsqlSession, havePostgres } from "./postgres.mjs";

const skip = !havePostgres() && "no PostgreSQL 15";
let pg;
let session;
let store;
before(async () => {
  if (skip) return;
  pg = await new Postgres().start();
  session = new PsqlSession(pg.conninfo);
  // The application's transaction over its driver.
  const transaction = async (fn) => {
    await session.query("BEGIN");
    try {
      const r = await fn(session);
      await session.query("COMMIT");
      return r;
    } catch (err) {
      await session.query("ROLLBACK");
      throw err;
    }
  };
  const recordEvent = lib.sqlRecordEvent("postgres");
  store = { ...lib.sqlSagaLedger("postgres", transaction), recordEvent };
  for (const sql of [...lib.SAGA_LEDGER_SQL.postgres.create, ...lib.INBOX_SQL.postgres.create, "CREATE TABLE stock (sku text PRIMARY KEY, reserved int NOT NULL)"]) {
    await session.query(sql);
  }
});
after(async () => {
  session?.close();
  await pg?.close();
});

const cmd = (kind, type, step = 0) => ({ sagaId: "o-1", step, stepName: "x", kind, attempt: 1, retriable: false, type, replyTo: "r", token: "t", data: null, event: {} });

test("the ledger in the C++ table: applied, repeated, refused, fenced, rolled back", { skip }, async () => {
  let runs = 0;
  const actions = {
    "stock.reserve": async (c, tx) => {
      runs++;
      await tx.query("INSERT INTO stock (sku, reserved) VALUES ($1, 1) ON CONFLICT (sku) DO UPDATE SET reserved = stock.reserved + 1", ["sku-1"]);
      return { reservation: "r-1" };
    },
    "stock.refuse": async () => {
      throw new lib.StepRefused("out of stock", "FAILED_PRECONDITION");
    },
    "stock.broken": async (c, tx) => {
      await tx.query("INSERT INTO stock (sku, reserved) VALUES ($1, 1)", ["sku-broken"]);
      throw new Error("disk on fire");
    },
  };
  const compensations = { "stock.release": async (c, tx) => void (await tx.query("UPDATE stock SET reserved = reserved - 1 WHERE sku = $1", ["sku-1"])) };

  const first = await lib.handleSagaCommand(cmd("action", "stock.reserve"), store, actions, compensations);
  assert.deepEqual(first, { outcome: "ok", body: '{"reservation":"r-1"}' });
  const again = await lib.handleSagaCommand(cmd("action", "stock.reserve"), store, actions, compensations);
  assert.deepEqual(again, first);
  assert.equal(runs, 1);
  assert.equal(pg.psql("SELECT reserved FROM stock WHERE sku = 'sku-1'"), "1");
  assert.equal(pg.psql("SELECT state || ':' || convert_from(result, 'UTF8') FROM converge_saga_ledger WHERE saga_id = 'o-1' AND step = 0"), '1:{"reservation":"r-1"}');

  assert.deepEqual(await lib.handleSagaCommand(cmd("compensate", "stock.release"), store, actions, compensations), { outcome: "ok", applied: true });
  assert.equal(pg.psql("SELECT reserved FROM stock WHERE sku = 'sku-1'"), "0");
  assert.equal(pg.psql("SELECT state FROM converge_saga_ledger WHERE step = 0"), "4");

  const refused = await lib.handleSagaCommand(cmd("action", "stock.refuse", 1), store, actions, compensations);
  assert.deepEqual(refused, { outcome: "failed", code: "FAILED_PRECONDITION", body: "out of stock" });
  assert.deepEqual(await lib.handleSagaCommand(cmd("action", "stock.refuse", 1), store, actions, compensations), refused);
  assert.equal(pg.psql("SELECT state || ':' || convert_from(result, 'UTF8') FROM converge_saga_ledger WHERE step = 1"), "2:FAILED_PRECONDITION: out of stock");

  assert.deepEqual(await lib.handleSagaCommand(cmd("cancel", "converge.saga.cancel", 2), store, actions, compensations), { outcome: "ok", applied: false });
  const late = await lib.handleSagaCommand(cmd("action", "stock.reserve", 2), store, actions, compensations);
  assert.equal(late.code, "ABORTED");
  assert.equal(runs, 1);
  assert.equal(pg.psql("SELECT state FROM converge_saga_ledger WHERE step = 2"), "3");

  await assert.rejects(lib.handleSagaCommand(cmd("action", "stock.broken", 3), store, actions, compensations), /disk on fire/);
  assert.equal(pg.psql("SELECT count(*) FROM converge_saga_ledger WHERE step = 3"), "0");
  assert.equal(pg.psql("SELECT count(*) FROM stock WHERE sku = 'sku-broken'"), "0");
});

test("the inbox row and the effect commit together, and only once", { skip }, async () => {
  let applied = 0;
  const handler = lib.inboxHandler(store, async (event, tx) => {
    applied++;
    await tx.query("INSERT INTO stock (sku, reserved) VALUES ($1, 1) ON CONFLICT (sku) DO UPDATE SET reserved = stock.reserved + 1", [event.data.sku]);
    if (event.data.fail) throw new Error("handler failed");
  });
  const ctx = { group: "billing" };
  const event = { specversion: "1.0", source: "/orders", id: "e-1", type: "t", data: { sku: "sku-9" } };
  await handler(event, ctx);
  await handler(event, ctx);  // a redelivery
  assert.equal(applied, 1);
  assert.equal(pg.psql("SELECT reserved FROM stock WHERE sku = 'sku-9'"), "1");
  assert.equal(pg.psql("SELECT event_id FROM converge_inbox WHERE consumer = 'billing'"), "7:/orderse-1");
  // A handler that fails rolls its inbox row back with its effect: the retry applies it.
  const failing = { ...event, id: "e-2", data: { sku: "sku-9", fail: true } };
  await assert.rejects(handler(failing, ctx), /handler failed/);
  assert.equal(pg.psql("SELECT count(*) FROM converge_inbox WHERE event_id = '7:/orderse-2'"), "0");
  assert.equal(pg.psql("SELECT reserved FROM stock WHERE sku = 'sku-9'"), "1");
  await handler({ ...failing, data: { sku: "sku-9" } }, ctx);
  assert.equal(pg.psql("SELECT reserved FROM stock WHERE sku = 'sku-9'"), "2");
});
