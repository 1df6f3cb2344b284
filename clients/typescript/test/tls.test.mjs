// The https path of the client against a TLS `converge serve` (tls.cert_file / key_file), with
// a certificate made by openssl at test time: trusted through the `ca` option it works
// (publish, fetch, ack, the SSE stream); without it, or under a host name the certificate does
// not name, every call fails with UnavailableError (retried, never sent in clear).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Serve, lib } from "./serve.mjs";

let serve;
let ca;
before(async () => {
  serve = new Serve();
  const cert = join(serve.dir, "cert.pem");
  const key = join(serve.dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  ca = readFileSync(cert, "utf8");
  serve.configYaml = `tls:\n  cert_file: ${cert}\n  key_file: ${key}\n`;
  await serve.start();
});
after(async () => serve.close());

test("https with the server's certificate trusted through `ca`", async () => {
  const client = new lib.ConvergeClient({ url: `https://127.0.0.1:${serve.port}`, ca, timeoutMs: 20_000 });
  try {
    await client.createTopic("secure");
    const p = await client.publish("secure", { type: "t", source: "/ts/tls", id: "s1", data: { n: 1 } });
    assert.equal(p.duplicate, false);
    const got = await client.fetch("secure", "g", { waitMs: 2000 });
    assert.deepEqual(got.map((d) => d.event.id), ["s1"]);
    assert.equal((await client.ack("secure", "g", got)).acked, 1);
    await client.publish("secure", { type: "t", source: "/ts/tls", id: "s2", data: { n: 2 } });
    const stop = new AbortController();
    for await (const d of client.stream("secure", "g", { signal: stop.signal })) {
      assert.equal(d.event.id, "s2");
      await client.ack("secure", "g", [d]);
      stop.abort();
    }
  } finally {
    client.close();
  }
});

test("https without trusting the certificate, or under another host name, fails", async () => {
  for (const [url, options] of [
    [`https://127.0.0.1:${serve.port}`, {}],
    [`https://localhost:${serve.port}`, { ca }],
  ]) {
    const client = new lib.ConvergeClient({ url, timeoutMs: 5_000, maxAttempts: 1, ...options });
    try {
      await assert.rejects(client.createTopic("never"), (err) => err instanceof lib.UnavailableError && /certificate|altnames|self.signed|Hostname/i.test(err.message), url);
    } finally {
      client.close();
    }
  }
  // Nothing was created by the refused calls.
  const client = new lib.ConvergeClient({ url: `https://127.0.0.1:${serve.port}`, ca });
  try {
    const names = (await client.transport.json("GET", "/v1/topics")).topics.map((t) => t.name);
    assert.ok(!names.includes("never"), names.join(","));
  } finally {
    client.close();
  }
});
