"""The inbox: an event's effect exactly once, in the caller's own transaction (SQLite through
:mod:`sqlite3`, PostgreSQL through any DB-API 2.0 connection).

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
from typing import Any, Callable, TypeVar

from .client import Delivery
from .errors import ClientInputError
from .events import CloudEvent
from .outbox import PARAMSTYLES, render_sql, sql_params

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


POSTGRES_INBOX_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS converge_inbox (
  consumer     text NOT NULL,
  event_id     text NOT NULL,
  processed_at bigint NOT NULL,
  PRIMARY KEY (consumer, event_id)
)""",
    "CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at)",
]


def _event_of(event: CloudEvent | Delivery) -> CloudEvent:
    if isinstance(event, Delivery):
        if event.event is None:
            raise ClientInputError("the delivery holds no CloudEvent")
        event = event.event
    if not isinstance(event, CloudEvent):
        raise ClientInputError(f"expected a CloudEvent or Delivery, got {type(event).__name__}")
    if not event.source or not event.id:
        raise ClientInputError("the event needs a source and an id")
    return event


class PostgresInbox:
    """An inbox in PostgreSQL through a DB-API 2.0 connection of the caller's (psycopg,
    psycopg2, pg8000, ...: no driver is imported here), in the documented table.

    :meth:`process` runs one transaction per event on ``conn`` and commits it (the driver's
    implicit transaction: the connection must not be in autocommit mode, nor inside another
    transaction of the caller's). Two workers that receive the same event at once serialize on
    the table's primary key: the second finds the row once the first committed and skips the
    effect. ``paramstyle`` is the driver module's (``format`` by default, as
    :class:`~converge_client.PostgresOutbox`). Calls are serialized per instance.
    """

    def __init__(self, conn: Any, consumer: str, *, paramstyle: str = "format") -> None:
        if not hasattr(conn, "cursor") or not hasattr(conn, "commit"):
            raise ClientInputError("conn must be a DB-API 2.0 connection (cursor(), commit())")
        if paramstyle not in PARAMSTYLES:
            raise ClientInputError(f"paramstyle must be one of {', '.join(PARAMSTYLES)}")
        if not isinstance(consumer, str) or not consumer:
            raise ClientInputError("consumer must be a non-empty string")
        self.conn = conn
        self.consumer = consumer
        self.paramstyle = paramstyle
        self._lock = threading.RLock()

    def create_schema(self) -> None:
        """Creates the table and its index, and commits."""
        with self._lock:
            cur = self.conn.cursor()
            try:
                for statement in POSTGRES_INBOX_SCHEMA:
                    cur.execute(statement)
            finally:
                cur.close()
            self.conn.commit()

    def process(self, event: CloudEvent | Delivery,
                effect: Callable[[Any], T]) -> tuple[bool, T | None]:
        """Runs ``effect(conn)`` once per event, in the transaction that inserts its row.

        Returns ``(True, effect's result)`` when applied now (committed) and ``(False, None)``
        when the event had been processed before (rolled back, nothing changed). If the effect
        or the commit raises, everything is rolled back and the exception propagates. Ack the
        event only after this returned.
        """
        ev = _event_of(event)
        with self._lock:
            conn = self.conn
            try:
                cur = conn.cursor()
                try:
                    cur.execute(render_sql(
                        "INSERT INTO converge_inbox (consumer, event_id, processed_at) VALUES "
                        "({}, {}, {}) ON CONFLICT DO NOTHING RETURNING event_id", 3,
                        self.paramstyle),
                        sql_params([self.consumer, ev.identity, int(time.time() * 1_000_000)],
                                   self.paramstyle))
                    inserted = bool(cur.fetchall())
                finally:
                    cur.close()
                if not inserted:
                    conn.rollback()
                    return False, None
                result = effect(conn)
                conn.commit()
                return True, result
            except BaseException:
                try:
                    conn.rollback()
                except Exception:  # noqa: BLE001 - the original error is the one to see
                    pass
                raise

    def seen(self, event: CloudEvent | Delivery) -> bool:
        ev = _event_of(event)
        with self._lock:
            cur = self.conn.cursor()
            try:
                cur.execute(render_sql("SELECT 1 FROM converge_inbox WHERE consumer = {} AND "
                                       "event_id = {}", 2, self.paramstyle),
                            sql_params([self.consumer, ev.identity], self.paramstyle))
                found = bool(cur.fetchall())
            finally:
                cur.close()
            self.conn.rollback()  # end the read's implicit transaction
            return found

    def cleanup(self, retention_ms: int = 7 * 24 * 3600 * 1000, batch_rows: int = 1000) -> int:
        """Deletes rows older than ``retention_ms`` in short transactions; returns how many.

        Keep the retention above the topic's dedup window and the longest redelivery delay.
        """
        cutoff = int(time.time() * 1_000_000) - retention_ms * 1000
        total = 0
        with self._lock:
            while True:
                cur = self.conn.cursor()
                try:
                    cur.execute(render_sql(
                        "DELETE FROM converge_inbox WHERE (consumer, event_id) IN (SELECT "
                        "consumer, event_id FROM converge_inbox WHERE consumer = {} AND "
                        "processed_at < {} LIMIT {})", 3, self.paramstyle),
                        sql_params([self.consumer, cutoff, batch_rows], self.paramstyle))
                    n = int(cur.rowcount)
                finally:
                    cur.close()
                self.conn.commit()
                total += max(n, 0)
                if n < batch_rows:
                    return total
