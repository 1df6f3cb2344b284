"""orders: the shop's order service (Python, clients/python).

- ``POST /orders`` takes an order. The order row and its ``shop.order.placed`` event (an outbox
  row) are written in ONE SQLite transaction; converge's relay publishes the event to the topic
  ``shop.orders``. A retried request with the same order id changes nothing.
- A consumer group (``orders-saga-starter``, pull) reads ``shop.orders`` and starts the
  ``shop-order`` saga of each order. The saga id is the order id, so a start sent twice starts
  one saga; the inbox records each event once, with the start's row, in one transaction.
  An event that is not a well-formed order is dead-lettered.
- It is the participant of the saga's ``accept`` and ``confirm`` steps (and of the ``reject``
  compensation): each step's effect on the order row and the saga ledger row commit together.
- ``GET /orders`` and ``GET /orders/{id}`` show the orders.

Run: ``python3 orders.py --converge http://127.0.0.1:8080 --db var/orders.db --listen
127.0.0.1:8090`` with ``ORDERS_TOKEN`` in the environment (README.md). Prints ``ready <port>``
once it serves. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from converge_client import (Client, CloudEvent, Consumer, Delivery, PermanentFailure,
                             SagaCommand, SagaParticipant, Sagas, SqliteInbox, SqliteOutbox,
                             StepFailed)
from converge_client.errors import ConflictError, ConvergeError, NotFoundError

ORDERS_TOPIC = "shop.orders"
STEPS_TOPIC = "shop.order-steps"
STARTER_GROUP = "orders-saga-starter"
SAGA = "shop-order"
SOURCE = "/shop/orders"

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
  id             TEXT PRIMARY KEY,
  sku            TEXT NOT NULL,
  qty            INTEGER NOT NULL,
  amount         INTEGER NOT NULL,
  card           TEXT NOT NULL,
  status         TEXT NOT NULL,
  updated_micros INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS saga_starts (
  order_id       TEXT PRIMARY KEY,
  started_micros INTEGER NOT NULL
);
"""

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SKU = re.compile(r"^[a-z0-9-]{1,64}$")


def now_micros() -> int:
    return int(time.time() * 1_000_000)


