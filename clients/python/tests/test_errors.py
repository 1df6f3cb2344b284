"""Every error code the server documents maps to its own exception class, and the errors the
client can meet are raised as those classes against a real `converge serve`. Bad input to the
client API raises ClientInputError before anything is sent."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import unittest

import converge_client as cc
from converge_client import (ERROR_CLASSES, Client, CloudEvent, Consumer, Lease, Nack,
                             SagaParticipant, Sagas, StepFailed, Store, error_from_reply)
from converge_client import errors as E
from converge_client.saga import SagaCommand

from serve import ServeProcess, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAPI = os.path.join(HERE, "..", "..", "..", "docs", "api", "openapi.yaml")

ADMIN = "admin-token-0123456789"
LIMITED = "limited-token-0123456789"
CONFIG = f"""
auth:
  tokens:
    - service: admin
      token: {ADMIN}
      admin: true
      publish: ["*"]
      subscribe: ["*"]
    - service: limited
      token: {LIMITED}
      publish: ["open"]
      subscribe: ["open"]
auto_create_topics: true
limits:
  max_subscribers: 1
  max_batch_events: 5
  max_header_bytes: 8192
sagas:
  max_in_flight: 1
"""


def documented_codes() -> set[str]:
    """The `code` enum of the Error schema in docs/api/openapi.yaml."""
    with open(OPENAPI) as f:
        text = f.read()
    block = text[text.index("\n    Error:\n"):]
    block = block[block.index("enum:"):]
    codes = []
    for line in block.splitlines()[1:]:
        m = re.match(r"^\s+- ([A-Z_]+)\s*$", line)
        if not m:
            break
        codes.append(m.group(1))
    return set(codes)


class MappingTest(unittest.TestCase):
    def test_every_documented_code_has_its_own_class(self) -> None:
        codes = documented_codes()
        self.assertGreater(len(codes), 20)
        self.assertEqual(set(ERROR_CLASSES), codes)
        for code, cls in ERROR_CLASSES.items():
            self.assertEqual(cls.CODE, code)
            err = error_from_reply(400, json.dumps({"code": code, "message": "m"}).encode(), "2")
            self.assertIs(type(err), cls)
            self.assertEqual((err.code, err.message, err.status, err.retry_after),
                             (code, "m", 400, 2.0))
            self.assertIn(cls.__name__, cc.__all__ + E.__all__)

    def test_every_code_has_its_documented_status(self) -> None:
        self.assertEqual(set(E.HTTP_STATUS), documented_codes())

    def test_grouping(self) -> None:
        for code in ("TOO_MANY_REQUESTS", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
                     "DEADLINE_EXCEEDED", "TOKEN_NOT_APPLIED", "REPLICA_STALE"):
            self.assertTrue(issubclass(ERROR_CLASSES[code], E.RetryableError), code)
        self.assertTrue(issubclass(E.AbortedError, E.PreconditionFailedError))
        self.assertTrue(issubclass(E.SystemTopicError, E.PermissionDeniedError))
        self.assertTrue(issubclass(E.SchemaViolationError, E.BadRequestError))

    def test_unknown_codes_and_foreign_bodies(self) -> None:
        e = error_from_reply(503, b'{"code":"NEW_CODE","message":"x"}')
        self.assertIsInstance(e, E.RetryableError)
        self.assertEqual(e.code, "NEW_CODE")
        e = error_from_reply(502, b"<html>bad gateway</html>")
        self.assertIsInstance(e, E.UnknownApiError)
        self.assertEqual(e.code, "HTTP_502")


def raw_exchange(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


class LiveErrorsTest(unittest.TestCase):
    server: ServeProcess
    admin: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServeProcess(CONFIG).start()
        cls.admin = Client(cls.server.url, token=ADMIN)
        cls.limited = Client(cls.server.url, token=LIMITED)
        cls.admin.create_topic("open")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.admin.close()
        cls.limited.close()
        cls.server.stop()

    def raw(self, method: str, target: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> E.ApiError:
        res = self.admin.transport.send_once(method, target, body, headers or {})
        self.assertGreaterEqual(res.status, 400, res.body)
        return error_from_reply(res.status, res.body, res.headers.get("retry-after"))

    def test_auth_errors(self) -> None:
        stranger = Client(self.server.url, token="wrong-token-0123456789")
        with self.assertRaises(E.UnauthenticatedError) as cm:
            stranger.list_topics()
        stranger.close()
        self.assertEqual(cm.exception.status, 401)
        with self.assertRaises(E.PermissionDeniedError) as pd:
            self.limited.publish("closed", CloudEvent(type="t", source="/s"))
        self.assertEqual(pd.exception.code, "PERMISSION_DENIED")
        with self.assertRaises(E.SystemTopicError):
            self.admin.publish("store-changes", CloudEvent(type="t", source="/s"))

    def test_not_found_conflict_and_method(self) -> None:
        with self.assertRaises(E.NotFoundError):
            self.admin.describe_topic("nope")
        self.admin.create_topic("twice")
        with self.assertRaises(E.AlreadyExistsError) as cm:
            self.admin.create_topic("twice")
        self.assertEqual(cm.exception.status, 409)
        with self.assertRaises(E.MethodNotAllowedError):
            self.admin.transport.request("DELETE", "/v1/topics")

    def test_bad_requests(self) -> None:
        self.assertIsInstance(self.raw("POST", "/v1/topics", b"{",
                                       {"Content-Type": "application/json"}), E.InvalidJsonError)
        self.assertIsInstance(self.raw("GET", "/v1/topics?bogus=1"), E.InvalidArgumentError)
        bad_event = json.dumps({"specversion": "1.0", "id": "1", "source": "/s"}).encode()
        self.assertIsInstance(
            self.raw("POST", "/v1/topics/open/events", bad_event,
                     {"Content-Type": "application/cloudevents+json"}), E.InvalidEventError)
        self.assertIsInstance(
            self.raw("POST", "/v1/topics/open/events", b"{}",
                     {"Content-Type": "application/json", "Content-Encoding": "gzip",
                      "ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}),
            E.UnsupportedMediaTypeError)
        with self.assertRaises(E.PayloadTooLargeError):
            self.admin.publish_batch("open", [CloudEvent(type="t", source="/s")
                                              for _ in range(6)])
        with self.assertRaises(E.HeadersTooLargeError):
            self.admin.transport.request("GET", "/v1/topics", headers={"X-Big": "x" * 10000})

    def test_raw_http_errors(self) -> None:
        port = self.server.port
        status, body = raw_exchange(port, b"POST /v1/topics HTTP/1.1\r\nHost: x\r\n"
                                          b"Transfer-Encoding: identity\r\n\r\n")
        self.assertIsInstance(error_from_reply(status, body), E.MalformedHttpError)
        status, body = raw_exchange(port, b"POST /v1/topics HTTP/1.1\r\nHost: x\r\n"
                                          b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        self.assertIsInstance(error_from_reply(status, body), E.NotImplementedByServerError)

    def test_store_precondition(self) -> None:
        coll = Store(self.admin).collection("errs")
        coll.create()
        coll.put("k", 1)
        with self.assertRaises(E.AbortedError) as cm:
            coll.put("k", 2, if_match='"424242"')
        self.assertEqual(cm.exception.status, 412)

    def test_schema_errors(self) -> None:
        t = self.admin.transport
        with self.assertRaises(E.InvalidSchemaError):
            t.json_request("POST", "/v1/schemas/err.type/versions", {"schema": {"type": 5}})
        t.json_request("POST", "/v1/schemas/err.type/versions",
                       {"schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                   "required": ["a"]}}, ok=(200, 201))
        with self.assertRaises(E.SchemaIncompatibleError) as inc:
            t.json_request("POST", "/v1/schemas/err.type/versions",
                           {"schema": {"type": "object",
                                       "properties": {"a": {"type": "integer"}},
                                       "required": ["a", "b"]}})
        self.assertTrue(inc.exception.findings)
        t.json_request("PUT", "/v1/topics/validated/schema", {"type": "err.type"})
        with self.assertRaises(E.SchemaViolationError) as sv:
            self.admin.publish_batch("validated", [
                CloudEvent(type="err.type", source="/s", data={"a": "ok"}),
                CloudEvent(type="err.type", source="/s", data={"a": 7})])
        self.assertEqual(sv.exception.event_index, 1)
        self.assertEqual(sv.exception.path, "/a")

    def test_too_many_subscribers(self) -> None:
        with self.admin.stream("open", "g1"):
            with self.assertRaises(E.TooManyRequestsError) as cm:
                self.admin.stream("open", "g2")
            self.assertEqual(cm.exception.status, 429)
            self.assertIsNotNone(cm.exception.retry_after)

    def test_saga_conflict_and_exhaustion(self) -> None:
        sagas = Sagas(self.admin)
        sagas.register_definition({"name": "err-saga", "steps": [
            {"name": "only", "participant": "err-part", "action": "do"}]})
        saga_id = sagas.start("err-saga", {"x": 1})
        with self.assertRaises(E.ResourceExhaustedError):  # sagas.max_in_flight: 1
            sagas.start("err-saga", {"x": 2})
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        p = SagaParticipant(self.admin, "err-part", conn, wait_ms=200)
        p.on_action("do", lambda c, cmd: "done")
        p.start()
        try:
            sagas.wait(saga_id, timeout=60)
        finally:
            p.stop(30)
        with self.assertRaises(E.FailedPreconditionError) as cm:
            sagas.cancel(saga_id)
        self.assertEqual(cm.exception.status, 409)
        with self.assertRaises(E.ConflictError):
            sagas.register_definition({"name": "err-saga", "steps": [
                {"name": "other", "participant": "err-part", "action": "do2"}]})


class BadInputTest(unittest.TestCase):
    """Mistakes in calls to the library: ClientInputError (a ValueError), nothing sent."""

    def setUp(self) -> None:
        # Nothing listens here: a call that got past the checks would raise TransportError.
        self.client = Client("http://127.0.0.1:9", retries=0, timeout=1)

    def test_client_options(self) -> None:
        for url in ("ftp://x", "127.0.0.1:8080", "http://h:1/path", "http://h:1/?q"):
            with self.assertRaises(E.ClientInputError, msg=url):
                Client(url)
        with self.assertRaises(ValueError):
            Client(timeout=0)
        with self.assertRaises(ValueError):
            Client(retries=-1)

    def test_names(self) -> None:
        ev = CloudEvent(type="t", source="/s")
        for topic in ("", "_dlq.x", ".x", "a b", "x" * 201, None):
            with self.assertRaisesRegex(E.ClientInputError, "topic name", msg=repr(topic)):
                self.client.publish(topic, ev)  # type: ignore[arg-type]
        with self.assertRaisesRegex(E.ClientInputError, "group name"):
            self.client.fetch("t", "bad.group")
        with self.assertRaisesRegex(E.ClientInputError, "consumer name"):
            self.client.fetch("t", "g", consumer="a b")

    def test_events(self) -> None:
        bad = [
            CloudEvent(type="", source="/s"),
            CloudEvent(type="t", source=""),
            CloudEvent(type="t", source="/s", id=""),
            CloudEvent(type="t", source="/s", specversion="0.3"),
            CloudEvent(type="t", source="/s", extensions={"Upper": "x"}),
            CloudEvent(type="t", source="/s", extensions={"waytoolongextensionname": "x"}),
            CloudEvent(type="t", source="/s", extensions={"n": 2**40}),
            CloudEvent(type="t", source="/s", extensions={"f": 1.5}),  # type: ignore[dict-item]
            CloudEvent(type="t", source="/s", extensions={"data": "x"}),
            CloudEvent(type="t", source="/s", subject="x" * 20000),
            CloudEvent(type="t", source="/s", data={1, 2}),
            CloudEvent(type="t", source="/s", data=float("nan")),
            CloudEvent(type="t", source="/s", data={"a": 1}, datacontenttype="image/png"),
        ]
        for ev in bad:
            with self.assertRaises(E.ClientInputError, msg=repr(ev)):
                self.client.publish("t", ev)
        with self.assertRaises(E.ClientInputError):
            self.client.publish("t", {"type": "t"})  # type: ignore[arg-type]
        with self.assertRaisesRegex(E.ClientInputError, r"event\[1\]: data is not JSON"):
            self.client.publish_batch("t", [CloudEvent(type="t", source="/s", data=1),
                                            CloudEvent(type="t", source="/s", data={1, 2})])
        with self.assertRaises(E.ClientInputError):
            self.client.publish_batch("t", [])
        with self.assertRaises(E.ClientInputError):
            self.client.publish_batch("t", CloudEvent(type="t", source="/s"))  # type: ignore[arg-type]

    def test_numbers_and_leases(self) -> None:
        with self.assertRaisesRegex(E.ClientInputError, "max_events"):
            self.client.fetch("t", "g", max_events=0)
        with self.assertRaisesRegex(E.ClientInputError, "wait_ms"):
            self.client.fetch("t", "g", wait_ms=True)  # type: ignore[arg-type]
        with self.assertRaisesRegex(E.ClientInputError, "partitions"):
            self.client.create_topic("t", partitions=2000)
        with self.assertRaisesRegex(E.ClientInputError, "durability"):
            self.client.create_topic("t", durability="sometimes")
        with self.assertRaises(E.ClientInputError):
            self.client.ack("t", "g", [{"partition": 0}])  # type: ignore[list-item]
        with self.assertRaisesRegex(E.ClientInputError, "delay_ms"):
            self.client.nack("t", "g", [Nack(Lease(0, 0, "1"), delay_ms=-5)])

    def test_helpers(self) -> None:
        with self.assertRaises(E.ClientInputError):
            Consumer(self.client, "t", "g", "not callable")  # type: ignore[arg-type]
        with self.assertRaises(E.ClientInputError):
            Consumer(self.client, "t", "g", lambda d: None, mode="push")  # type: ignore[arg-type]
        with self.assertRaises(E.ClientInputError):
            Consumer(self.client, "t", "g", lambda d: None, workers=0)
        with self.assertRaises(E.ClientInputError):
            SagaCommand.from_event(CloudEvent(type="t", source="/s"))
        conn = sqlite3.connect(":memory:", isolation_level=None)
        p = SagaParticipant(self.client, "t", conn)
        with self.assertRaises(E.ClientInputError):
            p.on_action("", lambda c, cmd: None)
        with self.assertRaises(E.ClientInputError):
            Sagas(self.client).register_definition("   ")
        with self.assertRaisesRegex(E.ClientInputError, "saga failure code"):
            StepFailed("no", code="NOPE")

    def test_transport_errors_are_typed(self) -> None:
        with self.assertRaises(E.TransportError):
            self.client.list_topics()


if __name__ == "__main__":
    unittest.main()
