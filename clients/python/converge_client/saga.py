"""Sagas over `converge serve`: a participant helper and a starter.

The participant protocol is docs/formats/saga.md ("Participants in other languages"): consume
the command topic with a consumer group; per (saga id, step) keep a ledger row in the service's
own database, written in the same transaction as the handler's effect; reply to the command's
``sagareplyto`` topic with the reply attributes, ``sagatoken`` copied from the command and the
saga id as ``partitionkey``; ack the command only after the transaction committed and the reply
was published.

The ledger is the table of converge's C++ ``SqlSagaLedger`` (``converge_saga_ledger``, states
0 none, 1 applied, 2 refused, 3 fenced, 4 compensated), so a service may move between the two.
Replies go in structured mode, where ``sagastep``/``sagaattempt`` are JSON integers and
``sagaapplied`` a JSON boolean, exactly the types the reply format names.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

from ._http import Backoff, quote_segment
from .client import Client, Delivery, check_group, check_topic
from .consumer import Consumer
from .errors import ClientInputError, ConvergeError
from .events import CloudEvent

REPLY_TYPE = "converge.saga.reply"
REPLY_SOURCE = "/converge/saga/participant"

_NONE, _APPLIED, _REFUSED, _FENCED, _COMPENSATED = 0, 1, 2, 3, 4

SQLITE_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER NOT NULL,
  state INTEGER NOT NULL, result BLOB, updated_micros INTEGER NOT NULL,
  PRIMARY KEY(saga_id, step));
CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated ON converge_saga_ledger(updated_micros);
"""


#: The status code names a reply's ``sagacode`` may carry (converge's ``StatusCodeName``).
STATUS_CODES = frozenset({
    "CANCELLED", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})


def _check_code(code: str) -> str:
    if code not in STATUS_CODES:
        raise ClientInputError(f"saga failure code {code!r} is not one of "
                               f"{', '.join(sorted(STATUS_CODES))}")
    return code


