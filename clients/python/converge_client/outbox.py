"""Outbox writers: events written in the caller's transaction, published later by a relay.

The table and the rules are docs/formats/outbox.md (format version 1). :class:`SqliteOutbox`
writes through :mod:`sqlite3`; :class:`PostgresOutbox` through any DB-API 2.0 connection the
caller passes (psycopg, psycopg2, pg8000, ...: no driver is imported here). Neither commits:
the rows commit or roll back with the caller's business change. A relay (``relays:`` in the
server's configuration, or ``converge relay``) then publishes them, stored once per
(source, id).

:class:`PostgresWalOutbox` is the WAL outbox (docs/formats/wal-outbox.md): no table, one
transactional logical message per event (``pg_logical_emit_message``) in the caller's
transaction, read from a replication slot by a relay in mode ``wal``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from .client import check_topic
from .errors import ClientInputError
from .events import CloudEvent, _is_json_media_type, _is_text_media_type

OUTBOX_FORMAT = "1"

SQLITE_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT NOT NULL,
  topic           TEXT NOT NULL,
  partition_key   TEXT NOT NULL DEFAULT '',
  source          TEXT NOT NULL,
  type            TEXT NOT NULL,
  subject         TEXT,
  time            TEXT,
  datacontenttype TEXT,
  dataschema      TEXT,
  data_kind       TEXT,
  data            BLOB,
  extensions      TEXT,
  traceparent     TEXT,
  tracestate      TEXT,
  created_at      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS converge_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO converge_meta (name, value) VALUES ('outbox_format', '1');
"""

POSTGRES_OUTBOX_SCHEMA = [
    "SELECT pg_advisory_xact_lock(1668706609, 0)",
    """CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             bigserial PRIMARY KEY,
  id              text NOT NULL,
  topic           text NOT NULL,
  partition_key   text NOT NULL DEFAULT '',
  source          text NOT NULL,
  type            text NOT NULL,
  subject         text,
  time            text,
  datacontenttype text,
  dataschema      text,
  data_kind       text,
  data            bytea,
  extensions      text,
  traceparent     text,
  tracestate      text,
  created_at      bigint NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0)""",
    "CREATE TABLE IF NOT EXISTS converge_meta (name text PRIMARY KEY, value text NOT NULL)",
    "INSERT INTO converge_meta (name, value) VALUES ('outbox_format', '1') ON CONFLICT DO NOTHING",
]

#: Advisory lock class of the per-key commit-order lock (docs/formats/outbox.md, "Ordering").
KEY_LOCK_CLASS = 1668705073

_COLUMNS = ("id", "topic", "partition_key", "source", "type", "subject", "time",
            "datacontenttype", "dataschema", "data_kind", "data", "extensions", "traceparent",
            "tracestate", "created_at")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_OWN_COLUMNS = {"partitionkey", "traceparent", "tracestate"}