def connect(path: str) -> sqlite3.Connection:
    # Autocommit mode: the helpers open their own transactions (BEGIN IMMEDIATE).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def parse_order(data: Any) -> dict[str, Any]:
    """The order in a request or event, checked; ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("an order is a JSON object")
    unknown = set(data) - {"id", "sku", "qty", "amount", "card"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    oid, sku, qty, amount, card = (data.get(k) for k in ("id", "sku", "qty", "amount", "card"))
    if not isinstance(oid, str) or not _ID.match(oid):
        raise ValueError("id must be 1..64 characters of [A-Za-z0-9_-]")
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise ValueError("sku must be 1..64 characters of [a-z0-9-]")
    for name, value in (("qty", qty), ("amount", amount)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise ValueError(f"{name} must be an integer in 1..1000000")
    if not isinstance(card, str) or not 1 <= len(card) <= 64:
        raise ValueError("card must be a string of 1..64 characters")
    return {"id": oid, "sku": sku, "qty": qty, "amount": amount, "card": card}


class Orders:
    def __init__(self, client: Client, db: str) -> None:
        self.client = client
        self.db = db
        # One connection per writer role; SQLite serializes the writers (and the relay, which
        # reads and deletes outbox rows from another process), WAL lets readers go on.
        self.http_conn = connect(db)
        self.http_lock = threading.Lock()
        self.outbox = SqliteOutbox(self.http_conn)
        self.outbox.create_schema()  # also turns on WAL
        self.http_conn.executescript(SCHEMA)
        self.inbox = SqliteInbox(connect(db), STARTER_GROUP)
        self.sagas = Sagas(client)
        self.starter = Consumer(client, ORDERS_TOPIC, STARTER_GROUP, self.start_saga,
                                consumer=f"orders-{os.getpid()}", wait_ms=2000)
        self.participant = SagaParticipant(client, STEPS_TOPIC, connect(db), group="orders",
                                           consumer=f"orders-steps-{os.getpid()}",
                                           wait_ms=2000)
        self.participant.on_action("order.accept", self.accept)
        self.participant.on_compensation("order.reject", self.reject)
        self.participant.on_action("order.confirm", self.confirm)

    # --- HTTP -------------------------------------------------------------------------------
    def place(self, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Writes the order and its event in one transaction; 201 new, 200 a repeat, 409 an
        id already used by another order."""
        event = CloudEvent(type="shop.order.placed", source=SOURCE, id=f"order-{order['id']}",
                           subject=order["id"], data=order,
                           extensions={"partitionkey": order["id"]})
        with self.http_lock:
            conn = self.http_conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO orders (id, sku, qty, amount, card, status, updated_micros) "
                    "VALUES (?, ?, ?, ?, ?, 'placed', ?) ON CONFLICT (id) DO NOTHING",
                    (order["id"], order["sku"], order["qty"], order["amount"], order["card"],
                     now_micros()))
                if cur.rowcount == 1:
                    self.outbox.write(ORDERS_TOPIC, event)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        stored = self.get(order["id"])
        assert stored is not None
        if cur.rowcount == 1:
            return 201, stored
        same = all(stored[k] == order[k] for k in ("sku", "qty", "amount", "card"))
        if not same:
            return 409, {"code": "ALREADY_EXISTS",
                         "message": f"order {order['id']} exists with other contents"}
        return 200, stored

    def get(self, order_id: str) -> dict[str, Any] | None:
        rows = self.list(order_id)
        return rows[0] if rows else None

    def list(self, order_id: str | None = None) -> list[dict[str, Any]]:
        conn = connect(self.db)
        try:
            sql = "SELECT id, sku, qty, amount, card, status FROM orders"
            args: tuple[Any, ...] = ()
            if order_id is not None:
                sql += " WHERE id = ?"
                args = (order_id,)
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        finally:
            conn.close()
        return [dict(zip(("id", "sku", "qty", "amount", "card", "status"), r)) for r in rows]

    # --- the saga starter (consumer group, inbox) ------------------------------------------
    def start_saga(self, delivery: Delivery) -> None:
        event = delivery.event
        assert event is not None
        try:
            if event.type != "shop.order.placed":
                raise ValueError(f"unexpected event type {event.type!r}")
            order = parse_order(event.json_data())
        except ValueError as e:
            # Nothing can ever handle it: dead-letter it (the operator sees it there).
            raise PermanentFailure(f"not an order: {e}") from e
        # The start comes first and is idempotent (the saga id is the order id): if this
        # process dies after it, the redelivered event starts nothing new and the inbox row
        # below is written then.
        try:
            self.sagas.start(SAGA, order, id=order["id"])
        except ConflictError:
            pass  # the saga exists (finished and forgotten starts are the same saga)
        self.inbox.process(delivery, lambda conn: conn.execute(
            "INSERT INTO saga_starts (order_id, started_micros) VALUES (?, ?)",
            (order["id"], now_micros())))

    # --- the saga steps (participant; effect and ledger row in one transaction) -------------
    @staticmethod
    def _set_status(conn: sqlite3.Connection, order_id: str, status: str,
                    allowed: tuple[str, ...]) -> int:
        marks = ", ".join("?" for _ in allowed)
        return conn.execute(
            f"UPDATE orders SET status = ?, updated_micros = ? WHERE id = ? AND status IN "
            f"({marks})", (status, now_micros(), order_id, *allowed)).rowcount

    def accept(self, conn: sqlite3.Connection, cmd: SagaCommand) -> Any:
        if self._set_status(conn, cmd.saga_id, "accepted", ("placed",)) == 0:
            raise StepFailed(f"order {cmd.saga_id} is unknown or not waiting")
        return "accepted"

    def reject(self, conn: sqlite3.Connection, cmd: SagaCommand) -> None:
        self._set_status(conn, cmd.saga_id, "rejected", ("placed", "accepted"))

    def confirm(self, conn: sqlite3.Connection, cmd: SagaCommand) -> Any:
        self._set_status(conn, cmd.saga_id, "confirmed", ("accepted",))
        return "confirmed"

    # --- run ---------------------------------------------------------------------------------
    def start(self) -> None:
        # The topic appears with the relay's first row; until then creating the group fails.
        threading.Thread(target=self._run_starter, daemon=True).start()
        self.participant.start()

    def _run_starter(self) -> None:
        while not self.starter.stopping:
            try:
                self.client.create_group(ORDERS_TOPIC, STARTER_GROUP, start="earliest")
                break
            except ConflictError:
                break  # it exists
            except (NotFoundError, ConvergeError, OSError):
                time.sleep(0.2)
        self.starter.run()

    def stop(self) -> None:
        self.starter.stop(timeout=10)
        self.participant.stop(timeout=10)


def make_handler(orders: Orders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/orders":
                self.reply(200, {"orders": orders.list()})
            elif self.path.startswith("/orders/"):
                order = orders.get(self.path[len("/orders/"):])
                if order is None:
                    self.reply(404, {"code": "NOT_FOUND", "message": "no such order"})
                else:
                    self.reply(200, order)
            else:
                self.reply(404, {"code": "NOT_FOUND", "message": "no such route"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 65536))
            if self.path != "/orders":
                self.reply(404, {"code": "NOT_FOUND", "message": "no such route"})
                return
            try:
                order = parse_order(json.loads(body))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                self.reply(400, {"code": "INVALID_ARGUMENT", "message": str(e)})
                return
            status, out = orders.place(order)
            self.reply(status, out)

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--converge", default="http://127.0.0.1:8080")
    p.add_argument("--db", default="var/orders.db")
    p.add_argument("--listen", default="127.0.0.1:8090")
    args = p.parse_args()
    client = Client(args.converge, token=os.environ.get("ORDERS_TOKEN"), timeout=30)
    orders = Orders(client, args.db)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), make_handler(orders))
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    orders.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    orders.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
