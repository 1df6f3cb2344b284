#!/usr/bin/env node
// The TypeScript client's publish path against the C++ client's, in one run on one server:
// starts `converge serve` (temp dir, free port, topic durability fsync), then per mode runs
// `converge bench client-publish` (C++ client, N threads with a connection each) and the same
// workload with this client (N concurrent async publishers in one Node process; the global
// fetch pools connections per origin), and prints both with the ratio and `uptime`.
//
//   node clients/typescript/bench/publish_bench.mjs [--publishers 32] [--seconds 5] [--modes structured,batch] [--json]
//
// Needs CONVERGE_BINARY (or build/converge) and the compiled client (CONVERGE_TS_DIST, or
// clients/typescript/dist from `tsc -p clients/typescript`).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const publishers = Number(opt("publishers", "32"));
const seconds = Math.max(1, Math.round(Number(opt("seconds", "5"))));
const modes = opt("modes", "structured,batch").split(",");
const batchSize = Number(opt("batch", "100"));
const json = args.includes("--json");
if (!process.env.CONVERGE_BINARY) {
  const guess = fileURLToPath(new URL("../../../build/converge", import.meta.url));
  if (existsSync(guess)) process.env.CONVERGE_BINARY = guess;
}
const { Serve, lib, binary } = await import("../test/serve.mjs");

const uptime = () => execFileSync("uptime").toString().trim();
const padding = "x".repeat(80);

function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

async function tsPublish(client, mode, secs = seconds, tag = "") {
  const latencies = [];
  let events = 0;
  const t0 = performance.now();
  const deadline = t0 + secs * 1000;
  const one = async (index) => {
    let seq = 0;
    while (performance.now() < deadline) {
      const make = () => ({ source: "/bench/ts", type: "bench.publish", id: `ts${tag}-${index}-${seq}`, data: { n: seq++, p: padding } });
      const start = performance.now();
      if (mode === "structured") {
        await client.publish("bench-clients", make());
        events += 1;
      } else if (mode === "binary") {
        await client.publishBinary("bench-clients", make());
        events += 1;
      } else {
        await client.publishBatch("bench-clients", Array.from({ length: batchSize }, make));
        events += batchSize;
      }
      latencies.push(performance.now() - start);
    }
  };
  await Promise.all(Array.from({ length: publishers }, (_, i) => one(i)));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    workload: `publish_${mode}`,
    system: "ts-client",
    durability: "fsync",
    events_per_s: events / elapsed,
    p50_us: percentile(latencies, 0.5) * 1000,
    p99_us: percentile(latencies, 0.99) * 1000,
    p999_us: percentile(latencies, 0.999) * 1000,
    events,
    seconds: elapsed,
    note: `${publishers} publishers, ${mode === "batch" ? batchSize : 1} events/request; latency per request`,
  };
}

const serve = await new Serve("limits:\n  max_inflight_requests: 4096\n").start();
const rows = [];
const loadBefore = uptime();
try {
  const client = serve.client({ timeoutMs: 60_000 });
  await client.createTopic("bench-clients", { partitions: 1, durability: "fsync" });
  for (const mode of modes) {
    // `converge bench client-publish` has no binary mode: that row is the TypeScript client's alone.
    const cppMode = mode === "binary" ? null : mode;
    let cpp = null;
    if (cppMode) {
      const out = execFileSync(binary(), [
        "bench", "client-publish", "--port", String(serve.port), "--modes", cppMode, "--publishers", String(publishers),
        "--seconds", String(seconds), "--batch", String(batchSize), "--topic", "bench-clients", "--json",
      ]).toString();
      cpp = JSON.parse(out.trim().split("\n").pop());
      rows.push(cpp);
    }
    // One second first, not counted, so V8 has compiled the path (the C++ side needs none).
    await tsPublish(client, mode, 1, "warmup");
    const ts = await tsPublish(client, mode);
    if (cpp) ts.ratio_vs_cpp = ts.events_per_s / cpp.events_per_s;
    rows.push(ts);
  }
} finally {
  await serve.close();
}
const loadAfter = uptime();
if (json) {
  for (const r of rows) console.log(JSON.stringify(r));
  console.log(JSON.stringify({ uptime_before: loadBefore, uptime_after: loadAfter }));
} else {
  const fmt = (n) => Math.round(n).toLocaleString("en-US");
  console.log(`uptime before: ${loadBefore}`);
  console.log("| workload | client | events/s | p50 µs | p99 µs | ts/cpp |");
  console.log("| --- | --- | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(`| ${r.workload} | ${r.system} | ${fmt(r.events_per_s)} | ${fmt(r.p50_us)} | ${fmt(r.p99_us)} | ${r.ratio_vs_cpp ? r.ratio_vs_cpp.toFixed(2) : ""} |`);
  }
  console.log(`uptime after: ${loadAfter}`);
}
