"""PostgresInbox on a real PostgreSQL 15 (skipped where it is not installed), driven through a
minimal DB-API connection over one interactive psql session (no driver is installed here), and
end to end with a real `converge serve`: an event redelivered after its consumer committed
the effect but did not ack (as after a crash) is applied once."""

from __future__ import annotations

import os
import select
import subprocess
import time
import unittest
from typing import Any, Sequence

from converge_client import Client, CloudEvent, PostgresInbox
from converge_client.errors import ClientInputError

from serve import ServeProcess
from test_outbox import PG_BIN, PostgresServer, literal


class SessionError(Exception):
    pass


class PsqlSession:
    """Just enough DB-API (paramstyle 'format'): each statement runs at once in one psql
    session, in a transaction opened by the first statement after commit()/rollback()."""

    def __init__(self, pg: PostgresServer) -> None:
        self.proc = subprocess.Popen(
            [f"{PG_BIN}/psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg.port),
             "-U", "postgres", "-d", "postgres"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.in_tx = False
        self.buffer = b""

    def _run(self, sql: str) -> tuple[list[str], str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((sql + ";\n\\echo __END__ :ERROR :ROW_COUNT\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + 30
        while b"__END__" not in self.buffer:
            if time.monotonic() > deadline:
                raise SessionError(f"psql did not answer: {sql}")
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise SessionError("psql ended")
                self.buffer += chunk
        text, _, rest = self.buffer.partition(b"__END__")
        line, _, self.buffer = rest.partition(b"\n")
        error, count = line.decode().split()
        if error == "true":
            raise SessionError(f"statement failed: {sql}")
        rows = [r for r in text.decode().split("\n") if r]
        return rows, count

    def cursor(self) -> "PsqlCursor":
        return PsqlCursor(self)

    def execute(self, sql: str) -> tuple[list[str], str]:
        if not self.in_tx:
            self._run("BEGIN")
            self.in_tx = True
        return self._run(sql)

    def commit(self) -> None:
        if self.in_tx:
            self.in_tx = False
            self._run("COMMIT")

    def rollback(self) -> None:
        if self.in_tx:
            self.in_tx = False
            self._run("ROLLBACK")

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self.proc.wait(10)


class PsqlCursor:
    def __init__(self, conn: PsqlSession) -> None:
        self.conn = conn
        self.rows: list[str] = []
        self.rowcount = -1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        parts = sql.split("%s")
        assert len(parts) == len(params) + 1, (sql, params)
        text = parts[0] + "".join(literal(p) + rest for p, rest in zip(params, parts[1:]))
        self.rows, count = self.conn.execute(text)
        self.rowcount = int(count)

    def fetchall(self) -> list[tuple[str, ...]]:
        return [tuple(r.split("|")) for r in self.rows]

    def close(self) -> None:
        pass


@unittest.skipUnless(os.access(f"{PG_BIN}/postgres", os.X_OK), "PostgreSQL 15 is not installed")
class PostgresInboxTest(unittest.TestCase):
    pg: PostgresServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.pg = PostgresServer().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.pg.stop()

    def setUp(self) -> None:
        self.conn = PsqlSession(self.pg)
        self.addCleanup(self.conn.close)

    def effects(self, table: str) -> dict[str, int]:
        rows = self.pg.psql(f"SELECT id, count(*) FROM {table} GROUP BY id ORDER BY id")
        return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.split("\n") if line}

    def test_each_event_applies_once_and_a_failed_effect_leaves_nothing(self) -> None:
        self.pg.psql("CREATE TABLE effects_a (id text)")
        inbox = PostgresInbox(self.conn, "billing")
        inbox.create_schema()
        a = CloudEvent(type="t", source="/py/pg", id="a")
        b = CloudEvent(type="t", source="/py/pg", id="b")

        def effect(event_id: str) -> Any:
            def run(conn: Any) -> str:
                conn.cursor().execute("INSERT INTO effects_a VALUES (%s)", (event_id,))
                return event_id + "!"
            return run

        self.assertEqual(inbox.process(a, effect("a")), (True, "a!"))
        self.assertEqual(inbox.process(a, effect("a")), (False, None))
        self.assertTrue(inbox.seen(a))
        self.assertFalse(inbox.seen(b))

        def failing(conn: Any) -> None:
            conn.cursor().execute("INSERT INTO effects_a VALUES (%s)", ("b",))
            raise RuntimeError("the effect failed")

        with self.assertRaises(RuntimeError):
            inbox.process(b, failing)
        self.assertFalse(inbox.seen(b))  # neither the row nor the effect
        self.assertEqual(inbox.process(b, effect("b")), (True, "b!"))
        # Another consumer of the same database applies its own effect once too.
        other = PostgresInbox(self.conn, "audit")
        self.assertEqual(other.process(a, effect("a"))[0], True)
        self.assertEqual(other.process(a, effect("a"))[0], False)
        self.assertEqual(self.effects("effects_a"), {"a": 2, "b": 1})
        ids = self.pg.psql("SELECT consumer || ' ' || event_id FROM converge_inbox ORDER BY 1")
        self.assertEqual(ids.split("\n")[:3], ["audit 6:/py/pga", "billing 6:/py/pga",
                                               "billing 6:/py/pgb"])
        self.assertEqual(inbox.cleanup(retention_ms=0), 2)
        self.assertEqual(other.cleanup(), 0)
        with self.assertRaises(ClientInputError):
            PostgresInbox(object(), "x")
        with self.assertRaises(ClientInputError):
            PostgresInbox(self.conn, "")
        with self.assertRaises(ClientInputError):
            inbox.process(CloudEvent(type="t", source="", id="x"), effect("x"))

    def test_a_redelivery_after_a_committed_effect_is_skipped(self) -> None:
        self.pg.psql("CREATE TABLE effects_b (id text)")
        inbox = PostgresInbox(self.conn, "workers")
        inbox.create_schema()
        server = ServeProcess("groups:\n  lease_ms: 800\n").start()
        client = Client(server.url)
        try:
            client.create_topic("jobs")
            for n in range(3):
                client.publish("jobs", CloudEvent(type="job", source="/py/jobs", id=f"j{n}"))

            def effect(d: Any) -> Any:
                return lambda conn: conn.cursor().execute(
                    "INSERT INTO effects_b VALUES (%s)", (d.event.id,))

            # The first consumer commits every effect but dies before its acks.
            first = client.fetch("jobs", "workers", max_events=10, wait_ms=2000)
            self.assertEqual(len(first), 3)
            for d in first:
                self.assertTrue(inbox.process(d, effect(d))[0])
            # The leases expire; the events come again and are skipped, then acked.
            again: list[Any] = []
            deadline = time.monotonic() + 20
            while len(again) < 3 and time.monotonic() < deadline:
                again += client.fetch("jobs", "workers", max_events=10, wait_ms=1000)
            self.assertEqual(sorted(d.event.id for d in again if d.event), ["j0", "j1", "j2"])
            for d in again:
                self.assertEqual(d.attempt, 2)
                self.assertEqual(inbox.process(d, effect(d)), (False, None))
            self.assertEqual(client.ack("jobs", "workers", again).acked, 3)
            self.assertEqual(self.effects("effects_b"), {"j0": 1, "j1": 1, "j2": 1})
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    unittest.main()
