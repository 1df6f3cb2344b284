"""Outbox writers end to end: rows written in the caller's transaction are published by the
relays of a real `converge serve` (one SQLite source; one PostgreSQL source when PostgreSQL 15
is installed), with ids, data, extensions and keys intact; rolled-back rows are never
published. The PostgreSQL writer is driven through a minimal DB-API connection that runs each
transaction with psql, so its SQL (the per-key locks included) runs on a real server."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest
from typing import Any, Sequence

from converge_client import Client, CloudEvent, PostgresOutbox, SqliteOutbox
from converge_client.errors import ClientInputError

from serve import ServeProcess

PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (as tests/support does)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="converge-py-pg-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def start(self, settings: Sequence[str] = ()) -> "PostgresServer":
        """``settings``: extra ``name=value`` server settings (e.g. ``wal_level=logical``)."""
        data = os.path.join(self.dir, "data")
        subprocess.run([f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user)
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [f"{PG_BIN}/postgres", "-D", data, "-p", str(self.port), "-c",
             "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             *[a for setting in settings for a in ("-c", setting)]],
            stdout=log, stderr=log, user=self.user)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              stdout=subprocess.DEVNULL).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not start")

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def psql(self, script: str) -> str:
        out = subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                              "-d", "postgres"], input=script.encode(), capture_output=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.decode())
        return out.stdout.decode()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return f"'\\x{bytes(value).hex()}'::bytea"
    return "'" + str(value).replace("'", "''") + "'"


class PsqlCursor:
    def __init__(self, conn: "PsqlConnection") -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        parts = sql.split("%s")
        assert len(parts) == len(params) + 1, (sql, params)
        text = parts[0] + "".join(literal(p) + rest for p, rest in zip(params, parts[1:]))
        self.conn.statements.append(text)

    def fetchall(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class PsqlConnection:
    """Just enough DB-API (paramstyle 'format'): a transaction's statements run at commit()."""

    def __init__(self, pg: PostgresServer) -> None:
        self.pg = pg
        self.statements: list[str] = []

    def cursor(self) -> PsqlCursor:
        return PsqlCursor(self)

    def commit(self) -> None:
        script = "BEGIN;\n" + ";\n".join(self.statements) + ";\nCOMMIT;\n"
        self.statements = []
        self.pg.psql(script)

    def rollback(self) -> None:
        self.statements = []


