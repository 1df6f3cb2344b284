// The consumer loop with the inbox, across crashes: a consumer process killed in the middle of
// a batch (by itself right after a commit and before the ack, and from outside) and restarted;
// every event's effect happens exactly once and each key's events apply in order. Both the
// fetch loop and the SSE stream loop.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { Serve, eventually, lib } from "./serve.mjs";

let serve;
let client;
before(async () => {
  serve = await new Serve().start();
  client = serve.client();
});
after(async () => serve.close());

function runChild(options) {
  const child = spawn(process.execPath, [new URL("./consumer_child.mjs", import.meta.url).pathname, JSON.stringify(options)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.commits = 0;
  child.stdoutText = "";
  child.stdout.on("data", (b) => {
    child.stdoutText += b.toString();
    child.commits = (child.stdoutText.match(/committed/g) ?? []).length;
  });
  child.exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return child;
}

async function publishWork(topic, keys, perKey) {
  const events = [];
  let n = 0;
  for (let seq = 0; seq < perKey; seq++) {
    for (const key of keys) events.push({ source: "/work", type: "work.item", partitionkey: key, data: { n: n++, key, seq } });
  }
  await client.publishBatch(topic, events);
  return n;
}

function checkJournal(file, total, keys, perKey) {
  const store = new lib.JournalStore(file);
  try {
    for (let n = 0; n < total; n++) assert.equal(store.get(`count/${n}`), 1, `event ${n} applied ${store.get(`count/${n}`)} times`);
    for (const key of keys) {
      assert.deepEqual(store.get(`order/${key}`), [...Array(perKey).keys()], `order of key ${key}`);
    }
  } finally {
    store.close();
  }
}

async function crashAndRedeliver(mode) {
  const topic = `work-${mode}`;
  const group = "g";
  await client.createTopic(topic, { partitions: 2 });
  // Short leases and sessions: a killed consumer's events come back within a second or two.
  await client.createGroup(topic, group, { lease_ms: 1000, session_timeout_ms: 1000, max_deliveries: 1000 });
  const keys = ["k0", "k1", "k2", "k3", "k4"];
  const perKey = 12;
  const total = await publishWork(topic, keys, perKey);
  const journal = join(serve.dir, `${mode}.journal`);
  const base = { url: serve.url, topic, group, journal, mode };

  // 1. Dies right after its 7th commit, before acking it: that event is redelivered.
  const a = runChild({ ...base, crashAfter: 7 });
  assert.equal((await a.exited).signal, "SIGKILL");
  // 2. Killed from outside in the middle of a batch.
  const b = runChild(base);
  await eventually(() => b.commits >= 10, 30_000, "the second consumer to commit");
  b.kill("SIGKILL");
  await b.exited;
  // 3. Runs to the end, then stops gracefully.
  const c = runChild(base);
  const done = async () => {
    const d = await client.describeTopic(topic);
    return d.groups.find((g) => g.name === group)?.lag === 0;
  };
  await eventually(done, 60_000, "every event acked");
  await eventually(() => c.stdoutText.includes("ready"), 20_000, "the consumer's SIGTERM handler");
  c.kill("SIGTERM");
  const exit = await c.exited;
  assert.equal(exit.code, 0, c.stdoutText);
  assert.match(c.stdoutText, /stopped/);
  checkJournal(journal, total, keys, perKey);
}

test("fetch loop: a consumer killed mid-batch and restarted applies every event once, in key order", async () => {
  await crashAndRedeliver("fetch");
});

test("stream loop: the same over Server-Sent Events", async () => {
  await crashAndRedeliver("stream");
});

test("a failing handler is nacked and retried with backoff; a PermanentError dead-letters", async () => {
  await client.createTopic("flaky");
  await client.publishBatch("flaky", [
    { source: "/f", type: "t", id: "ok-later", partitionkey: "a", data: 1 },
    { source: "/f", type: "t", id: "after", partitionkey: "a", data: 2 },
    { source: "/f", type: "t", id: "poison", partitionkey: "b", data: 3 },
  ]);
  const attempts = new Map();
  const order = [];
  const stop = new AbortController();
  const loop = lib.consume(
    client,
    "flaky",
    "g",
    async (event, ctx) => {
      attempts.set(event.id, ctx.delivery.attempt);
      if (event.id === "ok-later" && ctx.delivery.attempt < 3) throw new Error("not yet");
      if (event.id === "poison") throw new lib.PermanentError("cannot ever handle this");
      order.push(event.id);
    },
    { signal: stop.signal, waitMs: 200, retryDelayMs: () => 50 },
  );
  await eventually(() => order.length === 2, 20_000, "both events of key a");
  stop.abort();
  await loop;
  assert.deepEqual(order, ["ok-later", "after"]);
  assert.equal(attempts.get("ok-later"), 3);
  const dead = await client.transport.json("GET", "/v1/topics/flaky/groups/g/dead-letters");
  assert.equal(dead.dead_letters.length, 1);
  assert.equal(dead.dead_letters[0].event.id, "poison");
});

for (const mode of ["fetch", "stream"]) {
  test(`${mode} loop: the server restarts under it; the loop backs off and goes on`, async () => {
    const s2 = await new Serve().start();
    try {
      const c2 = s2.client({ timeoutMs: 5000 });
      await c2.createTopic("r");
      const publishSome = (from) =>
        c2.publishBatch("r", Array.from({ length: 5 }, (_, i) => ({ source: "/r", type: "t", id: `e${from + i}`, data: from + i })));
      await publishSome(0);
      const handled = new Set();
      const errors = [];
      const stop = new AbortController();
      const loop = lib.consume(c2, "r", "g", (e) => void handled.add(e.id), {
        mode,
        signal: stop.signal,
        waitMs: 300,
        backoff: { baseMs: 50, maxMs: 500 },
        onError: (err) => errors.push(err),
      });
      await eventually(() => handled.size === 5, 20_000, "the first events");
      const port = s2.port;
      await s2.stop("SIGTERM");
      await eventually(() => errors.length >= 2, 20_000, "the loop to notice the server is gone");
      await s2.start(port);
      await publishSome(5);
      await eventually(() => handled.size === 10, 30_000, "the events after the restart");
      stop.abort();
      await loop;
      assert.ok(errors.every((e) => e instanceof lib.ConvergeError && e.retryable), errors.map(String).join("; "));
    } finally {
      await s2.close();
    }
  });
}
