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
  async start() {
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
        ["-D", join(this.dir, "data"), "-p", String(this.port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${join(this.dir, "sock")}`],
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
