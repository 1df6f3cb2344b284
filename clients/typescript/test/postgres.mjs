// Test support: a throwaway PostgreSQL 15 server (initdb in a temp dir, a free loopback port;
// as root it runs as the `postgres` user, like tests/support/postgres_server.cc), and psql as
// a minimal "driver": one transaction's statements, parameters inlined as SQL literals.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BIN = process.env.CONVERGE_PG_BIN_DIR || "/usr/lib/postgresql/15/bin";

export function havePostgres() {
  if (!existsSync(join(BIN, "postgres")) || !existsSync(join(BIN, "initdb"))) return false;
  try {
    execFileSync("psql", ["--version"], { stdio: "ignore" });
    if (process.getuid() === 0) execFileSync("id", ["-u", "postgres"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class Postgres {
  /** `settings`: extra `name=value` server settings (e.g. `wal_level=logical`). */
  async start(settings = []) {
    this.dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), "converge-ts-pg-"));
    mkdirSync(join(this.dir, "sock"));
    const ids = {};
    if (process.getuid() === 0) {
      ids.uid = Number(execFileSync("id", ["-u", "postgres"]).toString());
      ids.gid = Number(execFileSync("id", ["-g", "postgres"]).toString());
      execFileSync("chown", ["-R", `${ids.uid}:${ids.gid}`, this.dir]);
    }
    execFileSync(join(BIN, "initdb"), ["-D", join(this.dir, "data"), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], {
      ...ids,
      stdio: "ignore",
    });
    for (let attempt = 0; ; attempt++) {
      this.port = await freePort();
      this.child = spawn(
        join(BIN, "postgres"),
        ["-D", join(this.dir, "data"), "-p", String(this.port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${join(this.dir, "sock")}`, ...settings.flatMap((s) => ["-c", s])],
        { ...ids, stdio: "ignore" },
      );
      const deadline = Date.now() + 20_000;
      let ready = false;
      while (Date.now() < deadline && this.child.exitCode === null) {
        try {
          execFileSync("psql", [this.conninfo, "-c", "SELECT 1"], { stdio: "ignore" });
          ready = true;
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      if (ready) return this;
      this.child.kill("SIGQUIT");
      if (attempt >= 3) throw new Error("PostgreSQL did not start");
    }
  }

  get conninfo() {
    return `host=127.0.0.1 port=${this.port} user=postgres dbname=postgres sslmode=disable`;
  }

  /** Runs `fn(query)` as one transaction through psql ($n parameters inlined). */
  async transaction(fn) {
    const statements = [];
    await fn(async (sql, params) => {
      statements.push(sql.replace(/\$(\d+)/g, (_, n) => pgLiteral(params[Number(n) - 1])));
    });
    execFileSync("psql", [this.conninfo, "-v", "ON_ERROR_STOP=1", "-q"], { input: ["BEGIN", ...statements, "COMMIT"].join(";\n") + ";\n" });
  }

  psql(sql) {
    return execFileSync("psql", [this.conninfo, "-At", "-c", sql]).toString().trim();
  }

  async close() {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGQUIT");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function pgLiteral(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "number") return String(v);
  if (Array.isArray(v)) return `ARRAY[${v.map(pgLiteral).join(", ")}]::text[]`;
  if (v instanceof Uint8Array) return `'\\x${Buffer.from(v).toString("hex")}'::bytea`;
  return `'${String(v).replaceAll("'", "''")}'`;
}

/**
 * One live psql session as a minimal driver: `query(sql, params)` sends one statement and
 * returns its rows (arrays of text) and the row count of its command tag. Enough to run
 * transactions (BEGIN ... COMMIT) the way an application's driver would.
 */
export class PsqlSession {
  constructor(conninfo) {
    this.child = spawn("psql", [conninfo, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=0"], { stdio: ["pipe", "pipe", "pipe"] });
    this.out = "";
    this.err = "";
    this.n = 0;
    this.waiters = [];
    this.child.stdout.on("data", (b) => {
      this.out += b.toString();
      this.wake();
    });
    this.child.stderr.on("data", (b) => {
      this.err += b.toString();
      this.wake();
    });
    this.queue = Promise.resolve();
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  query(sql, params = []) {
    const run = async () => {
      const marker = `__end_${++this.n}__`;
      const text = sql.replace(/\$(\d+)(::\w+)?/g, (_, n, cast) => pgLiteral(params[Number(n) - 1]) + (cast ?? ""));
      this.child.stdin.write(`${text};\n\\echo ${marker}\n\\warn ${marker}\n`);
      while (!this.out.includes(`${marker}\n`) || !this.err.includes(`${marker}\n`)) {
        await new Promise((r) => this.waiters.push(r));
      }
      const out = this.out.slice(0, this.out.indexOf(`${marker}\n`));
      const err = this.err.slice(0, this.err.indexOf(`${marker}\n`));
      this.out = this.out.slice(this.out.indexOf(`${marker}\n`) + marker.length + 1);
      this.err = this.err.slice(this.err.indexOf(`${marker}\n`) + marker.length + 1);
      if (/ERROR:/.test(err)) throw new Error(err.trim());
      const lines = out.split("\n").filter((l) => l !== "");
      const tag = /^(INSERT \d+|UPDATE|DELETE|SELECT) (\d+)$/.exec(lines[lines.length - 1] ?? "");
      if (tag) lines.pop();
      return { rows: lines.map((l) => l.split("\t")), rowCount: tag ? Number(tag[2]) : undefined };
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  close() {
    this.child.stdin.end();
  }
}
