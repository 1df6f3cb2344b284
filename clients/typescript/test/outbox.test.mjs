// The outbox writer: rows written in the caller's transaction of a real SQLite database (the
// sqlite3 shell stands in for a driver) and of a real PostgreSQL server (psql stands in) are
// relayed by converge serve's `relays:` into the log and arrive as the events written, in
// order per key.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { Serve, binary, eventually, lib } from "./serve.mjs";
import { Postgres, havePostgres } from "./postgres.mjs";

function haveSqlite() {
  try {
    execFileSync("sqlite3", ["-version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// A tiny "driver": collects one transaction's statements, parameters inlined as SQL literals,
// and runs them with the sqlite3 shell between BEGIN and COMMIT.
function literal(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "number") return String(v);
  if (v instanceof Uint8Array) return `X'${Buffer.from(v).toString("hex")}'`;
  return `'${String(v).replaceAll("'", "''")}'`;
}
function sqliteTransaction(db, fn) {
  const statements = [];
  const query = async (sql, params) => {
    let i = 0;
    statements.push(sql.replace(/\?/g, () => literal(params[i++])));
  };
  return fn(query).then(() => execFileSync("sqlite3", [db], { input: ["BEGIN", ...statements, "COMMIT"].join(";\n") + ";\n" }));
}

let serve;
let db;
before(async () => {
  if (!haveSqlite()) return;
  serve = new Serve();
  db = join(serve.dir, "shop.db");
  const writer = new lib.OutboxWriter("sqlite");
  execFileSync("sqlite3", [db, "PRAGMA journal_mode=WAL"]);
  await sqliteTransaction(db, async (q) => {
    await writer.createSchema(q);
    await q("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)", []);
  });
  serve.configYaml = `relays:\n  sources:\n    - name: shop\n      database: sqlite:${db}\n      poll_interval_ms: 100\n`;
  await serve.start();
});
after(async () => serve?.close());

test("rows written with the business change are relayed as the events", { skip: !haveSqlite() && "no sqlite3 shell" }, async (t) => {
  const client = serve.client();
  const writer = new lib.OutboxWriter("sqlite");
  await sqliteTransaction(db, async (q) => {
    await q("INSERT INTO orders (id, total) VALUES (?, ?)", ["o-1", 42]);
    await writer.write(q, "shop-orders", [
      { source: "/shop", type: "order.placed", id: "ob-1", partitionkey: "customer-7", data: { order: "o-1", total: 42 }, tenant: "acme", rank: 2 },
      { source: "/shop", type: "order.note", id: "ob-2", subject: "o-1", datacontenttype: "text/plain", data: "gift wrap" },
      { source: "/shop", type: "order.blob", id: "ob-3", datacontenttype: "application/octet-stream", data: new Uint8Array([0, 255, 7]) },
    ]);
  });
  const seen = new Map();
  await eventually(async () => {
    try {
      for (const d of await client.fetch("shop-orders", "check", { waitMs: 200 })) {
        seen.set(d.event.id, d.event);
        await client.ack("shop-orders", "check", [d]);
      }
    } catch (err) {
      if (!(err instanceof lib.NotFoundError)) throw err;  // the relay creates the topic
    }
    return seen.size === 3;
  }, 30_000, "the relayed events");
  const placed = seen.get("ob-1");
  assert.deepEqual(placed.data, { order: "o-1", total: 42 });
  assert.equal(placed.partitionkey, "customer-7");
  assert.equal(placed.tenant, "acme");
  assert.equal(placed.rank, 2);
  assert.ok(placed.time);
  assert.equal(seen.get("ob-2").data, "gift wrap");
  assert.equal(seen.get("ob-2").subject, "o-1");
  assert.deepEqual([...seen.get("ob-3").data], [0, 255, 7]);
  // The relay deleted the rows it published.
  const left = execFileSync("sqlite3", [db, "SELECT count(*) FROM converge_outbox"]).toString().trim();
  assert.equal(left, "0");
  // The same event published over HTTP too is stored once (one identity for both paths).
  const again = await client.publish("shop-orders", { source: "/shop", type: "order.placed", id: "ob-1", data: {} });
  assert.equal(again.duplicate, true);
});

test("the PostgreSQL layout: per-key locks first, then $n inserts", async () => {
  const statements = [];
  const writer = new lib.OutboxWriter("postgres");
  await writer.createSchema(async (sql) => statements.push(sql));
  assert.match(statements[0], /pg_advisory_xact_lock\(1668706609, 0\)/);
  assert.match(statements[1], /bigserial PRIMARY KEY/);
  assert.match(statements[1], /data\s+bytea/);
  const calls = [];
  await writer.write(async (sql, params) => calls.push([sql, params]), "orders", [
    { source: "/o", type: "t", partitionkey: "b", data: 1 },
    { source: "/o", type: "t", partitionkey: "a", data: 2 },
    { source: "/o", type: "t", partitionkey: "b", data: 3 },
  ]);
  assert.equal(calls.length, 4);
  assert.match(calls[0][0], /pg_advisory_xact_lock\(1668705073, h\).*hashtext\(k\).*ORDER BY h/);
  assert.deepEqual(calls[0][1], [["b", "a"]]);
  assert.match(calls[1][0], /VALUES \(\$1, \$2, .*\$15\)$/);
  const row = calls[1][1];
  assert.equal(row[1], "orders");
  assert.equal(row[2], "b");
  assert.equal(row[9], "json");
  assert.equal(Buffer.from(row[10]).toString(), "1");
});

test("PostgreSQL: rows written with the per-key locks are relayed in key order", { skip: !havePostgres() && "no PostgreSQL 15" }, async () => {
  const pg = await new Postgres().start();
  const serve2 = new Serve();
  try {
    const writer = new lib.OutboxWriter("postgres");
    await pg.transaction((q) => writer.createSchema(q));
    await pg.transaction(async (q) => {
      await q("CREATE TABLE orders (id text PRIMARY KEY, total int)", []);
    });
    // Three transactions, two keys; each writes the business row and its events.
    for (let t = 0; t < 3; t++) {
      await pg.transaction(async (q) => {
        await q("INSERT INTO orders (id, total) VALUES ($1, $2)", [`o-${t}`, t]);
        await writer.write(q, "pg-orders", [
          { source: "/pg", type: "order.placed", id: `a-${t}`, partitionkey: "alice", data: { t } },
          { source: "/pg", type: "order.placed", id: `b-${t}`, partitionkey: "bob", data: { t }, traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01" },
        ]);
      });
    }
    assert.equal(pg.psql("SELECT count(*) FROM converge_outbox"), "6");
    serve2.configYaml = `relays:\n  sources:\n    - name: pg\n      database: ${pg.conninfo}\n      poll_interval_ms: 100\n`;
    await serve2.start();
    const client = serve2.client();
    const byKey = { alice: [], bob: [] };
    await eventually(async () => {
      try {
        for (const d of await client.fetch("pg-orders", "check", { waitMs: 200, maxEvents: 100 })) {
          byKey[d.event.partitionkey].push(d.event);
          await client.ack("pg-orders", "check", [d]);
        }
      } catch (err) {
        if (!(err instanceof lib.NotFoundError)) throw err;
      }
      return byKey.alice.length + byKey.bob.length === 6;
    }, 30_000, "the relayed events");
    assert.deepEqual(byKey.alice.map((e) => e.id), ["a-0", "a-1", "a-2"]);
    assert.deepEqual(byKey.bob.map((e) => e.data.t), [0, 1, 2]);
    assert.equal(byKey.bob[0].traceparent, "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
    await eventually(() => pg.psql("SELECT count(*) FROM converge_outbox") === "0", 20_000, "the relay to delete its rows");
  } finally {
    await serve2.close();
    await pg.close();
  }
});

test("PostgreSQL WAL outbox: emitted events are relayed from the WAL in commit order; rolled-back ones never", { skip: !havePostgres() && "no PostgreSQL 15" }, async () => {
  const pg = await new Postgres().start(["wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"]);
  const serve2 = new Serve();
  try {
    pg.psql("CREATE TABLE orders (id text PRIMARY KEY, total int)");
    // The slot first (the relay never creates it): the documented command.
    execFileSync(binary(), ["relay", "--source", pg.conninfo, "--mode", "wal", "--slot", "ts_wal", "--create-slots"], { stdio: "pipe" });
    const writer = new lib.WalOutboxWriter();
    for (let t = 0; t < 3; t++) {
      await pg.transaction(async (q) => {
        await q("INSERT INTO orders (id, total) VALUES ($1, $2)", [`o-${t}`, t]);
        await writer.emit(q, "wal-orders", [
          { source: "/pg", type: "order.placed", id: `a-${t}`, partitionkey: "alice", data: { t } },
          { source: "/pg", type: "order.placed", id: `b-${t}`, partitionkey: "bob", data: { t }, traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01" },
        ]);
      });
    }
    // A transaction that fails (the business insert conflicts) emits nothing.
    await assert.rejects(pg.transaction(async (q) => {
      await writer.emit(q, "wal-orders", [{ source: "/pg", type: "never", id: "rolled-back", partitionkey: "alice" }]);
      await q("INSERT INTO orders (id, total) VALUES ($1, $2)", ["o-0", 9]);
    }));
    serve2.configYaml = `relays:\n  sources:\n    - name: pgwal\n      database: ${pg.conninfo}\n      mode: wal\n      wal_slot: ts_wal\n      poll_interval_ms: 100\n`;
    await serve2.start();
    const client = serve2.client();
    const byKey = { alice: [], bob: [] };
    await eventually(async () => {
      try {
        for (const d of await client.fetch("wal-orders", "check", { waitMs: 200, maxEvents: 100 })) {
          byKey[d.event.partitionkey].push(d.event);
          await client.ack("wal-orders", "check", [d]);
        }
      } catch (err) {
        if (!(err instanceof lib.NotFoundError)) throw err;
      }
      return byKey.alice.length + byKey.bob.length >= 6;
    }, 30_000, "the relayed events");
    assert.deepEqual(byKey.alice.map((e) => e.id), ["a-0", "a-1", "a-2"]);
    assert.deepEqual(byKey.bob.map((e) => e.data.t), [0, 1, 2]);
    assert.equal(byKey.bob[0].traceparent, "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
    assert.ok(byKey.alice.every((e) => typeof e.time === "string"));
    // Nothing more (the failed transaction's event).
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await client.fetch("wal-orders", "check", { waitMs: 300, maxEvents: 10 }), []);
  } finally {
    await serve2.close();
    await pg.close();
  }
});

test("WAL outbox: emit parameters follow the relay's rules", async () => {
  const [prefix, content] = lib.walEmitParams("orders", { source: "/s", type: "t", id: "e1", data: { a: 1 }, partitionkey: "k", n: 3 });
  assert.equal(prefix, "converge:orders");
  const body = JSON.parse(content);
  assert.deepEqual([body.specversion, body.id, body.source, body.type, body.partitionkey, body.n], ["1.0", "e1", "/s", "t", "k", 3]);
  assert.deepEqual(body.data, { a: 1 });
  assert.equal(typeof body.time, "string");
  assert.equal(JSON.parse(lib.walEmitParams("t", { source: "/s", type: "t", data: new Uint8Array([0, 255]) })[1]).data_base64, "AP8=");
  assert.throws(() => lib.walEmitParams("_dlq.outbox", { source: "/s", type: "t" }), lib.InvalidArgumentError);
  assert.throws(() => lib.walEmitParams("t", { source: "/s", type: "t", traceparent: "nope" }), /traceparent/);
  const calls = [];
  const record = async (sql, params) => calls.push([sql, params]);
  await assert.rejects(new lib.WalOutboxWriter().emit(record, "t", [{ source: "/s", type: "t" }, { source: "", type: "t" }]));
  assert.equal(calls.length, 0); // nothing emitted for a bad batch
  const ids = await new lib.WalOutboxWriter().emit(record, "t", [{ source: "/s", type: "t" }]);
  assert.deepEqual(calls, [[lib.WAL_EMIT_SQL, ["converge:t", calls[0][1][1]]]]);
  assert.equal(JSON.parse(calls[0][1][1]).id, ids[0]);
});
