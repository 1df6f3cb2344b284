"""The WAL outbox writer (docs/formats/wal-outbox.md) end to end: events emitted with
PostgresWalOutbox inside the caller's transactions on a real PostgreSQL 15 (wal_level=logical;
skipped where it is not installed) are published by a relay in mode ``wal`` of a real
`converge serve`, with ids, data, extensions and keys intact and in commit order per key; a
rolled-back transaction's events never arrive. The writer runs through the minimal DB-API
connection of test_outbox (each transaction through psql)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import unittest
from typing import Any

import test_outbox
from converge_client import Client, CloudEvent, PostgresWalOutbox, wal_emit_params
from converge_client.errors import ClientInputError
from converge_client.outbox import WAL_EMIT_SQL, WAL_PREFIX

from serve import ServeProcess, binary
from test_outbox import PG_BIN, PostgresServer, PsqlConnection


class WalOutboxTest(unittest.TestCase):
    fetch_all = test_outbox.OutboxTest.fetch_all
    check_events = test_outbox.OutboxTest.check_events
    events = test_outbox.OutboxTest.events

    def test_emitted_events_are_relayed_from_the_wal(self) -> None:
        if not os.access(f"{PG_BIN}/postgres", os.X_OK):
            self.skipTest("PostgreSQL 15 is not installed")
        pg = PostgresServer().start(["wal_level=logical", "max_replication_slots=4",
                                     "max_wal_senders=4"])
        server: ServeProcess | None = None
        client: Client | None = None
        try:
            pg.psql("CREATE TABLE orders (id int PRIMARY KEY)")
            # The slot first (the relay never creates it): the documented command.
            created = subprocess.run(
                [binary(), "relay", "--source", pg.conninfo, "--mode", "wal", "--slot", "py_wal",
                 "--create-slots"], capture_output=True, timeout=60)
            self.assertEqual(created.returncode, 0, created.stderr.decode())
            conn = PsqlConnection(pg)
            outbox = PostgresWalOutbox(conn)
            sent = self.events("/wal-orders", 10)
            cur = conn.cursor()
            cur.execute("INSERT INTO orders VALUES (1)")
            outbox.emit("wal-orders", sent[:6])
            conn.commit()
            cur.execute("INSERT INTO orders VALUES (2)")
            outbox.emit("wal-orders", CloudEvent(type="never", source="/wal-orders", id="rb"))
            conn.rollback()
            outbox.emit("wal-orders", sent[6:])
            conn.commit()
            # A failing transaction (the business insert conflicts) emits nothing either.
            cur.execute("INSERT INTO orders VALUES (1)")
            outbox.emit("wal-orders", CloudEvent(type="never", source="/wal-orders", id="failed"))
            with self.assertRaises(RuntimeError):
                conn.commit()
            self.assertEqual(pg.psql("SELECT count(*) FROM orders").strip(), "1")

            config = (f"relays:\n  sources:\n    - name: pgwal\n      database: {pg.conninfo}\n"
                      f"      mode: wal\n      wal_slot: py_wal\n      poll_interval_ms: 100\n")
            server = ServeProcess(config).start()
            client = Client(server.url)
            got = self.fetch_all(client, "wal-orders", 10)
            self.check_events(got, sent)
            # Every event got a time (the writer's, as the other writers fill it).
            self.assertTrue(all(e.time for e in got))
            # Nothing more arrives (the rolled-back and failed transactions' events).
            time.sleep(1.0)
            extra = client.fetch("wal-orders", "check", max_events=10, wait_ms=500)
            self.assertEqual(extra, [])
        finally:
            if client is not None:
                client.close()
            if server is not None:
                server.stop()
            pg.stop()

    def test_emit_params_follow_the_relay_rules(self) -> None:
        event = CloudEvent(type="t", source="/s", id="e1", data={"a": 1},
                           extensions={"partitionkey": "k", "n": 3, "flag": True})
        prefix, content = wal_emit_params("orders", event)
        self.assertEqual(prefix, WAL_PREFIX + "orders")
        body: dict[str, Any] = json.loads(content)
        self.assertEqual(body["specversion"], "1.0")
        self.assertEqual((body["id"], body["source"], body["type"]), ("e1", "/s", "t"))
        self.assertEqual(body["data"], {"a": 1})
        self.assertEqual((body["partitionkey"], body["n"], body["flag"]), ("k", 3, True))
        self.assertIn("time", body)
        binary_event = CloudEvent(type="t", source="/s", data=b"\x00\xff",
                                  datacontenttype="application/octet-stream")
        self.assertEqual(json.loads(wal_emit_params("t", binary_event)[1])["data_base64"], "AP8=")
        # Refused as the relay would dead-letter them; nothing is emitted for a bad batch.
        with self.assertRaisesRegex(ClientInputError, "topic name"):
            wal_emit_params("_dlq.outbox", event)
        with self.assertRaisesRegex(ClientInputError, "traceparent"):
            wal_emit_params("t", CloudEvent(type="t", source="/s",
                                            extensions={"traceparent": "nope"}))

        class Recorder:
            def __init__(self) -> None:
                self.calls: list[tuple[str, Any]] = []

            def cursor(self) -> "Recorder":
                return self

            def execute(self, sql: str, params: Any = None) -> None:
                self.calls.append((sql, params))

            def close(self) -> None:
                pass

        rec = Recorder()
        with self.assertRaises(ClientInputError):
            PostgresWalOutbox(rec).emit("t", [event, CloudEvent(type="", source="/s")])
        self.assertEqual(rec.calls, [])
        PostgresWalOutbox(rec, paramstyle="numeric").emit("t", [event, event])
        self.assertEqual([c[0] for c in rec.calls], [WAL_EMIT_SQL.format(":1", ":2")] * 2)
        self.assertEqual(rec.calls[0][1][0], "converge:t")
        with self.assertRaises(ClientInputError):
            PostgresWalOutbox(object())


if __name__ == "__main__":
    unittest.main()
