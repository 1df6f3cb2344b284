// Push deliveries read with readPush (structured and binary mode, signature, attempt, log
// position) from a real `converge serve`, and lease extension (extendLeases) with the topic's
// dedup window in its description.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Serve, eventually, lib } from "./serve.mjs";

const SECRET = "ts-push-secret-0123456789";
const servers = [];
after(async () => {
  for (const s of servers) await s.close();
});

// An endpoint reading every request with readPush; the first delivery of the event whose
// subject is "retry" is answered 500.
async function endpoint() {
  const got = [];
  const raw = [];
  const refused = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = new Uint8Array(Buffer.concat(chunks));
      let status = 204;
      try {
        const d = await lib.readPush(SECRET, req.headers, body);
        got.push({ path: req.url, d });
        raw.push({ headers: { ...req.headers }, body });
        if (d.event.subject === "retry" && d.attempt === 1) status = 500;
      } catch (err) {
        refused.push(String(err));
        status = 400;
      }
      res.writeHead(status, { "content-length": "0" });
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { got, raw, refused, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test("push requests are verified and read in both modes", async () => {
  const ep = await endpoint();
  let config = "subscriptions:\n";
  for (const mode of ["structured", "binary"]) {
    config += `  - {name: ts-${mode}, topic: pushed, endpoint: '${ep.url}/${mode}', mode: ${mode}, secret: ${SECRET}, initial_backoff_ms: 10, max_backoff_ms: 50}\n`;
  }
  const serve = await new Serve(config).start();
  servers.push(serve);
  const client = serve.client();
  try {
    await client.createTopic("pushed", { partitions: 2 });
    const events = [
      { type: "t.json", source: "/ts/push", id: "j1", subject: "a", data: { n: 1, s: "café" }, partitionkey: "k1", prio: 3 },
      { type: "t.bytes", source: "/ts/push", id: "b1", subject: "b", datacontenttype: "application/octet-stream", data: new Uint8Array([0, 255]), partitionkey: "k2" },
      { type: "t.text", source: "/ts/push", id: "x1", subject: "retry", datacontenttype: "text/plain", data: 'hé "x"', partitionkey: "k3" },
    ];
    const published = [];
    for (const e of events) published.push(await client.publish("pushed", e));
    await eventually(
      () => new Set(ep.got.filter(({ d }) => !(d.event.subject === "retry" && d.attempt === 1)).map(({ path, d }) => path + d.event.id)).size === 6,
      30_000,
      "every event pushed in both modes",
    );
    for (const { path, d } of ep.got) {
      const mode = path.slice(1);
      const i = events.findIndex((e) => e.id === d.event.id);
      const sent = events[i];
      assert.equal(d.subscription, `ts-${mode}`);
      assert.deepEqual([d.partition, d.offset], [published[i].partition, published[i].offset]);
      assert.deepEqual([d.event.type, d.event.source, d.event.subject], [sent.type, sent.source, sent.subject]);
      assert.deepEqual(d.event.data instanceof Uint8Array ? [...d.event.data] : d.event.data, sent.data instanceof Uint8Array ? [...sent.data] : sent.data);
      assert.equal(d.event.partitionkey, sent.partitionkey);
      if (sent.prio !== undefined) assert.equal(d.event.prio, mode === "structured" ? 3 : "3");
      assert.equal(d.attempt, sent.subject === "retry" ? d.attempt : 1);
    }
    assert.ok(ep.got.some(({ d }) => d.event.subject === "retry" && d.attempt === 2));
    assert.deepEqual(ep.refused, []);
    // A changed header or body, a wrong secret or a stale timestamp is refused.
    const bin = ep.raw[ep.got.findIndex(({ path }) => path === "/binary")];
    assert.equal(await lib.verifyPushSignature(SECRET, bin.headers, bin.body), true);
    assert.equal(await lib.verifyPushSignature("another-secret-0123", bin.headers, bin.body), false);
    assert.equal(await lib.verifyPushSignature(SECRET, bin.headers, new Uint8Array([...bin.body, 32])), false);
    assert.equal(await lib.verifyPushSignature(SECRET, bin.headers, bin.body, { nowMs: Date.now() + 900_000 }), false);
    await assert.rejects(lib.readPush(SECRET, { ...bin.headers, "ce-type": "t.forged" }, bin.body), (err) => err instanceof lib.PushRequestError && err.signature);
  } finally {
    ep.close();
  }
});

test("an extended lease is kept and an expired one is not revived", async () => {
  const serve = await new Serve("groups:\n  lease_ms: 1500\n").start();
  servers.push(serve);
  const client = serve.client();
  await client.createTopic("slow", { dedup_window_ms: 4321 });
  assert.equal((await client.describeTopic("slow")).dedup_window_ms, 4321);
  for (const n of [0, 1]) await client.publish("slow", { type: "t", source: "/ts/slow", id: `e${n}`, data: { n } });
  const start = Date.now();
  const got = await client.fetch("slow", "g", { maxEvents: 10, waitMs: 2000, consumer: "w" });
  assert.equal(got.length, 2);
  const [kept, dropped] = got.sort((a, b) => (a.event.id < b.event.id ? -1 : 1));
  let r = await client.extendLeases("slow", "g", [kept], 8000, "w");
  assert.equal(r.extended, 1);
  assert.deepEqual(r.lost, []);
  assert.ok(r.leases[0].lease_expires_at_ms > kept.lease_expires_at_ms + 4000);
  const again = [];
  while (Date.now() - start < 4000) {
    const batch = await client.fetch("slow", "g", { maxEvents: 10, waitMs: 500, consumer: "w" });
    if (batch.length > 0) await client.ack("slow", "g", batch, "w");
    again.push(...batch);
  }
  assert.deepEqual(again.map((d) => [d.event.id, d.attempt]), [["e1", 2]]);
  r = await client.extendLeases("slow", "g", [dropped, kept], 8000, "w");
  assert.equal(r.extended, 1);
  assert.deepEqual(r.lost, [0]);
  assert.equal(r.leases[0].offset, kept.offset);
  const acked = await client.ack("slow", "g", [kept], "w");
  assert.equal(acked.acked, 1);
  await assert.rejects(client.extendLeases("slow", "g", [kept], 0), lib.InvalidArgumentError);
});
