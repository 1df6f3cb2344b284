"""Crash and redelivery: a consumer process killed in the middle of a batch; the inbox makes
each event's effect happen exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import unittest

from converge_client import Client, CloudEvent, SqliteInbox
from converge_client.errors import ClientInputError

from serve import ServeProcess, python_child, wait_until

CONFIG = """
topic_defaults:
  partitions: 2
groups:
  lease_ms: 1500
  session_timeout_ms: 3000
  max_deliveries: 10
"""


class InboxCrashTest(unittest.TestCase):
    server: ServeProcess
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServeProcess(CONFIG).start()
        cls.client = Client(cls.server.url)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def publish(self, topic: str, n: int) -> None:
        self.client.create_topic(topic)
        self.client.publish_batch(topic, [CloudEvent(type="t", source="/crash", data=i,
                                                     extensions={"partitionkey": f"k{i % 5}"})
                                          for i in range(n)])

    def effects(self, db: str) -> list[tuple[str, int]]:
        if not os.path.exists(db):
            return []
        c = sqlite3.connect(db)
        try:
            return c.execute("SELECT event_id, value FROM effects").fetchall()
        except sqlite3.OperationalError:
            return []  # the child has not created the table yet
        finally:
            c.close()

    def assert_each_once(self, db: str, n: int) -> None:
        values = sorted(v for _, v in self.effects(db))
        self.assertEqual(values, list(range(n)))

    def test_a_consumer_dying_after_commit_before_ack_applies_each_event_once(self) -> None:
        n = 40
        self.publish("crash-commit", n)
        db = os.path.join(self.server.dir, "svc1.db")
        first = python_child("child_consumer.py", self.server.url, "crash-commit", "svc", db,
                             str(n), env={"CRASH_AFTER": "7"})
        _, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 17, err)
        self.assertEqual(len(self.effects(db)), 7)
        second = python_child("child_consumer.py", self.server.url, "crash-commit", "svc", db,
                              str(n))
        out, err = second.communicate(timeout=120)
        self.assertEqual(second.returncode, 0, err)
        stats = json.loads(out.decode().strip().splitlines()[-1])
        self.assert_each_once(db, n)
        # The 7th event was committed and never acked: redelivered, and the inbox skipped it.
        self.assertGreaterEqual(stats["duplicates"], 1, stats)
        wait_until(lambda: self.client.describe_group("crash-commit", "svc")["lag"] == 0,
                   what="everything acked")

    def test_a_consumer_killed_from_outside_mid_batch_applies_each_event_once(self) -> None:
        n = 60
        self.publish("crash-kill", n)
        db = os.path.join(self.server.dir, "svc2.db")
        first = python_child("child_consumer.py", self.server.url, "crash-kill", "svc", db,
                             str(n), env={"SLOW_MS": "30"})
        wait_until(lambda: len(self.effects(db)) >= 15, timeout=60,
                   what="some effects")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        applied_before = len(self.effects(db))
        self.assertLess(applied_before, n)
        second = python_child("child_consumer.py", self.server.url, "crash-kill", "svc", db,
                              str(n))
        out, err = second.communicate(timeout=120)
        self.assertEqual(second.returncode, 0, err)
        self.assert_each_once(db, n)


class InboxUnitTest(unittest.TestCase):
    def test_effect_and_row_commit_together(self) -> None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute("CREATE TABLE t (v INTEGER)")
        inbox = SqliteInbox(conn, "c")
        e = CloudEvent(type="t", source="/a", id="1")
        self.assertEqual(inbox.process(e, lambda c: c.execute("INSERT INTO t VALUES (1)") and 5),
                         (True, 5))
        self.assertEqual(inbox.process(e, lambda c: c.execute("INSERT INTO t VALUES (1)")),
                         (False, None))
        # Same id, other source: another event (the identity is source and id).
        self.assertTrue(inbox.process(CloudEvent(type="t", source="/b", id="1"),
                                      lambda c: None)[0])

        def failing(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")

        e2 = CloudEvent(type="t", source="/a", id="2")
        with self.assertRaises(RuntimeError):
            inbox.process(e2, failing)
        self.assertFalse(inbox.seen(e2))
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone()[0], 1)
        row = conn.execute("SELECT event_id FROM converge_inbox WHERE consumer='c' "
                           "ORDER BY event_id").fetchall()
        self.assertEqual(row, [("2:/a1",), ("2:/b1",)])

    def test_threads_sharing_one_inbox_apply_each_event_once(self) -> None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.execute("CREATE TABLE t (id TEXT)")
        inbox = SqliteInbox(conn, "c")
        events = [CloudEvent(type="t", source="/a", id=str(i)) for i in range(50)]

        errors: list[BaseException] = []

        def work() -> None:
            try:
                for e in events:
                    def effect(c: sqlite3.Connection, e: CloudEvent = e) -> None:
                        time.sleep(0.001)  # other threads run while the transaction is open
                        c.execute("INSERT INTO t VALUES (?)", (e.id,))

                    inbox.process(e, effect)
            except BaseException as err:  # noqa: BLE001 - checked below
                errors.append(err)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        rows = conn.execute("SELECT id, count(*) FROM t GROUP BY id").fetchall()
        self.assertEqual(len(rows), 50)
        self.assertTrue(all(n == 1 for _, n in rows))

    def test_default_isolation_level_connections_work_too(self) -> None:
        conn = sqlite3.connect(":memory:")
        inbox = SqliteInbox(conn, "c")
        self.assertTrue(inbox.process(CloudEvent(type="t", source="/a"), lambda c: None)[0])
        self.assertFalse(conn.in_transaction)

    def test_bad_input(self) -> None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        with self.assertRaises(ClientInputError):
            SqliteInbox(conn, "")
        with self.assertRaises(ClientInputError):
            SqliteInbox("not a connection", "c")  # type: ignore[arg-type]
        inbox = SqliteInbox(conn, "c")
        conn.execute("BEGIN")
        with self.assertRaisesRegex(ClientInputError, "outside a transaction"):
            inbox.process(CloudEvent(type="t", source="/a"), lambda c: None)
        conn.execute("ROLLBACK")
        with self.assertRaises(ClientInputError):
            inbox.process({"id": "x"}, lambda c: None)  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