class OutboxTest(unittest.TestCase):
    def fetch_all(self, client: Client, topic: str, n: int, timeout: float = 30) -> list[CloudEvent]:
        got: list[CloudEvent] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                batch = client.fetch(topic, "check", max_events=100, wait_ms=500)
            except Exception:  # noqa: BLE001 - the relay creates the topic with its first row
                time.sleep(0.1)
                continue
            if batch:
                client.ack(topic, "check", batch)
                got += [d.event for d in batch if d.event is not None]
        return got

    def check_events(self, got: list[CloudEvent], sent: list[CloudEvent]) -> None:
        self.assertEqual(sorted(e.id for e in got), sorted(e.id for e in sent))
        by_id = {e.id: e for e in got}
        for s in sent:
            g = by_id[s.id]
            self.assertEqual((g.type, g.source, g.subject), (s.type, s.source, s.subject))
            self.assertEqual(g.partitionkey, s.partitionkey)
            self.assertEqual(g.json_data() if not isinstance(s.data, bytes) else g.data, s.data)
            for k, v in s.extensions.items():
                self.assertEqual(g.extensions.get(k), v, k)
        # Per key, in write order.
        for key in {s.partitionkey for s in sent}:
            self.assertEqual([e.id for e in got if e.partitionkey == key],
                             [e.id for e in sent if e.partitionkey == key])

    def events(self, source: str, n: int) -> list[CloudEvent]:
        out = []
        for i in range(n):
            data: Any = {"order": i} if i % 3 else f"raw-{i}".encode()
            out.append(CloudEvent(type="order.placed", source=source, data=data, subject=f"o{i}",
                                  datacontenttype=None if i % 3 else "application/octet-stream",
                                  extensions={"partitionkey": f"cust-{i % 4}", "tenant": "acme",
                                              "prio": i, "urgent": i % 2 == 0}))
        return out

    def test_sqlite_and_postgres_outboxes_are_relayed(self) -> None:
        tmp = tempfile.mkdtemp(prefix="converge-py-outbox-")
        db = os.path.join(tmp, "orders.db")
        conn = sqlite3.connect(db, isolation_level=None)
        outbox = SqliteOutbox(conn)
        outbox.create_schema()
        conn.execute("CREATE TABLE orders (id INTEGER)")
        pg: PostgresServer | None = None
        if os.access(f"{PG_BIN}/postgres", os.X_OK):
            pg = PostgresServer().start()
        config = f"relays:\n  sources:\n    - name: sq\n      database: sqlite:{db}\n"
        if pg is not None:
            config += f"    - name: pg\n      database: {pg.conninfo}\n"
        server = ServeProcess(config).start()
        client = Client(server.url)
        try:
            sent = self.events("/orders", 12)
            conn.execute("BEGIN")
            conn.execute("INSERT INTO orders VALUES (1)")
            outbox.write("orders", sent[:6])
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            outbox.write("orders", CloudEvent(type="never", source="/orders"))
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            outbox.write("orders", sent[6:])
            conn.execute("COMMIT")
            self.check_events(self.fetch_all(client, "orders", 12), sent)
            if pg is not None:
                pconn = PsqlConnection(pg)
                poutbox = PostgresOutbox(pconn)
                poutbox.create_schema()
                pconn.commit()
                psent = self.events("/billing", 9)
                poutbox.write("billing", psent[:5])
                pconn.commit()
                poutbox.write("billing", CloudEvent(type="never", source="/billing"))
                pconn.rollback()
                poutbox.write("billing", psent[5:])
                pconn.commit()
                poutbox.notify()
                pconn.commit()
                self.check_events(self.fetch_all(client, "billing", 9), psent)
            else:
                print("PostgreSQL 15 is not installed: the PostgreSQL outbox ran without a server")
            # Nothing more arrives (the rolled-back rows).
            time.sleep(1.0)
            extra = client.fetch("orders", "check", max_events=10, wait_ms=500)
            self.assertEqual(extra, [])
        finally:
            client.close()
            server.stop()
            if pg is not None:
                pg.stop()
            conn.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_rows_the_relay_would_dead_letter_are_refused(self) -> None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        outbox = SqliteOutbox(conn)
        outbox.create_schema()
        with self.assertRaisesRegex(ClientInputError, "topic name"):
            outbox.write("_dlq.outbox", CloudEvent(type="t", source="/s"))
        with self.assertRaisesRegex(ClientInputError, "traceparent"):
            outbox.write("t", CloudEvent(type="t", source="/s",
                                         extensions={"traceparent": "nope"}))
        with self.assertRaises(ClientInputError):
            outbox.write("t", CloudEvent(type="", source="/s"))
        self.assertEqual(conn.execute("SELECT count(*) FROM converge_outbox").fetchone()[0], 0)
        with self.assertRaises(ClientInputError):
            PostgresOutbox(object())
        with self.assertRaises(ClientInputError):
            PostgresOutbox(sqlite3.connect(":memory:"), paramstyle="weird")

    def test_postgres_placeholders_follow_the_paramstyle(self) -> None:
        class Recorder:
            def __init__(self) -> None:
                self.calls: list[tuple[str, Any]] = []

            def cursor(self) -> "Recorder":
                return self

            def execute(self, sql: str, params: Any = None) -> None:
                self.calls.append((sql, params))

            def fetchall(self) -> list[Any]:
                return []

            def close(self) -> None:
                pass

        for style, mark in (("qmark", "?"), ("numeric", ":1"), ("named", ":p0"),
                            ("pyformat", "%(p0)s")):
            rec = Recorder()
            PostgresOutbox(rec, paramstyle=style).write(
                "t", [CloudEvent(type="t", source="/s", extensions={"partitionkey": "b"}),
                      CloudEvent(type="t", source="/s", extensions={"partitionkey": "a"})])
            lock_sql, lock_params = rec.calls[0]
            self.assertIn("pg_advisory_xact_lock", lock_sql)
            self.assertIn(mark, lock_sql)
            values = list(lock_params.values()) if isinstance(lock_params, dict) else lock_params
            self.assertEqual(list(values), [1668705073, "a", "b"])  # keys sorted, once each
            self.assertEqual(len(rec.calls), 3)


if __name__ == "__main__":
    unittest.main()
