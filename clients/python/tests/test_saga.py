"""Sagas through the Python participant helper and starter, against a real `converge serve`:
a participant killed mid-step (the saga completes, the step's effect happens once), a failed
step compensated, fencing, and the reply format."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import unittest
from typing import Any

from converge_client import Client, SagaParticipant, Sagas, StepFailed
from converge_client.errors import ClientInputError, ConflictError
from converge_client.saga import SagaCommand, SqliteSagaLedger

from serve import ServeProcess, python_child

CONFIG = """
groups:
  lease_ms: 1500
  session_timeout_ms: 3000
  max_deliveries: 50
"""

DEFINITION = {
    "name": "py-order",
    "version": 1,
    "steps": [
        {"name": "reserve", "participant": "py-inventory", "action": "inventory.reserve",
         "compensation": "inventory.release", "timeout_ms": 4000},
        {"name": "charge", "participant": "py-payments", "action": "payments.charge",
         "pivot": True, "timeout_ms": 4000},
    ],
}


class SagaTest(unittest.TestCase):
    server: ServeProcess
    client: Client
    sagas: Sagas

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServeProcess(CONFIG).start()
        cls.client = Client(cls.server.url)
        cls.sagas = Sagas(cls.client)
        cls.sagas.register_definition(DEFINITION)
        # Payments: in process, reading its commands from the SSE stream; refuses amounts
        # over 100.
        cls.pay_db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        cls.pay_db.execute("CREATE TABLE charges (saga_id TEXT, amount INTEGER)")
        cls.payments = SagaParticipant(Client(cls.server.url), "py-payments", cls.pay_db,
                                       group="payments", consumer="payments-1", mode="stream")

        def charge(c: sqlite3.Connection, cmd: SagaCommand) -> Any:
            if cmd.data["amount"] > 100:
                raise StepFailed("card declined", code="FAILED_PRECONDITION")
            c.execute("INSERT INTO charges VALUES (?, ?)", (cmd.saga_id, cmd.data["amount"]))
            return "charged"

        cls.payments.on_action("payments.charge", charge)
        cls.payments.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.payments.stop(timeout=30)
        cls.client.close()
        cls.server.stop()

    def start_inventory(self, db: str, crash: str = "") -> subprocess.Popen[bytes]:
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(here) + os.pathsep + env.get("PYTHONPATH", "")
        if crash:
            env["CRASH"] = crash
        import sys
        return subprocess.Popen([sys.executable, os.path.join(here, "child_participant.py"),
                                 self.server.url, "py-inventory", db], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def stop_inventory(self, p: subprocess.Popen[bytes]) -> None:
        _, err = p.communicate(b"", timeout=60)
        self.assertEqual(p.returncode, 0, err)

    def reservations(self, db: str, saga_id: str) -> int:
        c = sqlite3.connect(db)
        try:
            return int(c.execute("SELECT count(*) FROM reservations WHERE saga_id = ?",
                                 (saga_id,)).fetchone()[0])
        finally:
            c.close()

    def run_crash(self, crash: str, exit_code: int, saga_id: str) -> None:
        db = os.path.join(self.server.dir, f"inventory-{crash}.db")
        first = self.start_inventory(db, crash)
        self.sagas.start("py-order", {"qty": 2, "amount": 10}, id=saga_id)
        _, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, exit_code, err)
        second = self.start_inventory(db)
        try:
            info = self.sagas.wait(saga_id, timeout=60)
        finally:
            self.stop_inventory(second)
        self.assertEqual(info["state"], "completed", info)
        self.assertEqual(self.reservations(db, saga_id), 1)

    def test_participant_killed_after_commit_before_reply(self) -> None:
        self.run_crash("after_commit", 18, "crash-commit-1")

    def test_participant_killed_inside_the_step_before_commit(self) -> None:
        self.run_crash("after_effect", 17, "crash-effect-1")

    def test_a_refused_step_is_compensated(self) -> None:
        db = os.path.join(self.server.dir, "inventory-comp.db")
        inv = self.start_inventory(db)
        try:
            saga_id = self.sagas.start("py-order", {"qty": 1, "amount": 500})
            info = self.sagas.wait(saga_id, timeout=60)
        finally:
            self.stop_inventory(inv)
        self.assertEqual(info["state"], "compensated", info)
        self.assertEqual([s["state"] for s in info["steps"]], ["compensated", "failed"])
        self.assertEqual(self.reservations(db, saga_id), 0)

    def test_start_is_idempotent_by_id(self) -> None:
        a = self.sagas.start("py-order", {"qty": 1, "amount": 1}, id="same-id")
        b = self.sagas.start("py-order", {"qty": 1, "amount": 1}, id="same-id")
        self.assertEqual(a, b)
        self.sagas.cancel(a, reason="test")  # leaves nothing waiting for the other tests
        with self.assertRaises(ClientInputError):
            self.sagas.start("", None)
        with self.assertRaises(ClientInputError):
            self.sagas.start("py-order", id="x" * 129)

    def test_replies_carry_the_documented_types(self) -> None:
        db = os.path.join(self.server.dir, "inventory-types.db")
        inv = self.start_inventory(db)
        try:
            saga_id = self.sagas.start("py-order", {"qty": 1, "amount": 5})
            self.sagas.wait(saga_id, timeout=60)
        finally:
            self.stop_inventory(inv)
        replies = []
        while True:
            batch = self.client.fetch("saga.replies", "inspect", max_events=100, wait_ms=200)
            if not batch:
                break
            self.client.ack("saga.replies", "inspect", batch)
            replies += [d.event for d in batch if d.event and d.event.extensions.get("sagaid")
                        == saga_id]
        self.assertEqual(len(replies), 2)
        for r in replies:
            self.assertEqual(r.type, "converge.saga.reply")
            self.assertIs(type(r.extensions["sagastep"]), int)
            self.assertIs(type(r.extensions["sagaattempt"]), int)
            self.assertIs(type(r.extensions["sagaapplied"]), bool)
            self.assertEqual(r.extensions["sagaoutcome"], "ok")
            self.assertEqual(r.partitionkey, saga_id)
            self.assertEqual(len(str(r.extensions["sagatoken"])), 32)


def command(kind: str, step: int = 0, attempt: int = 1, retriable: bool = False) -> SagaCommand:
    return SagaCommand(event_id=f"s1/{step}/{kind}/{attempt}", type="x", saga_id="s1",
                       definition="d", version=1, step=step, step_name="n",
                       kind=kind,  # type: ignore[arg-type]
                       attempt=attempt, retriable=retriable, reply_to="r", token="t" * 32,
                       data=None)


class LedgerUnitTest(unittest.TestCase):
    def setUp(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.execute("CREATE TABLE effects (n INTEGER)")
        self.ledger = SqliteSagaLedger(self.conn)
        self.calls = 0

    def action(self, c: sqlite3.Connection, cmd: SagaCommand) -> str:
        self.calls += 1
        c.execute("INSERT INTO effects VALUES (1)")
        return "done"

    def undo(self, c: sqlite3.Connection, cmd: SagaCommand) -> None:
        c.execute("DELETE FROM effects")

    def effects(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM effects").fetchone()[0])

    def test_a_repeated_action_replies_the_same_and_applies_once(self) -> None:
        a = self.ledger.process(command("action"), self.action, None)
        b = self.ledger.process(command("action", attempt=2), self.action, None)
        self.assertEqual((a.outcome, a.result), ("ok", b"done"))
        self.assertEqual((b.outcome, b.result), ("ok", b"done"))
        self.assertEqual((self.calls, self.effects()), (1, 1))

    def test_a_compensation_before_the_action_fences_it(self) -> None:
        c = self.ledger.process(command("compensate"), None, self.undo)
        self.assertEqual((c.outcome, c.applied), ("ok", False))
        late = self.ledger.process(command("action"), self.action, None)
        self.assertEqual((late.outcome, late.code), ("failed", "ABORTED"))
        self.assertEqual((self.calls, self.effects()), (0, 0))

    def test_compensation_undoes_once(self) -> None:
        self.ledger.process(command("action"), self.action, None)
        c1 = self.ledger.process(command("compensate"), None, self.undo)
        c2 = self.ledger.process(command("compensate", attempt=2), None, self.undo)
        self.assertTrue(c1.applied and c2.applied)
        self.assertEqual(self.effects(), 0)

    def test_a_refusal_rolls_back_the_handler_and_is_remembered(self) -> None:
        def refuse(c: sqlite3.Connection, cmd: SagaCommand) -> None:
            c.execute("INSERT INTO effects VALUES (1)")
            raise StepFailed("no stock")

        r = self.ledger.process(command("action"), refuse, None)
        self.assertEqual((r.outcome, r.code), ("failed", "FAILED_PRECONDITION"))
        self.assertEqual(self.effects(), 0)
        again = self.ledger.process(command("action", attempt=2), self.action, None)
        self.assertEqual(again.outcome, "failed")
        self.assertEqual(self.calls, 0)

    def test_a_crashing_handler_is_a_retry_with_nothing_applied(self) -> None:
        def crash(c: sqlite3.Connection, cmd: SagaCommand) -> None:
            c.execute("INSERT INTO effects VALUES (1)")
            raise KeyError("bug")

        r = self.ledger.process(command("action"), crash, None)
        self.assertEqual(r.outcome, "retry")
        self.assertEqual(self.effects(), 0)
        self.assertEqual(self.ledger.process(command("action"), self.action, None).outcome, "ok")

    def test_after_the_pivot_a_refusal_is_a_retry(self) -> None:
        def refuse(c: sqlite3.Connection, cmd: SagaCommand) -> None:
            raise StepFailed("later")

        r = self.ledger.process(command("action", retriable=True), refuse, None)
        self.assertEqual(r.outcome, "retry")
        self.assertEqual(self.ledger.state("s1", 0)[0], 0)

    def test_cancel_fences_or_reports_applied(self) -> None:
        self.assertFalse(self.ledger.process(command("cancel", step=1), None, None).applied)
        self.ledger.process(command("action", step=2), self.action, None)
        self.assertTrue(self.ledger.process(command("cancel", step=2), None, None).applied)


if __name__ == "__main__":
    unittest.main()
