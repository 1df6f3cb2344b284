"""A consumer service for the crash tests: applies each event of a topic through the inbox
(effect: a row in `effects`), in its own process so that the test can kill it.

argv: server_url topic group db_path expected
env: CRASH_AFTER=n  exit abruptly right after the n-th effect committed (before its ack)
     SLOW_MS=n      sleep n ms in each effect (so that an outside kill lands mid-batch)
Prints one JSON line {"applied": a, "duplicates": d} once `expected` effects exist.
"""

import json
import os
import sqlite3
import sys
import time

from converge_client import Client, Consumer, Delivery, SqliteInbox

url, topic, group, db_path, expected = sys.argv[1:6]
crash_after = int(os.environ.get("CRASH_AFTER", "0"))
slow_ms = int(os.environ.get("SLOW_MS", "0"))

conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT NOT NULL, value INTEGER)")
inbox = SqliteInbox(conn, consumer=group)
client = Client(url)
stats = {"applied": 0, "duplicates": 0}


def handler(d: Delivery) -> None:
    assert d.event is not None

    def effect(c: sqlite3.Connection) -> None:
        if slow_ms:
            time.sleep(slow_ms / 1000)
        c.execute("INSERT INTO effects (event_id, value) VALUES (?, ?)", (d.event.id, d.event.data))

    applied, _ = inbox.process(d, effect)
    stats["applied" if applied else "duplicates"] += 1
    if applied and crash_after and stats["applied"] == crash_after:
        os._exit(17)  # committed, not acked: the batch dies with the process


consumer = Consumer(client, topic, group, handler, consumer="svc", max_events=10, wait_ms=500)
consumer.start()
while conn.execute("SELECT count(*) FROM effects").fetchone()[0] < int(expected):
    time.sleep(0.05)
consumer.stop(timeout=30)
print(json.dumps(stats), flush=True)
