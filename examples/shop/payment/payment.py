"""payment: the shop's payment service (Python, clients/python), fed by PUSH.

converge POSTs each command of the saga's ``charge`` step (topic ``shop.payment-steps``) to
``POST /push`` (the ``payment`` subscription of converge.yaml). The service

1. verifies the ``Converge-Signature`` (v2, HMAC-SHA256 with the subscription's secret; the
   recipe of docs/push.md, which ``converge_client.read_push`` follows) and refuses anything
   else with 401, so a forged request charges nothing (converge never sends one unsigned);
2. runs the step through the saga ledger (``converge_saga_ledger`` in its own SQLite database):
   the charge row and the ledger row commit together, so a command pushed twice (a retry, or
   a new attempt after a restart) charges once;
3. publishes the reply to the saga's reply topic, and only then answers 204 (converge acks the
   delivery). Any failure before that answers 503: converge retries with backoff.

A card named ``declined`` is refused: the saga compensates the steps before the pivot.

Run: ``python3 payment.py --converge http://127.0.0.1:8080 --db var/payment.db --listen
127.0.0.1:8091`` with ``PAYMENT_TOKEN`` and ``PAYMENT_PUSH_SECRET`` in the environment
(README.md). Prints ``ready <port>`` once it serves.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from converge_client import (Client, CloudEvent, PushRequestError, SagaCommand,
                             SqliteSagaLedger, StepFailed, read_push)
from converge_client.errors import ClientInputError, ConvergeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
  order_id       TEXT PRIMARY KEY,
  amount         INTEGER NOT NULL,
  charged_micros INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS push_stats (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


class Payment:
    def __init__(self, client: Client, db: str) -> None:
        self.client = client
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False,
                                    timeout=10)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)
        self.ledger = SqliteSagaLedger(self.conn)
        # The counters have a connection of their own: the ledger's is inside its
        # transactions from other request threads.
        self.stats_conn = sqlite3.connect(db, check_same_thread=False, timeout=10)
        self.lock = threading.Lock()

    def count(self, name: str) -> None:
        with self.lock:
            with self.stats_conn:
                self.stats_conn.execute("INSERT INTO push_stats (name, n) VALUES (?, 1) ON CONFLICT "
                                  "(name) DO UPDATE SET n = n + 1", (name,))

    def charge(self, conn: sqlite3.Connection, cmd: SagaCommand) -> Any:
        order = cmd.data
        if not isinstance(order, dict) or not isinstance(order.get("amount"), int):
            raise StepFailed("the command holds no order", code="INVALID_ARGUMENT")
        if order.get("card") == "declined":
            raise StepFailed("card declined", code="FAILED_PRECONDITION")
        conn.execute("INSERT INTO charges (order_id, amount, charged_micros) VALUES (?, ?, ?)",
                     (cmd.saga_id, order["amount"], int(time.time() * 1_000_000)))
        return {"charged": order["amount"]}

    def handle(self, event: CloudEvent) -> None:
        """Ledger (effect once), then the reply; raises when the reply could not be sent."""
        cmd = SagaCommand.from_event(event)
        actions = {"payment.charge": self.charge}
        reply = self.ledger.process(cmd, actions.get(cmd.type), None)
        # Same reply id for a repeated command: the server stores it once.
        self.client.publish(cmd.reply_to, reply.to_event(cmd))


def make_handler(payment: Payment, secret: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, message: str = "") -> None:
            data = message.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if 0 <= length <= 1 << 20 else b""
            if self.path != "/push":
                self.answer(404, "no such route")
                return
            # The headers exactly as received (a repeated header is not expected here).
            headers = {name: value for name, value in self.headers.items()}
            try:
                delivery = read_push(secret, headers, body)
            except PushRequestError as e:
                payment.count("refused_signature" if e.signature else "malformed")
                self.answer(401 if e.signature else 400, str(e))
                return
            try:
                payment.handle(delivery.event)
            except (ClientInputError, ValueError, KeyError) as e:
                # Not a saga command: nothing can ever handle it (converge dead-letters it).
                payment.count("malformed")
                self.answer(400, f"not a saga command: {e}")
                return
            except (ConvergeError, OSError, sqlite3.Error) as e:
                payment.count("failed")
                self.answer(503, f"{type(e).__name__}: {e}")
                return
            payment.count("handled")
            self.answer(204)

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--converge", default="http://127.0.0.1:8080")
    p.add_argument("--db", default="var/payment.db")
    p.add_argument("--listen", default="127.0.0.1:8091")
    args = p.parse_args()
    secret = os.environ.get("PAYMENT_PUSH_SECRET", "").encode()
    if len(secret) < 16:
        print("PAYMENT_PUSH_SECRET must hold the subscription's secret (16+ bytes)",
              file=sys.stderr)
        return 2
    client = Client(args.converge, token=os.environ.get("PAYMENT_TOKEN"), timeout=30)
    payment = Payment(client, args.db)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), make_handler(payment, secret))
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
