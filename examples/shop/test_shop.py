"""The shop example end to end (ctest ``shop_example_test``): the real ``converge serve`` with
the example's converge.yaml and saga definition, and the three services as processes (orders
and payment in Python, inventory in TypeScript compiled by the build).

Orders are placed over the orders service's HTTP API: most succeed, some with a declined card
(refused at the pivot: the reservation is compensated), some for a SKU that is sold out or
runs out (refused at the reservation). Mid-run the inventory service and later the payment
service are SIGKILLed and started again. Then everything is checked by value: each order's
final state and its saga's, the stock documents (initial minus the confirmed orders, holding
exactly their reservations), the charges (one per confirmed order), the inbox and the saga
starts (one per order), and the dead letters (only the malformed event published on purpose),
as well as the push signature check, the collection's owner and the outbox's idempotency.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from collections import Counter
from typing import Any, Callable

from converge_client import Client, CloudEvent, Sagas
from converge_client.errors import PermissionDeniedError

HERE = os.path.dirname(os.path.abspath(__file__))
STOCK = {"widget": 20, "gadget": 10, "limited": 5, "sold-out": 0}


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process whose stdout announces readiness; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: str) -> None:
        self.name, self.argv, self.env, self.logdir = name, argv, env, logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = b""

    def start(self, ready: bytes, timeout: float = 60) -> re.Match[bytes]:
        log = open(os.path.join(self.logdir, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE,
                                     stderr=log, preexec_fn=_die_with_parent, cwd=self.logdir)
        log.close()
        assert self.proc.stdout is not None
        self.output = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                self.output += chunk
                m = re.search(ready, self.output)
                if m:
                    return m
        raise RuntimeError(f"{self.name} did not start: {self.output!r}\n{self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.logdir, f"{self.name}.log"), "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def terminate(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self._close()
        return code

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and not isinstance(body, bytes):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def plan_orders() -> list[dict[str, Any]]:
    """The orders and what must become of them. Declined orders use widgets only and the
    widget and gadget orders fit the stock even while the declined ones hold theirs, so the
    outcome of each order does not depend on timing; of the eight `limited` orders exactly
    five get the five in stock."""
    rng = random.Random(20)
    plan: list[dict[str, Any]] = []

    def add(kind: str, sku: str, qty: int, card: str, expect: str) -> None:
        plan.append({"order": {"id": f"o{len(plan) + 1:03d}", "sku": sku, "qty": qty,
                               "amount": rng.randint(100, 9999), "card": card},
                     "kind": kind, "expect": expect})

    for _ in range(12):
        add("ok", "widget", 1, "visa-4242", "confirmed")
    for _ in range(4):
        add("declined", "widget", 2, "declined", "rejected")
    for _ in range(4):
        add("ok", "gadget", 2, "visa-4242", "confirmed")
    for _ in range(3):
        add("sold-out", "sold-out", 1, "visa-4242", "rejected")
    for _ in range(8):
        add("limited", "limited", 1, "visa-4242", "?")
    rng.shuffle(plan)
    return plan


class ShopTest(unittest.TestCase):
    def setUp(self) -> None:
        self.binary = os.environ.get("CONVERGE_BINARY", "")
        self.inventory_js = os.environ.get("SHOP_INVENTORY_JS", "")
        if not self.binary or not self.inventory_js:
            raise unittest.SkipTest("run through ctest (CONVERGE_BINARY, SHOP_INVENTORY_JS)")
        self.node = os.environ.get("CONVERGE_NODE", "node")
        self.dir = tempfile.mkdtemp(prefix="converge-shop-")
        self.procs: list[Process] = []
        self.tokens = {name: secrets.token_hex(16) for name in
                       ("ORDERS_TOKEN", "INVENTORY_TOKEN", "PAYMENT_TOKEN", "OPERATOR_TOKEN")}
        self.push_secret = secrets.token_hex(16)
        self.payment_port = free_port()
        env = dict(os.environ)
        env.update(self.tokens)
        env["PAYMENT_PUSH_SECRET"] = self.push_secret
        self.env = env

    def tearDown(self) -> None:
        for p in self.procs:
            p.kill()
        if self._outcome_failed():
            for p in self.procs:
                print(f"--- {p.name} log ---\n{p.log()}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _outcome_failed(self) -> bool:
        result = getattr(self, "_outcome", None)
        errors = getattr(result, "errors", None) or getattr(getattr(result, "result", None),
                                                              "errors", [])
        failures = getattr(getattr(result, "result", None), "failures", [])
        return bool(errors) or bool(failures)

    # --- the processes ----------------------------------------------------------------------
    def config(self) -> str:
        """The example's converge.yaml with this test's paths and payment port."""
        with open(os.path.join(HERE, "converge.yaml")) as f:
            text = f.read()
        replacements = {
            "sqlite:var/orders.db": f"sqlite:{self.dir}/orders.db",
            "http://127.0.0.1:8091/push": f"http://127.0.0.1:{self.payment_port}/push",
            "[shop-order.yaml]": f"[{HERE}/shop-order.yaml]",
        }
        for old, new in replacements.items():
            self.assertIn(old, text)
            text = text.replace(old, new)
        path = os.path.join(self.dir, "converge.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_serve(self) -> str:
        serve = Process("converge", [self.binary, "serve", "--config", self.config(),
                                     "--listen", "127.0.0.1:0", "--data-dir",
                                     os.path.join(self.dir, "converge")], self.env, self.dir)
        self.procs.append(serve)
        m = serve.start(rb"listening on http://127\.0\.0\.1:(\d+)")
        return f"http://127.0.0.1:{int(m.group(1))}"

    def python_service(self, name: str, *args: str) -> Process:
        p = Process(name, [sys.executable, os.path.join(HERE, name, f"{name}.py"), *args],
                    self.env, self.dir)
        self.procs.append(p)
        return p

    # --- checks -----------------------------------------------------------------------------
    def orders(self, orders_url: str) -> dict[str, dict[str, Any]]:
        status, body = http("GET", f"{orders_url}/orders")
        self.assertEqual(status, 200, body)
        return {o["id"]: o for o in body["orders"]}

    def final_count(self, orders_url: str) -> int:
        return sum(1 for o in self.orders(orders_url).values()
                   if o["status"] in ("confirmed", "rejected"))

    def dead_letters(self, admin: Client, topic: str, group: str) -> list[dict[str, Any]]:
        return list(admin.dead_letters(topic, group, limit=1000)["dead_letters"])

    def test_shop(self) -> None:
        url = self.start_serve()
        admin = Client(url, token=self.tokens["OPERATOR_TOKEN"])
        sagas = Sagas(admin)
        payment = self.python_service("payment", "--converge", url, "--db",
                                      os.path.join(self.dir, "payment.db"), "--listen",
                                      f"127.0.0.1:{self.payment_port}")
        payment.start(rb"ready \d+")
        inv_env = dict(self.env, CONVERGE_URL=url, INITIAL_STOCK=json.dumps(STOCK),
                       INVENTORY_JOURNAL=os.path.join(self.dir, "inventory.journal"))
        inventory = Process("inventory", [self.node, self.inventory_js], inv_env, self.dir)
        self.procs.append(inventory)
        inventory.start(rb"ready")
        orders = self.python_service("orders", "--converge", url, "--db",
                                     os.path.join(self.dir, "orders.db"), "--listen",
                                     "127.0.0.1:0")
        orders_port = int(orders.start(rb"ready (\d+)").group(1))
        orders_url = f"http://127.0.0.1:{orders_port}"

        plan = plan_orders()
        n = len(plan)

        def place(items: list[dict[str, Any]]) -> None:
            for item in items:
                status, body = http("POST", f"{orders_url}/orders", item["order"])
                self.assertEqual(status, 201, body)

        # A third of the orders, then the inventory service dies in the middle of them.
        place(plan[: n // 3])
        wait_until(lambda: self.final_count(orders_url) >= 3, 60, "the first orders to finish")
        inventory.kill()
        place(plan[n // 3: 2 * n // 3])
        time.sleep(1.0)  # commands for the reserve step wait in the group meanwhile
        inventory.start(rb"ready")
        # Then the payment service (push: converge retries the refused connections).
        wait_until(lambda: self.final_count(orders_url) >= n // 2, 60, "half of the orders")
        payment.kill()
        place(plan[2 * n // 3:])
        time.sleep(1.0)
        payment.start(rb"ready \d+")

        # The outbox write is idempotent by order id; another order under a used id is refused.
        first = plan[0]["order"]
        status, body = http("POST", f"{orders_url}/orders", first)
        self.assertEqual(status, 200, body)
        status, body = http("POST", f"{orders_url}/orders", dict(first, qty=first["qty"] + 1))
        self.assertEqual((status, body["code"]), (409, "ALREADY_EXISTS"), body)
        status, body = http("POST", f"{orders_url}/orders", {"id": "x", "sku": "widget"})
        self.assertEqual((status, body["code"]), (400, "INVALID_ARGUMENT"), body)

        # A malformed "order placed" event from another producer: dead-lettered by the starter.
        poison = admin.publish("shop.orders", CloudEvent(
            type="shop.order.placed", source="/legacy-shop", id="legacy-1",
            data={"order": "o-legacy"}, extensions={"partitionkey": "legacy"}))

        # A push request without converge's signature charges nothing.
        forged = {"specversion": "1.0", "id": "forged/2/action/1", "source": "/converge/saga",
                  "type": "payment.charge", "sagaid": "o001", "sagastep": 2,
                  "sagakind": "action", "sagaattempt": 1, "sagareplyto": "saga.replies",
                  "data": {"id": "o001", "amount": 1, "card": "visa-4242"}}
        status, _ = http("POST", f"http://127.0.0.1:{self.payment_port}/push",
                         json.dumps(forged).encode(),
                         {"Content-Type": "application/cloudevents+json",
                          "Converge-Signature": f"t={int(time.time())},v1=00,v2=00"})
        self.assertEqual(status, 401)

        wait_until(lambda: self.final_count(orders_url) == n, 120, "every order to finish")

        # --- every order in its final state, and its saga --------------------------------------
        final = self.orders(orders_url)
        self.assertEqual(len(final), n)
        confirmed_qty: Counter[str] = Counter()
        confirmed: dict[str, set[str]] = {sku: set() for sku in STOCK}
        limited_confirmed = 0
        for item in plan:
            o = item["order"]
            got = final[o["id"]]
            info = sagas.describe(o["id"])
            steps = [s["state"] for s in info["steps"]]
            if item["kind"] == "limited":
                self.assertIn(got["status"], ("confirmed", "rejected"))
                if got["status"] == "confirmed":
                    limited_confirmed += 1
                else:
                    self.assertEqual(steps[:2], ["compensated", "failed"], info)
            else:
                self.assertEqual(got["status"], item["expect"], (o, info))
            if got["status"] == "confirmed":
                self.assertEqual(info["state"], "completed", info)
                self.assertEqual(steps, ["done"] * 4, info)
                confirmed_qty[o["sku"]] += o["qty"]
                confirmed[o["sku"]].add(o["id"])
            else:
                self.assertEqual(info["state"], "compensated", info)
            if item["kind"] == "declined":
                self.assertEqual(steps[:3], ["compensated", "compensated", "failed"], info)
            if item["kind"] == "sold-out":
                self.assertEqual(steps[:2], ["compensated", "failed"], info)
        self.assertEqual(limited_confirmed, STOCK["limited"])

        # --- stock: initial minus the confirmed orders, holding exactly their reservations ----
        stock = {d["key"]: d["value"] for d in
                 admin.transport.json_request("GET", "/v1/collections/stock/docs",
                                              retry_safe=True)["documents"]}
        self.assertEqual(set(stock), set(STOCK))
        for sku, initial in STOCK.items():
            self.assertEqual(stock[sku]["available"], initial - confirmed_qty[sku], sku)
            self.assertEqual(set(stock[sku]["reservations"]), confirmed[sku], sku)
        described = admin.transport.json_request("GET", "/v1/collections/stock", retry_safe=True)
        self.assertEqual(described["owner"], "inventory", described)
        # Only its owner writes it.
        orders_client = Client(url, token=self.tokens["ORDERS_TOKEN"], retries=0)
        with self.assertRaises(PermissionDeniedError):
            orders_client.transport.json_request("PUT", "/v1/collections/stock/docs/widget",
                                                 {"sku": "widget", "available": 1000,
                                                  "reservations": {}})

        # --- no effect twice ------------------------------------------------------------------
        all_confirmed = {i for ids in confirmed.values() for i in ids}
        pay = sqlite3.connect(os.path.join(self.dir, "payment.db"))
        charges = dict(pay.execute("SELECT order_id, amount FROM charges").fetchall())
        self.assertEqual(charges, {i["order"]["id"]: i["order"]["amount"] for i in plan
                                   if i["order"]["id"] in all_confirmed})
        stats = dict(pay.execute("SELECT name, n FROM push_stats").fetchall())
        self.assertEqual(stats.get("refused_signature"), 1, stats)
        self.assertNotIn("malformed", stats)
        self.assertGreaterEqual(stats.get("handled", 0), n - 3 - 3)  # every order past reserve
        pay.close()
        db = sqlite3.connect(os.path.join(self.dir, "orders.db"))
        inbox = [r[0] for r in db.execute(
            "SELECT event_id FROM converge_inbox WHERE consumer = 'orders-saga-starter'")]
        self.assertEqual(sorted(inbox), sorted(f"12:/shop/ordersorder-{i['order']['id']}"
                                               for i in plan))
        starts = [r[0] for r in db.execute("SELECT order_id FROM saga_starts")]
        self.assertEqual(sorted(starts), sorted(i["order"]["id"] for i in plan))
        # The outbox is drained: the relay published every row and deleted it.
        self.assertEqual(db.execute("SELECT count(*) FROM converge_outbox").fetchone()[0], 0)
        db.close()
        topic = admin.describe_topic("shop.orders")
        self.assertEqual(sum(p["end_offset"] - p["start_offset"]
                             for p in topic["partition_offsets"]), n + 1, topic)  # + poison

        # --- dead letters: only the malformed event ------------------------------------------
        dead = self.dead_letters(admin, "shop.orders", "orders-saga-starter")
        self.assertEqual([d["event"]["id"] for d in dead], [poison.id], dead)
        self.assertIn("not an order", dead[0]["last_error"] + dead[0]["reason"])
        for topic_name, group in (("shop.order-steps", "orders"),
                                  ("shop.inventory-steps", "inventory"),
                                  ("shop.payment-steps", "push-payment")):
            self.assertEqual(self.dead_letters(admin, topic_name, group), [], group)

        # A graceful stop of every service.
        for p in (orders, inventory, payment):
            self.assertEqual(p.terminate(), 0, p.name)


if __name__ == "__main__":
    unittest.main()
