"""The inbox: an event's effect exactly once, in the caller's own SQLite transaction.

The table is converge's inbox table (docs/formats/outbox.md, "The inbox table"): one row per
(consumer, event identity), inserted in the same transaction as the effect. A redelivered
event finds its row and its effect is skipped; the caller then acks it. The identity recorded
is ``<len(source)>:<source><id>`` (docs/formats/outbox.md, "Event identity"), the same the C++
inbox records for events published over HTTP or through an outbox.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Callable, TypeVar

from .client import Delivery
from .errors import ClientInputError
from .events import CloudEvent

T = TypeVar("T")

SQLITE_INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS converge_inbox (
  consumer     TEXT NOT NULL,
  event_id     TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at);
"""


class SqliteInbox:
    """An inbox in a :mod:`sqlite3` database of the caller's.

    ``consumer`` names the consuming application (usually its consumer group), so several may
    share one database. Thread-safe: calls of :meth:`process` are serialized (SQLite has one
    writer anyway); a connection used from several threads (a :class:`Consumer` with
    ``workers > 1``) must be opened with ``check_same_thread=False``.
    """

    def __init__(self, conn: sqlite3.Connection, consumer: str, *, create: bool = True) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise ClientInputError("conn must be a sqlite3.Connection")
        if not isinstance(consumer, str) or not consumer:
            raise ClientInputError("consumer must be a non-empty string")
        self.conn = conn
        self.consumer = consumer
        self._lock = threading.RLock()
        if create:
            self.create_schema()

    def create_schema(self) -> None:
        if self.conn.in_transaction:
            raise ClientInputError("create_schema needs the connection outside a transaction")
        self.conn.executescript(SQLITE_INBOX_SCHEMA)

    def seen(self, event: CloudEvent) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM converge_inbox WHERE consumer = ? AND event_id = ?",
            (self.consumer, event.identity)).fetchone()
        return row is not None

    def process(self, event: CloudEvent | Delivery,
                effect: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """Runs ``effect(conn)`` once per event, atomically with the inbox row.

        Opens a write transaction (``BEGIN IMMEDIATE``), inserts the row and, when it was new,
        runs the effect, then commits. Returns ``(True, effect's result)`` when applied now and
        ``(False, None)`` when the event had been processed before. If the effect raises,
        everything is rolled back (neither row nor effect) and the exception propagates.
        Ack the event only after this returned.
        """
        if isinstance(event, Delivery):
            if event.event is None:
                raise ClientInputError("the delivery holds no CloudEvent")
            event = event.event
        if not isinstance(event, CloudEvent):
            raise ClientInputError(f"expected a CloudEvent or Delivery, got {type(event).__name__}")
        if not event.source or not event.id:
            raise ClientInputError("the event needs a source and an id")
        with self._lock:
            return self._process(event, effect)

    def _process(self, event: CloudEvent,
                 effect: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        if self.conn.in_transaction:
            raise ClientInputError("process needs the connection outside a transaction: it "
                                   "opens and commits its own")
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO converge_inbox (consumer, event_id, processed_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (self.consumer, event.identity, int(time.time() * 1_000_000)))
            if cur.rowcount == 0:
                conn.execute("ROLLBACK")
                return False, None
            result = effect(conn)
            conn.execute("COMMIT")
            return True, result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def cleanup(self, retention_ms: int = 7 * 24 * 3600 * 1000, batch_rows: int = 1000) -> int:
        """Deletes rows older than ``retention_ms`` in short statements; returns how many.

        Keep the retention above the topic's dedup window and the longest redelivery delay.
        """
        cutoff = int(time.time() * 1_000_000) - retention_ms * 1000
        total = 0
        while True:
            with self.conn:
                cur = self.conn.execute(
                    "DELETE FROM converge_inbox WHERE (consumer, event_id) IN (SELECT consumer, "
                    "event_id FROM converge_inbox WHERE consumer = ? AND processed_at < ? LIMIT ?)",
                    (self.consumer, cutoff, batch_rows))
            total += cur.rowcount
            if cur.rowcount < batch_rows:
                return total