class StepFailed(Exception):
    """Raised by an action handler to refuse the step for good (nothing applied, and nothing
    ever will be for this step): the saga compensates. ``code`` is a status code name."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.code = _check_code(code)


class StepRetry(Exception):
    """Raised by a handler for a transient failure: nothing applied, the orchestrator retries.

    Any other exception from a handler is treated the same way (rolled back, ``retry``).
    """

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = _check_code(code)


@dataclass(frozen=True)
class SagaCommand:
    """A command as docs/formats/saga.md describes it."""

    event_id: str
    type: str
    saga_id: str
    definition: str
    version: int
    step: int
    step_name: str
    kind: Literal["action", "compensate", "cancel"]
    attempt: int
    retriable: bool
    reply_to: str
    token: str
    data: Any

    @classmethod
    def from_event(cls, event: CloudEvent) -> "SagaCommand":
        ext = event.extensions

        def text(name: str) -> str:
            v = ext.get(name)
            if not isinstance(v, str):
                raise ClientInputError(f"saga command {event.id!r}: attribute {name!r} missing")
            return v

        def integer(name: str, default: int | None = None) -> int:
            v = ext.get(name)
            if isinstance(v, bool):
                raise ClientInputError(f"saga command: attribute {name!r} is not an integer")
            if isinstance(v, int):
                return v
            if isinstance(v, str) and v.isdigit():
                return int(v)
            if v is None and default is not None:
                return default
            raise ClientInputError(f"saga command {event.id!r}: attribute {name!r} missing")

        kind = text("sagakind")
        if kind not in ("action", "compensate", "cancel"):
            raise ClientInputError(f"saga command: unknown sagakind {kind!r}")
        retriable = ext.get("sagaretriable")
        return cls(event_id=event.id, type=event.type, saga_id=text("sagaid"),
                   definition=str(ext.get("sagadef", "")), version=integer("sagaversion", 0),
                   step=integer("sagastep"), step_name=str(ext.get("sagastepname", "")),
                   kind=kind,  # type: ignore[arg-type]
                   attempt=integer("sagaattempt"),
                   retriable=retriable is True or retriable == "true",
                   reply_to=text("sagareplyto"), token=str(ext.get("sagatoken", "")),
                   data=event.json_data())


@dataclass(frozen=True)
class SagaReply:
    outcome: Literal["ok", "failed", "retry"]
    applied: bool = False
    code: str = "OK"
    result: bytes = b""

    def to_event(self, command: SagaCommand) -> CloudEvent:
        """The reply event, in the types the reply format names (structured mode keeps them)."""
        ext: dict[str, Any] = {
            "sagaid": command.saga_id, "sagastep": command.step, "sagakind": command.kind,
            "sagaattempt": command.attempt, "sagaoutcome": self.outcome,
            "sagaapplied": self.applied, "sagacode": self.code,
            "partitionkey": command.saga_id,
        }
        if command.token:
            ext["sagatoken"] = command.token
        return CloudEvent(type=REPLY_TYPE, source=REPLY_SOURCE, id=command.event_id + "/reply",
                          data=self.result if self.result else None,
                          datacontenttype="application/octet-stream" if self.result else None,
                          extensions=ext)


#: An action handler: applies the step with ``conn`` (inside the ledger's transaction) and
#: returns the result to reply (bytes, str, a JSON value, or None).
ActionHandler = Callable[[sqlite3.Connection, SagaCommand], Any]
#: A compensation handler: undoes the step with ``conn`` (inside the ledger's transaction).
CompensationHandler = Callable[[sqlite3.Connection, SagaCommand], None]


def _result_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class SqliteSagaLedger:
    """The participant's memory in its own SQLite database (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise ClientInputError("conn must be a sqlite3.Connection")
        self.conn = conn
        self._lock = threading.RLock()
        if conn.in_transaction:
            raise ClientInputError("the ledger needs the connection outside a transaction")
        conn.executescript(SQLITE_LEDGER_SCHEMA)

    def state(self, saga_id: str, step: int) -> tuple[int, bytes]:
        row = self.conn.execute(
            "SELECT state, result FROM converge_saga_ledger WHERE saga_id = ? AND step = ?",
            (saga_id, step)).fetchone()
        if row is None:
            return _NONE, b""
        return int(row[0]), bytes(row[1] or b"")

    def _write(self, saga_id: str, step: int, state: int, result: bytes) -> None:
        self.conn.execute(
            "INSERT INTO converge_saga_ledger(saga_id, step, state, result, updated_micros) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(saga_id, step) DO UPDATE SET "
            "state = excluded.state, result = excluded.result, "
            "updated_micros = excluded.updated_micros",
            (saga_id, step, state, result, int(time.time() * 1_000_000)))

    def process(self, command: SagaCommand, action: ActionHandler | None,
                compensation: CompensationHandler | None) -> SagaReply:
        """Decides the reply, running the handler at most once per (saga, step) with its
        effect and the ledger row in one transaction (as converge's SagaParticipantCore)."""
        with self._lock:
            return self._process(command, action, compensation)

    def _process(self, command: SagaCommand, action: ActionHandler | None,
                 compensation: CompensationHandler | None) -> SagaReply:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            reply = self._decide(command, action, compensation)
            conn.execute("COMMIT")
            return reply
        except _Transient as t:
            conn.execute("ROLLBACK")
            return SagaReply("retry", code=t.code, result=str(t).encode("utf-8"))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _decide(self, c: SagaCommand, action: ActionHandler | None,
                compensation: CompensationHandler | None) -> SagaReply:
        state, stored = self.state(c.saga_id, c.step)
        conn = self.conn
        if c.kind == "action":
            if state == _APPLIED:
                return SagaReply("ok", applied=True, result=stored)
            if state == _REFUSED:
                return SagaReply("failed", code="FAILED_PRECONDITION",
                                 result=b"refused earlier: " + stored)
            if state in (_FENCED, _COMPENSATED):
                return SagaReply("failed", code="ABORTED",
                                 result=b"step was compensated or cancelled before this action")
            if action is None:
                message = f"no handler for command type '{c.type}'"
                if c.retriable:
                    raise _Transient(message, "FAILED_PRECONDITION")
                self._write(c.saga_id, c.step, _REFUSED, message.encode())
                return SagaReply("failed", code="FAILED_PRECONDITION", result=message.encode())
            conn.execute("SAVEPOINT converge_step")
            try:
                result = _result_bytes(action(conn, c))
            except StepFailed as e:
                conn.execute("ROLLBACK TO converge_step")
                conn.execute("RELEASE converge_step")
                if c.retriable:  # after the pivot a failure is never final
                    raise _Transient(str(e), e.code) from e
                self._write(c.saga_id, c.step, _REFUSED, f"{e.code}: {e}".encode())
                return SagaReply("failed", code=e.code, result=str(e).encode("utf-8"))
            except StepRetry as e:
                raise _Transient(str(e), e.code) from e
            except Exception as e:  # noqa: BLE001 - an unexpected failure: nothing applied
                raise _Transient(f"{type(e).__name__}: {e}", "UNAVAILABLE") from e
            conn.execute("RELEASE converge_step")
            self._write(c.saga_id, c.step, _APPLIED, result)
            return SagaReply("ok", applied=True, result=result)
        if c.kind == "compensate":
            if state == _NONE:
                self._write(c.saga_id, c.step, _FENCED, b"")
                return SagaReply("ok", applied=False)
            if state in (_REFUSED, _FENCED):
                return SagaReply("ok", applied=False)
            if state == _COMPENSATED:
                return SagaReply("ok", applied=True)
            if compensation is None:
                raise _Transient(f"no handler for compensation type '{c.type}'",
                                 "FAILED_PRECONDITION")
            try:
                compensation(conn, c)
            except StepFailed as e:
                raise _Transient(str(e), e.code) from e
            except StepRetry as e:
                raise _Transient(str(e), e.code) from e
            except Exception as e:  # noqa: BLE001
                raise _Transient(f"{type(e).__name__}: {e}", "UNAVAILABLE") from e
            self._write(c.saga_id, c.step, _COMPENSATED, stored)
            return SagaReply("ok", applied=True)
        # cancel (the pivot, outcome unknown): fence it if it has not applied.
        if state == _NONE:
            self._write(c.saga_id, c.step, _FENCED, b"")
            return SagaReply("ok", applied=False)
        if state == _APPLIED:
            return SagaReply("ok", applied=True, result=stored)
        return SagaReply("ok", applied=False)


