// Publish in the three CloudEvents modes, idempotency, delivery back, and the structural
// CloudEvent interop (an object shaped like the `cloudevents` package's class).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Serve, lib } from "./serve.mjs";

let serve;
let client;
before(async () => {
  serve = await new Serve().start();
  client = serve.client();
  await client.createTopic("orders", { partitions: 2 });
});
after(async () => serve.close());

// The shape of `new CloudEvent({...})` from the `cloudevents` npm package: context attributes
// and extensions as top-level properties, `data` behind a getter on the prototype, frozen.
class FakeSdkCloudEvent {
  #data;
  constructor(props) {
    this.id = props.id;
    this.type = props.type;
    this.source = props.source;
    this.specversion = "1.0";
    this.datacontenttype = props.datacontenttype ?? "application/json";
    this.time = new Date().toISOString();
    this.subject = props.subject;
    for (const [k, v] of Object.entries(props.extensions ?? {})) this[k] = v;
    this.#data = props.data;
    Object.freeze(this);
  }
  get data() {
    return this.#data;
  }
  toJSON() {
    return { ...this, data: this.#data };
  }
}

test("structured, batch and binary publish come back as the same events", async () => {
  const sdk = new FakeSdkCloudEvent({
    id: "sdk-1",
    type: "order.placed",
    source: "/orders",
    subject: "customer-1",
    data: { order: 1, items: ["a"] },
    extensions: { tenant: "acme", priority: 3, urgent: true },
  });
  const r1 = await client.publish("orders", sdk);
  assert.equal(r1.id, "sdk-1");
  assert.equal(r1.duplicate, false);
  const batch = await client.publishBatch("orders", [
    { source: "/orders", type: "order.placed", id: "b-1", data: { order: 2 }, partitionkey: "k2" },
    { source: "/orders", type: "order.note", id: "b-2", datacontenttype: "text/plain", data: "héllo wörld" },
  ]);
  assert.equal(batch.length, 2);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const r3 = await client.publishBinary("orders", {
    source: "/orders", subject: "a b%c ü",
    type: "order.blob",
    id: "bin-1",
    datacontenttype: "application/octet-stream",
    data: bytes,
    note: "ünïcode \"quoted\"",
  });
  assert.equal(r3.duplicate, false);
  const r4 = await client.publishBinary("orders", { source: "/orders", type: "order.json", id: "bin-2", data: { x: 1 } });
  assert.equal(r4.duplicate, false);

  const seen = new Map();
  for (let i = 0; i < 50 && seen.size < 5; i++) {
    for (const d of await client.fetch("orders", "check", { maxEvents: 100, waitMs: 200 })) {
      seen.set(d.event.id, d.event);
      await client.ack("orders", "check", [d]);
    }
  }
  assert.deepEqual(seen.get("sdk-1").data, { order: 1, items: ["a"] });
  assert.equal(seen.get("sdk-1").tenant, "acme");
  assert.equal(seen.get("sdk-1").priority, 3);
  assert.equal(seen.get("sdk-1").urgent, true);
  assert.equal(seen.get("sdk-1").subject, "customer-1");
  assert.equal(seen.get("b-1").partitionkey, "k2");
  assert.equal(seen.get("b-2").data, "héllo wörld");
  assert.deepEqual([...seen.get("bin-1").data], [...bytes]);
  assert.equal(seen.get("bin-1").subject, "a b%c ü");
  assert.equal(seen.get("bin-1").note, "ünïcode \"quoted\"");
  assert.deepEqual(seen.get("bin-2").data, { x: 1 });
  // A delivered event has the class's shape: it can be passed to `new CloudEvent(event)`.
  assert.equal(seen.get("sdk-1").specversion, "1.0");
});

test("a republished event is a duplicate, with the original position; ids are filled once", async () => {
  const e = { source: "/dup", type: "t", id: "same", data: 1 };
  const first = await client.publish("orders", e);
  const again = await client.publish("orders", e);
  assert.equal(again.duplicate, true);
  assert.equal(again.partition, first.partition);
  assert.equal(again.offset, first.offset);
  // The same id from another source is another event (identity is (source, id)).
  const other = await client.publish("orders", { ...e, source: "/dup2" });
  assert.equal(other.duplicate, false);
  // Without an id the client draws one.
  const fresh = await client.publish("orders", { source: "/dup", type: "t" });
  assert.match(fresh.id, /^[0-9a-f-]{36}$/);
  assert.equal(lib.eventIdentity("/orders", "01890a5d"), "7:/orders01890a5d");
  assert.equal(lib.eventIdentity("/é", "x"), "3:/éx");
  // The inbox records identities, and the store feed's bare ids as the C++ consumer does.
  assert.equal(lib.inboxEventId({ source: "/orders", id: "1" }), "7:/orders1");
  assert.equal(lib.inboxEventId({ source: "/converge/store", id: "stock/sku-1/42" }), "stock/sku-1/42");
});

test("publish retries a lost reply with the same id: the server dedupes it", async () => {
  // A fetch that loses the first reply after the server handled it.
  let calls = 0;
  const lossy = serve.client({
    fetch: async (url, init) => {
      const r = await fetch(url, init);
      if (++calls === 1) {
        await r.text();
        throw new TypeError("connection reset (simulated)");
      }
      return r;
    },
  });
  const r = await lossy.publish("orders", { source: "/retry", type: "t", data: 7 });
  assert.equal(calls, 2);
  assert.equal(r.duplicate, true);
});
