// Test support: the client under test and a real `converge serve` per test file (binary from
// $CONVERGE_BINARY, set by ctest), on a free loopback port chosen by the server itself (read
// back from its "listening on" line), in a fresh temp dir removed afterwards.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dist = process.env.CONVERGE_TS_DIST;
export const lib = await import(dist ? pathToFileURL(join(dist, "index.js")).href : new URL("../dist/index.js", import.meta.url).href);
export const LIB_PATH = dist ? join(dist, "index.js") : new URL("../dist/index.js", import.meta.url).pathname;

export function binary() {
  const b = process.env.CONVERGE_BINARY;
  if (!b) throw new Error("CONVERGE_BINARY is not set (run the suite through ctest)");
  return b;
}

const children = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

export class Serve {
  constructor(configYaml = "", dir = undefined) {
    this.configYaml = configYaml;
    this.dir = dir ?? mkdtempSync(join(process.env.TMPDIR || tmpdir(), "converge-ts-"));
    this.ownDir = dir === undefined;
    this.child = null;
    this.port = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again: `port` keeps the previous port, so clients need no new URL). */
  async start(port = 0) {
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", join(this.dir, "data")];
    if (this.configYaml) {
      writeFileSync(join(this.dir, "converge.yaml"), this.configYaml);
      args.push("--config", join(this.dir, "converge.yaml"));
    }
    const log = openSync(join(this.dir, "serve.log"), "a");
    const child = spawn(binary(), args, { stdio: ["ignore", "pipe", log] });
    this.child = child;
    children.add(child);
    child.on("exit", () => children.delete(child));
    this.port = await new Promise((resolve, reject) => {
      let text = "";
      const timer = setTimeout(() => reject(new Error(`converge serve did not start: ${text} ${this.log()}`)), 20_000);
      child.stdout.on("data", (b) => {
        text += b.toString();
        const m = /listening on https?:\/\/127\.0\.0\.1:(\d+)/.exec(text);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`converge serve exited (${code}): ${this.log()}`));
      });
    });
    child.stdout.resume();
    return this;
  }

  log() {
    try {
      return readFileSync(join(this.dir, "serve.log"), "utf8").slice(-4000);
    } catch {
      return "";
    }
  }

  async stop(signal = "SIGTERM") {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill(signal);
      await exited;
    }
    this.child = null;
  }

  async close() {
    await this.stop("SIGKILL");
    if (this.ownDir) rmSync(this.dir, { recursive: true, force: true });
  }

  client(options = {}) {
    return new lib.ConvergeClient({ url: this.url, timeoutMs: 20_000, ...options });
  }
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, ms = 20_000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