class _Transient(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class SagaParticipant:
    """Serves one participant (command) topic of registered saga definitions.

    Register handlers with :meth:`on_action` / :meth:`on_compensation` by command type, then
    :meth:`run` (or :meth:`start`). Each command is handled once per (saga, step) thanks to the
    ledger, its reply published in structured mode, and only then acked.
    """

    def __init__(self, client: Client, topic: str, conn: sqlite3.Connection, *,
                 group: str = "saga-participant", consumer: str | None = None,
                 mode: Literal["fetch", "stream"] = "fetch", wait_ms: int = 5000,
                 max_events: int = 100, reply_backoff: Backoff | None = None) -> None:
        if not isinstance(client, Client):
            raise ClientInputError("client must be a converge_client.Client")
        self.client = client
        self.topic = check_topic(topic)
        self.group = check_group(group)
        self.ledger = SqliteSagaLedger(conn)
        self._actions: dict[str, ActionHandler] = {}
        self._compensations: dict[str, CompensationHandler] = {}
        self.reply_backoff = reply_backoff or Backoff(base_s=0.05, cap_s=2.0)
        self.replies_sent = 0
        self.consumer = Consumer(client, self.topic, self.group, self._handle, consumer=consumer,
                                 mode=mode, wait_ms=wait_ms, max_events=max_events)

    def on_action(self, command_type: str, handler: ActionHandler) -> None:
        if not isinstance(command_type, str) or not command_type or not callable(handler):
            raise ClientInputError("on_action takes a command type and a callable")
        self._actions[command_type] = handler

    def on_compensation(self, command_type: str, handler: CompensationHandler) -> None:
        if not isinstance(command_type, str) or not command_type or not callable(handler):
            raise ClientInputError("on_compensation takes a command type and a callable")
        self._compensations[command_type] = handler

    def handle(self, command: SagaCommand) -> SagaReply:
        """Processes one command through the ledger and publishes its reply (no ack)."""
        reply = self.ledger.process(command, self._actions.get(command.type),
                                    self._compensations.get(command.type))
        event = reply.to_event(command)
        attempt = 0
        while True:
            # The reply must reach the orchestrator before the command is acked; a retry is
            # safe (same id: the server stores it once).
            try:
                self.client.publish(command.reply_to, event)
                break
            except ConvergeError:
                if self.consumer.stopping and attempt > 3:
                    raise
                time.sleep(self.reply_backoff.delay(attempt))
                attempt += 1
        self.replies_sent += 1
        return reply

    def _handle(self, delivery: Delivery) -> None:
        assert delivery.event is not None
        self.handle(SagaCommand.from_event(delivery.event))

    def run(self) -> None:
        self.consumer.run()

    def start(self) -> threading.Thread:
        return self.consumer.start()

    def stop(self, timeout: float | None = None) -> None:
        self.consumer.stop(timeout)


class Sagas:
    """Starting and watching sagas (``/v1/sagas``, ``/v1/saga-definitions``)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._t = client.transport

    def register_definition(self, definition: Mapping[str, Any] | str) -> dict[str, Any]:
        """Registers a definition given as a mapping (sent as JSON) or YAML/JSON text."""
        if isinstance(definition, Mapping):
            return dict(self._t.json_request("POST", "/v1/saga-definitions", dict(definition),
                                             ok=(201,)))
        if not isinstance(definition, str) or not definition.strip():
            raise ClientInputError("a definition is a mapping or YAML/JSON text")
        is_json = definition.lstrip().startswith("{")
        res = self._t.request("POST", "/v1/saga-definitions", body=definition.encode("utf-8"),
                              headers={"Content-Type": "application/json" if is_json
                                       else "application/yaml"}, ok=(201,))
        return dict(res.json())

    def list_definitions(self) -> list[dict[str, Any]]:
        return list(self._t.json_request("GET", "/v1/saga-definitions",
                                         retry_safe=True)["definitions"])

    def start(self, definition: str, data: Any = None, *, id: str | None = None,
              version: int | None = None) -> str:
        """Starts a saga and returns its id. ``id`` is an idempotency key: a retry with the
        same id returns the same saga (so retries are safe whenever an id is given)."""
        if not isinstance(definition, str) or not definition:
            raise ClientInputError("definition must be a definition name")
        body: dict[str, Any] = {"definition": definition}
        if id is not None:
            if not isinstance(id, str) or not id or len(id) > 128:
                raise ClientInputError("a saga id is 1..128 characters")
            body["id"] = id
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ClientInputError("version must be an integer >= 0")
            body["version"] = version
        if data is not None:
            body["data"] = data
        out = self._t.json_request("POST", "/v1/sagas", body, ok=(201,), retry_safe=id is not None)
        return str(out["id"])

    def describe(self, saga_id: str) -> dict[str, Any]:
        return dict(self._t.json_request("GET", f"/v1/sagas/{quote_segment(saga_id)}",
                                         retry_safe=True))

    def list(self, *, state: str | None = None, definition: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        q = {k: str(v) for k, v in (("state", state), ("definition", definition),
                                    ("limit", limit)) if v is not None}
        target = "/v1/sagas"
        if q:
            target += "?" + urllib.parse.urlencode(q)
        return list(self._t.json_request("GET", target, retry_safe=True)["sagas"])

    def cancel(self, saga_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason is not None else {}
        return dict(self._t.json_request("POST", f"/v1/sagas/{quote_segment(saga_id)}/cancel",
                                         body))

    def wait(self, saga_id: str, *, states: Iterable[str] = ("completed", "compensated"),
             timeout: float = 60.0, poll_s: float = 0.1) -> dict[str, Any]:
        """Polls until the saga reaches one of ``states``; TimeoutError past ``timeout``."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            info = self.describe(saga_id)
            if info.get("state") in wanted:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(f"saga {saga_id} is {info.get('state')!r} after {timeout} s")
            time.sleep(poll_s)