def outbox_row(topic: str, event: CloudEvent) -> tuple[Any, ...]:
    """The column values (in ``_COLUMNS`` order) of one event, checked as the relay checks
    them, so a row this writes is never dead-lettered as malformed."""
    check_topic(topic)
    if not isinstance(event, CloudEvent):
        raise ClientInputError(f"expected a CloudEvent, got {type(event).__name__}")
    event.validate()
    key = event.partitionkey or ""
    extensions = {k: v for k, v in event.extensions.items() if k not in _OWN_COLUMNS}
    traceparent = event.extensions.get("traceparent")
    tracestate = event.extensions.get("tracestate")
    if traceparent is not None and (not isinstance(traceparent, str)
                                    or not _TRACEPARENT.match(traceparent)):
        raise ClientInputError(f"traceparent {traceparent!r} is not 00-<32 hex>-<16 hex>-<2 hex>")
    if tracestate is not None and not isinstance(tracestate, str):
        raise ClientInputError("tracestate must be a string")
    # converge's writer fills `time` with the wall clock when the event has none.
    when = event.time or datetime.now(timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")
    data: bytes | None
    if event.data is None:
        kind, data = None, None
    elif isinstance(event.data, (bytes, bytearray, memoryview)):
        kind, data = "binary", bytes(event.data)
    elif isinstance(event.data, str) and not _is_json_media_type(event.datacontenttype):
        kind = "text" if _is_text_media_type(event.datacontenttype) else "binary"
        data = event.data.encode("utf-8")
    else:
        kind, data = "json", event.data_bytes()
    return (event.id, topic, key, event.source, event.type, event.subject, when,
            event.datacontenttype, event.dataschema, kind, data,
            json.dumps(extensions, separators=(",", ":")) if extensions else None,
            traceparent, tracestate, int(time.time() * 1_000_000))


class SqliteOutbox:
    """Writes outbox rows through a :mod:`sqlite3` connection, inside the caller's transaction.

    The relay reads the database concurrently: run it in WAL mode (:meth:`create_schema` sets
    it). SQLite has one writer at a time, so ``seq`` order is commit order for every key.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise ClientInputError("conn must be a sqlite3.Connection")
        self.conn = conn

    def create_schema(self) -> None:
        if self.conn.in_transaction:
            raise ClientInputError("create_schema needs the connection outside a transaction")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SQLITE_OUTBOX_SCHEMA)

    def write(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None:
        """Inserts the events' rows. Does not commit: commit with your business change."""
        batch = [events] if isinstance(events, CloudEvent) else list(events)
        rows = [outbox_row(topic, e) for e in batch]
        self.conn.executemany(
            f"INSERT INTO converge_outbox ({', '.join(_COLUMNS)}) VALUES "
            f"({', '.join('?' for _ in _COLUMNS)})", rows)


PARAMSTYLES = ("format", "pyformat", "qmark", "numeric", "named")


def render_sql(template: str, count: int, paramstyle: str) -> str:
    """``template`` with ``{}`` placeholders, rendered in a DB-API paramstyle."""
    if paramstyle == "format":
        marks = ["%s"] * count
    elif paramstyle == "qmark":
        marks = ["?"] * count
    elif paramstyle == "numeric":
        marks = [f":{i + 1}" for i in range(count)]
    elif paramstyle == "named":
        marks = [f":p{i}" for i in range(count)]
    else:
        marks = [f"%(p{i})s" for i in range(count)]
    return template.format(*marks)


def sql_params(values: Sequence[Any], paramstyle: str) -> Any:
    """The parameters of a statement :func:`render_sql` rendered."""
    if paramstyle in ("named", "pyformat"):
        return {f"p{i}": v for i, v in enumerate(values)}
    return tuple(values)


class PostgresOutbox:
    """Writes outbox rows through a DB-API 2.0 connection to PostgreSQL.

    ``paramstyle`` is the driver module's (``format`` for psycopg/psycopg2/pg8000, the default;
    ``pyformat``, ``qmark``, ``numeric`` and ``named`` work too). :meth:`write` takes the
    per-key advisory locks first, in ascending ``hashtext`` order, in the caller's transaction,
    so per key ``seq`` order is commit order (docs/formats/outbox.md, "Ordering").
    """

    def __init__(self, conn: Any, *, paramstyle: str = "format") -> None:
        if paramstyle not in PARAMSTYLES:
            raise ClientInputError(f"paramstyle must be one of {', '.join(PARAMSTYLES)}")
        if not hasattr(conn, "cursor"):
            raise ClientInputError("conn must be a DB-API 2.0 connection (with cursor())")
        self.conn = conn
        self.paramstyle = paramstyle

    def _sql(self, template: str, count: int) -> tuple[str, None]:
        return render_sql(template, count, self.paramstyle), None

    def _params(self, values: Sequence[Any]) -> Any:
        return sql_params(values, self.paramstyle)

    def create_schema(self) -> None:
        """Creates the tables in the caller's transaction (commit afterwards), under the
        schema advisory lock so several processes may do it at once."""
        cur = self.conn.cursor()
        try:
            for statement in POSTGRES_OUTBOX_SCHEMA:
                cur.execute(statement)
        finally:
            cur.close()

    def write(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None:
        """Inserts the events' rows after taking their keys' locks. Does not commit."""
        batch = [events] if isinstance(events, CloudEvent) else list(events)
        rows = [outbox_row(topic, e) for e in batch]
        if not rows:
            return
        keys = sorted({r[2] for r in rows if r[2]})
        cur = self.conn.cursor()
        try:
            if keys:
                # One statement, locks in hash order (the sub-select is ordered and fenced by
                # OFFSET 0 so the lock calls run in that order).
                values = ", ".join("({}::text)" for _ in keys)
                sql, _ = self._sql(
                    "WITH locks AS MATERIALIZED (SELECT pg_advisory_xact_lock({}::int4, h) FROM "
                    "(SELECT DISTINCT hashtext(k) AS h FROM (VALUES " + values + ") AS v(k) "
                    "ORDER BY 1 OFFSET 0) AS s) SELECT count(*) FROM locks", 1 + len(keys))
                cur.execute(sql, self._params([KEY_LOCK_CLASS, *keys]))
                cur.fetchall()
            sql, _ = self._sql(
                f"INSERT INTO converge_outbox ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('{}' for _ in _COLUMNS)})", len(_COLUMNS))
            for row in rows:
                cur.execute(sql, self._params(row))
        finally:
            cur.close()

    def notify(self) -> None:
        """Wakes the relay now (``pg_notify('converge_outbox', '')``); call after COMMIT."""
        cur = self.conn.cursor()
        try:
            cur.execute("SELECT pg_notify('converge_outbox', '')")
        finally:
            cur.close()


#: The WAL outbox (docs/formats/wal-outbox.md): a message's prefix is this and the topic.
WAL_PREFIX = "converge:"
#: The statement that emits one event, ``{}`` for its two parameters (prefix, content).
WAL_EMIT_SQL = "SELECT pg_logical_emit_message(true, {}, {})"


def wal_emit_params(topic: str, event: CloudEvent) -> tuple[str, str]:
    """The two parameters of :data:`WAL_EMIT_SQL` for one event: ``converge:<topic>`` and the
    event in CloudEvents JSON structured mode, checked as the relay checks them (as the C++
    ``outbox_format::BuildEmitParams`` after ``Outbox::Emit``'s checks): a bad topic, an invalid
    event or a bad ``traceparent`` raise :class:`ClientInputError`. An event without ``time``
    gets the current time, as the other writers do."""
    check_topic(topic)
    if not isinstance(event, CloudEvent):
        raise ClientInputError(f"expected a CloudEvent, got {type(event).__name__}")
    event.validate()
    traceparent = event.extensions.get("traceparent")
    if traceparent is not None and (not isinstance(traceparent, str)
                                    or not _TRACEPARENT.match(traceparent)):
        raise ClientInputError(f"traceparent {traceparent!r} is not 00-<32 hex>-<16 hex>-<2 hex>")
    body = event.to_dict()
    if body.get("time") is None:
        body["time"] = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace(
            "+00:00", "Z")
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return WAL_PREFIX + topic, content


class PostgresWalOutbox:
    """Emits events into PostgreSQL's write-ahead log through a DB-API 2.0 connection, inside
    the caller's transaction (docs/formats/wal-outbox.md): nothing is written to a table, and
    the messages commit or roll back with the transaction. A relay in mode ``wal`` (its slot
    created with ``converge relay --create-slots``) publishes them in commit order.

    ``paramstyle`` as :class:`PostgresOutbox`. Needs PostgreSQL 14 or later with
    ``wal_level = logical``.
    """

    def __init__(self, conn: Any, *, paramstyle: str = "format") -> None:
        if paramstyle not in PARAMSTYLES:
            raise ClientInputError(f"paramstyle must be one of {', '.join(PARAMSTYLES)}")
        if not hasattr(conn, "cursor"):
            raise ClientInputError("conn must be a DB-API 2.0 connection (with cursor())")
        self.conn = conn
        self.paramstyle = paramstyle

    def emit(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None:
        """Emits one message per event, in the order given. Every event is checked before
        anything is emitted. Does not commit: commit with your business change."""
        batch = [events] if isinstance(events, CloudEvent) else list(events)
        params = [wal_emit_params(topic, e) for e in batch]
        if not params:
            return
        sql = render_sql(WAL_EMIT_SQL, 2, self.paramstyle)
        cur = self.conn.cursor()
        try:
            for prefix, content in params:
                cur.execute(sql, sql_params([prefix, content], self.paramstyle))
        finally:
            cur.close()


def rows_of(conn: sqlite3.Connection) -> Iterable[tuple[Any, ...]]:
    """The outbox rows still waiting in a SQLite database (for tests and tools)."""
    return conn.execute(f"SELECT seq, {', '.join(_COLUMNS)} FROM converge_outbox ORDER BY seq")
