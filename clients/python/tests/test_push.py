"""Push deliveries read with read_push (structured and binary mode, signature, attempt, log
position) from a real `converge serve`; lease extension (extend_leases) and the topic's dedup
window, against the same server."""

from __future__ import annotations

import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from converge_client import (Client, CloudEvent, PushDelivery, PushRequestError, read_push,
                             verify_push_signature)
from converge_client.errors import ClientInputError

from serve import ServeProcess, wait_until

SECRET = "py-push-secret-0123456789"


class Endpoint:
    """An HTTP endpoint that reads every request with read_push; the first delivery of an
    event whose subject is "retry" is answered 500."""

    def __init__(self) -> None:
        self.got: list[tuple[str, PushDelivery]] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                status = 204
                try:
                    d = read_push(SECRET, headers, body)
                    with outer.lock:
                        outer.got.append((self.path, d))
                        outer.raw.append((headers, body))
                    if d.event.subject == "retry" and d.attempt == 1:
                        status = 500
                except PushRequestError as e:
                    with outer.lock:
                        outer.refused.append(str(e))
                    status = 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()


class PushAndLeasesTest(unittest.TestCase):
    def test_push_requests_are_verified_and_read_in_both_modes(self) -> None:
        endpoint = Endpoint()
        config = "subscriptions:\n"
        for mode in ("structured", "binary"):
            config += (f"  - {{name: py-{mode}, topic: pushed, endpoint: '{endpoint.url}/{mode}',"
                       f" mode: {mode}, secret: {SECRET}, initial_backoff_ms: 10,"
                       " max_backoff_ms: 50}\n")
        server = ServeProcess(config).start()
        client = Client(server.url)
        try:
            client.create_topic("pushed", partitions=2)
            events = [
                CloudEvent(type="t.json", source="/py/push", data={"n": 1, "s": "caf\u00e9"},
                           subject="a", extensions={"partitionkey": "k1", "prio": 3}),
                CloudEvent(type="t.bytes", source="/py/push", data=b"\x00\xff",
                           datacontenttype="application/octet-stream", subject="b",
                           extensions={"partitionkey": "k2"}),
                CloudEvent(type="t.text", source="/py/push", data="h\u00e9 \"x\"",
                           datacontenttype="text/plain", subject="retry",
                           extensions={"partitionkey": "k3"}),
            ]
            published = [client.publish("pushed", e) for e in events]
            # Each event acked once per mode (the retried one after a 500).
            wait_until(lambda: len({(p, d.event.id) for p, d in endpoint.got
                                    if not (d.event.subject == "retry" and d.attempt == 1)})
                       == 6, 30, "every event pushed in both modes")
            by_id = {e.id: (e, p) for e, p in zip(events, published)}
            for path, d in endpoint.got:
                mode = path.lstrip("/")
                sent, where = by_id[d.event.id]
                self.assertEqual(d.subscription, f"py-{mode}")
                self.assertEqual((d.partition, d.offset), (where.partition, where.offset))
                self.assertEqual((d.event.type, d.event.source, d.event.subject),
                                 (sent.type, sent.source, sent.subject))
                self.assertEqual(d.event.data, sent.data, mode)
                # Binary mode carries extensions as strings (the binding's rule).
                want_prio = 3 if mode == "structured" else "3"
                if "prio" in sent.extensions:
                    self.assertEqual(d.event.extensions["prio"], want_prio)
                self.assertEqual(d.event.partitionkey, sent.partitionkey)
                if sent.subject == "retry":
                    self.assertIn(d.attempt, (1, 2))
                else:
                    self.assertEqual(d.attempt, 1)
            self.assertEqual(endpoint.refused, [])
            # A changed header or body, a wrong secret, or a stale timestamp is refused.
            headers, body = endpoint.raw[0]
            self.assertTrue(verify_push_signature(SECRET, headers, body))
            self.assertFalse(verify_push_signature("another-secret-0123", headers, body))
            self.assertFalse(verify_push_signature(SECRET, headers, body + b" "))
            self.assertFalse(verify_push_signature(SECRET, headers, body, now=time.time() + 900))
            b_headers, b_body = next(raw for raw, (path, _) in zip(endpoint.raw, endpoint.got)
                                     if path == "/binary")
            self.assertIsInstance(read_push(SECRET, b_headers, b_body), PushDelivery)
            type_header = next(name for name in b_headers if name.lower() == "ce-type")
            forged = dict(b_headers)
            forged[type_header] = "t.forged"
            with self.assertRaises(PushRequestError) as e:
                read_push(SECRET, forged, b_body)
            self.assertTrue(e.exception.signature)
        finally:
            client.close()
            server.stop()
            endpoint.stop()

    def test_an_extended_lease_is_kept_and_an_expired_one_is_not_revived(self) -> None:
        server = ServeProcess("groups:\n  lease_ms: 1500\n").start()
        client = Client(server.url)
        try:
            client.create_topic("slow", dedup_window_ms=4321)
            self.assertEqual(client.describe_topic("slow")["dedup_window_ms"], 4321)
            for n in range(2):
                client.publish("slow", CloudEvent(type="t", source="/py/slow", id=f"e{n}",
                                                  data={"n": n}))
            start = time.monotonic()
            got = client.fetch("slow", "g", max_events=10, wait_ms=2000, consumer="w")
            self.assertEqual(len(got), 2)
            kept, dropped = sorted(got, key=lambda d: d.event.id if d.event else "")
            r = client.extend_leases("slow", "g", [kept], 8000, consumer="w")
            self.assertEqual((r.extended, r.lost), (1, []))
            self.assertGreater(r.expires_at_ms[0], kept.lease_expires_at_ms + 4000)
            again = []
            while time.monotonic() - start < 4.0:
                batch = client.fetch("slow", "g", max_events=10, wait_ms=500, consumer="w")
                if batch:
                    client.ack("slow", "g", batch, consumer="w")
                    again += batch
            self.assertEqual([(d.event.id if d.event else None, d.attempt) for d in again],
                             [("e1", 2)])
            r = client.extend_leases("slow", "g", [dropped, kept], 8000, consumer="w")
            self.assertEqual((r.extended, r.lost), (1, [0]))
            self.assertEqual(list(r.expires_at_ms), [1])
            acked = client.ack("slow", "g", [kept], consumer="w")
            self.assertEqual((acked.acked, acked.lost), (1, []))
            with self.assertRaises(ClientInputError):
                client.extend_leases("slow", "g", [kept], 0)
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    unittest.main()
