// The store client: documents with ETags, and update(key, fn) retrying on a stale ETag.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Serve, lib } from "./serve.mjs";

let serve;
let client;
before(async () => {
  serve = await new Serve().start();
  client = serve.client();
  await client.collection("stock").configure({});
});
after(async () => serve.close());

test("get, put with If-Match / If-None-Match, delete, list", async () => {
  const c = client.collection("stock");
  assert.equal(await c.get("nothing"), undefined);
  const w1 = await c.put("sku+1/a:b@c", { n: 1 }, { ifNoneMatch: "*" });
  assert.equal(w1.created, true);
  assert.match(w1.etag, /^"\d+"$/);
  assert.ok(w1.consistencyToken);
  const d = await c.get("sku+1/a:b@c");
  assert.deepEqual(d.value, { n: 1 });
  assert.equal(d.etag, w1.etag);
  assert.equal(d.version, w1.version);
  const page = await c.list({ prefix: "sku+" });
  assert.deepEqual(page.documents.map((x) => x.key), ["sku+1/a:b@c"]);
  await c.delete("sku+1/a:b@c", { ifMatch: w1.etag });
  assert.equal(await c.get("sku+1/a:b@c"), undefined);
});

test("update: a writer that changes the document between read and write makes it re-read", async () => {
  const c = client.collection("stock");
  const other = serve.client().collection("stock");
  await c.put("race", { n: 0 });
  let calls = 0;
  const result = await c.update("race", async (v) => {
    calls++;
    if (calls === 1) await other.put("race", { n: 100 });  // lands after our read
    return { n: v.n + 1 };
  });
  assert.equal(calls, 2);
  assert.equal(result.created, false);
  assert.deepEqual((await c.get("race")).value, { n: 101 });
});

test("update: 12 concurrent increments from separate clients all count", async () => {
  const key = "counter";
  let calls = 0;
  await Promise.all(
    Array.from({ length: 12 }, () =>
      serve.client().collection("stock").update(key, async (v) => {
        calls++;
        await new Promise((r) => setTimeout(r, 2));
        return (v ?? 0) + 1;
      }),
    ),
  );
  assert.equal((await client.collection("stock").get(key)).value, 12);
  assert.ok(calls > 12, `the race retried (${calls} calls)`);
});

test("update: creating races on If-None-Match; DELETE deletes; attempts run out with AbortedError", async () => {
  const c = client.collection("stock");
  const other = serve.client().collection("stock");
  let calls = 0;
  await c.update("fresh", async (v) => {
    if (calls++ === 0) await other.put("fresh", 5);  // created after our read found nothing
    return (v ?? 0) + 1;
  });
  assert.equal((await c.get("fresh")).value, 6);
  await c.update("fresh", () => lib.DELETE);
  assert.equal(await c.get("fresh"), undefined);
  await c.put("busy", 0);
  let n = 0;
  const err = await c
    .update("busy", async (v) => {
      await other.put("busy", ++n * 10);  // always stale
      return v + 1;
    }, { maxAttempts: 3 })
    .catch((e) => e);
  assert.ok(err instanceof lib.AbortedError, String(err));
  assert.equal(err.status, 412);
  assert.equal(n, 3);
});

test("a transaction commits all ops or none", async () => {
  const tx = await lib.commitTransaction(client, [
    { op: "put", collection: "stock", key: "t1", value: 1 },
    { op: "put", collection: "stock", key: "t2", value: 2, if_none_match: "*" },
  ]);
  assert.equal(tx.results.length, 2);
  const err = await lib
    .commitTransaction(client, [
      { op: "put", collection: "stock", key: "t3", value: 3 },
      { op: "put", collection: "stock", key: "t1", value: 9, if_match: '"999999"' },
    ])
    .catch((e) => e);
  assert.ok(err instanceof lib.AbortedError, String(err));
  assert.equal(await client.collection("stock").get("t3"), undefined);
});
