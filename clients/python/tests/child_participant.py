"""A saga participant service for the crash tests, in its own process so the test can kill it.

argv: server_url topic db_path
env: CRASH=after_effect  exit abruptly inside the action, after its effect, before the commit
     CRASH=after_commit  exit abruptly after the transaction committed, before the reply
Runs until killed or until stdin closes. The action `inventory.reserve` adds a row to
`reservations`; the compensation `inventory.release` deletes it.
"""

import os
import sqlite3
import sys
import threading

from converge_client import Client, SagaParticipant
from converge_client.saga import SagaCommand

url, topic, db_path = sys.argv[1:4]
crash = os.environ.get("CRASH", "")

conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS reservations (saga_id TEXT, qty INTEGER)")
participant = SagaParticipant(Client(url), topic, conn, group="inventory", consumer="inv",
                              wait_ms=500)


def reserve(c: sqlite3.Connection, cmd: SagaCommand) -> dict:
    c.execute("INSERT INTO reservations VALUES (?, ?)", (cmd.saga_id, cmd.data["qty"]))
    if crash == "after_effect":
        os._exit(17)
    return {"reserved": cmd.data["qty"]}


def release(c: sqlite3.Connection, cmd: SagaCommand) -> None:
    c.execute("DELETE FROM reservations WHERE saga_id = ?", (cmd.saga_id,))


participant.on_action("inventory.reserve", reserve)
participant.on_compensation("inventory.release", release)

if crash == "after_commit":
    process = participant.ledger.process

    def process_then_crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        process(*args, **kwargs)
        os._exit(18)

    participant.ledger.process = process_then_crash  # type: ignore[method-assign]

participant.start()
print("ready", flush=True)
sys.stdin.read()  # the test closes stdin to stop us
participant.stop(timeout=30)
