"""Retries, against a scripted HTTP server: a publish (retry-safe: the server deduplicates by
(source, id)) is sent again after 503/429 and a lost connection, with the same event id; a call
that is not retry-safe is not."""

from __future__ import annotations

import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from converge_client import Backoff, Client, CloudEvent, Sagas
from converge_client.errors import TransportError, UnavailableError


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = script  # per request: "503", "429", "drop" or "ok"
        self.bodies: list[Any] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Scripted
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.bodies.append(json.loads(body) if body else None)
            step = self.server.script.pop(0) if self.server.script else "ok"
        if step == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if step in ("503", "429"):
            out = json.dumps({"code": "UNAVAILABLE" if step == "503" else "TOO_MANY_REQUESTS",
                              "message": "later"}).encode()
            self.send_response(int(step))
            self.send_header("Retry-After", "0")
        else:
            out = json.dumps({"results": [{"id": "x", "partition": 0, "offset": 5,
                                           "duplicate": False}], "id": "s"}).encode()
            self.send_response(201 if self.path == "/v1/sagas" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = _handle
    do_GET = _handle


class RetryTest(unittest.TestCase):
    def serve(self, script: list[str]) -> Scripted:
        srv = Scripted(script)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return srv

    def client(self, srv: Scripted, retries: int = 5) -> Client:
        c = Client(f"http://127.0.0.1:{srv.server_address[1]}", retries=retries,
                   backoff=Backoff(0.001, 0.01), timeout=5)
        self.addCleanup(c.close)
        return c

    def test_publish_is_retried_with_the_same_event(self) -> None:
        srv = self.serve(["503", "429", "drop", "ok"])
        e = CloudEvent(type="t", source="/s", data=1)
        r = self.client(srv).publish("t", e)
        self.assertEqual(r.offset, 5)
        self.assertEqual(len(srv.bodies), 4)
        self.assertEqual({b["id"] for b in srv.bodies}, {e.id})

    def test_retries_are_bounded(self) -> None:
        srv = self.serve(["503"] * 10)
        with self.assertRaises(UnavailableError):
            self.client(srv, retries=2).publish("t", CloudEvent(type="t", source="/s"))
        self.assertEqual(len(srv.bodies), 3)

    def test_a_call_that_is_not_retry_safe_is_sent_once(self) -> None:
        srv = self.serve(["drop", "ok"])
        with self.assertRaises(TransportError):
            Sagas(self.client(srv)).start("d", {"x": 1})  # no id: a retry could start two
        self.assertEqual(len(srv.bodies), 1)
        srv.script[:] = ["drop", "ok"]
        self.assertEqual(Sagas(self.client(srv)).start("d", {"x": 1}, id="s"), "s")
        self.assertEqual(len(srv.bodies), 3)


if __name__ == "__main__":
    unittest.main()
