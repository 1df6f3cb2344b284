"""The client of `converge serve`'s HTTP API: topics, publish, consumer groups, dead letters."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from ._http import Backoff, Response, Transport, quote_segment
from .errors import (HTTP_STATUS, ClientInputError, NotFoundError, TransportError,
                     error_from_reply)
from .events import CloudEvent, binary_mode_headers, check_json_data

_TOPIC = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9._-]{0,199}$")
_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONSUMER = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise ClientInputError(f"topic name {topic!r} must be 1..200 characters of "
                               "[A-Za-z0-9._-], not starting with '.' or '_'")
    return topic


def check_group(group: str) -> str:
    if not isinstance(group, str) or not _GROUP.match(group):
        raise ClientInputError(f"group name {group!r} must be 1..64 characters of [A-Za-z0-9_-]")
    return group


def check_consumer(consumer: str) -> str:
    if not isinstance(consumer, str) or not _CONSUMER.match(consumer):
        raise ClientInputError(f"consumer name {consumer!r} must be 1..128 characters of "
                               "[A-Za-z0-9._:@-]")
    return consumer


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientInputError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ClientInputError(f"{name} must be {bound}, got {value}")
    return value


@dataclass(frozen=True)
class PublishResult:
    """Where an event went; ``duplicate``: its (source, id) was already published (a retry)."""

    id: str
    partition: int
    offset: int
    duplicate: bool


@dataclass(frozen=True)
class Lease:
    partition: int
    offset: int
    lease_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "lease_id": self.lease_id}


@dataclass(frozen=True)
class Delivery:
    """A leased event: ack it when handled, nack it to retry or dead-letter it."""

    partition: int
    offset: int
    lease_id: str
    attempt: int
    lease_expires_at_ms: int
    event: CloudEvent | None
    error: str | None = None

    @property
    def lease(self) -> Lease:
        return Lease(self.partition, self.offset, self.lease_id)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Delivery":
        ev = d.get("event")
        return cls(partition=int(d["partition"]), offset=int(d["offset"]),
                   lease_id=str(d["lease_id"]), attempt=int(d.get("attempt", 1)),
                   lease_expires_at_ms=int(d.get("lease_expires_at_ms", 0)),
                   event=CloudEvent.from_dict(ev) if isinstance(ev, Mapping) else None,
                   error=d.get("error"))


@dataclass(frozen=True)
class Nack:
    """A nack: redeliver after ``delay_ms`` (0: at once), or dead-letter now (``permanent``)."""

    lease: Lease
    delay_ms: int = 0
    permanent: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.lease.to_dict()
        if self.delay_ms:
            out["delay_ms"] = self.delay_ms
        if self.permanent:
            out["permanent"] = True
        if self.reason is not None:
            out["reason"] = self.reason[:4096]
        return out


@dataclass(frozen=True)
class AckResult:
    acked: int
    lost: list[int]


@dataclass(frozen=True)
class ExtendResult:
    """``extended`` leases run until their ``expires_at_ms`` (by request index); ``lost`` lists
    the indexes of leases no longer held (acked, nacked, expired or redelivered): not revived."""

    extended: int
    lost: list[int]
    expires_at_ms: dict[int, int]


@dataclass(frozen=True)
class NackResult:
    nacked: int
    lost: list[int]
    failed: list[dict[str, Any]]


class DeliveryStream:
    """A Server-Sent Events subscription (``GET .../stream``): iterate for deliveries.

    Deliveries are leased like fetched ones (ack them) unless ``auto_ack``. ``close()`` from
    any thread ends the iteration; the server then redelivers what was not acked.
    """

    def __init__(self, transport: Transport, target: str) -> None:
        self._transport = transport
        self._target = target
        self._closed = threading.Event()
        # Heartbeats come every limits.stream_heartbeat_ms (15 s by default): a read timeout
        # well above it notices a dead connection.
        self._conn = transport.new_connection(timeout_s=max(transport.timeout_s, 60.0))
        headers = transport.base_headers()
        headers["Accept"] = "text/event-stream"
        try:
            self._conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                self._conn.putheader(k, v)
            self._conn.endheaders()
            # Kept for close(): http.client hands a response without a length (this stream)
            # the socket and forgets it on the connection.
            self._sock = self._conn.sock
            self._resp = self._conn.getresponse()
        except (OSError, Exception) as e:  # noqa: BLE001 - every connection failure
            self._conn.close()
            raise TransportError(f"GET {target}: {e}", e) from e
        if self._resp.status != 200:
            body = self._resp.read()
            self._conn.close()
            raise error_from_reply(self._resp.status, body, self._resp.getheader("Retry-After"))

    def __iter__(self) -> Iterator[Delivery]:
        event_name = "message"
        data: list[str] = []
        try:
            while not self._closed.is_set():
                try:
                    raw = self._resp.fp.readline() if self._resp.fp else b""
                except (OSError, ValueError, AttributeError) as e:
                    if self._closed.is_set():
                        return
                    raise TransportError(f"stream {self._target}: {e}", e) from e
                if not raw:
                    if self._closed.is_set():
                        return
                    raise TransportError(f"stream {self._target}: the server ended the stream")
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        payload = "\n".join(data)
                        if event_name == "delivery":
                            yield Delivery.from_dict(json.loads(payload))
                        elif event_name == "error":
                            err = json.loads(payload)
                            code = err.get("code") if isinstance(err, dict) else None
                            status = HTTP_STATUS.get(code, 500) if isinstance(code, str) else 500
                            raise error_from_reply(status, payload.encode("utf-8"))
                    event_name, data = "message", []
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "event":
                    event_name = value
                elif name == "data":
                    data.append(value)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on the stream
            except OSError:
                pass
        self._conn.close()
        resp = getattr(self, "_resp", None)
        if resp is not None:
            resp.close()

    def __enter__(self) -> "DeliveryStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A client of one `converge serve`.

    Thread-safe: each thread uses its own kept-alive connection. ``retries`` bounds how often a
    retry-safe call (publishes, which the server deduplicates by (source, id); reads) is sent
    again after a lost connection, 429 or 503.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080", *, token: str | None = None,
                 timeout: float = 30.0, retries: int = 5, backoff: Backoff | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.transport = Transport(base_url, token, timeout, retries, backoff or Backoff(),
                                   ssl_context)

    def close(self) -> None:
        """Closes the calling thread's connection."""
        self.transport.close()

    # --- operations ---------------------------------------------------------------------
    def healthz(self) -> bool:
        return self.transport.request("GET", "/healthz", retry_safe=True).status == 200

    def readyz(self) -> Any:
        return self.transport.json_request("GET", "/readyz", retry_safe=True)

    # --- topics -------------------------------------------------------------------------
    def list_topics(self) -> list[dict[str, Any]]:
        return list(self.transport.json_request("GET", "/v1/topics", retry_safe=True)["topics"])

    def create_topic(self, name: str, *, partitions: int | None = None,
                     durability: str | None = None, retention_max_bytes: int | None = None,
                     retention_max_age_ms: int | None = None, sync_interval_ms: int | None = None,
                     dedup_window_ms: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": check_topic(name)}
        if partitions is not None:
            body["partitions"] = _check_int("partitions", partitions, 1, 1024)
        if durability is not None:
            if durability not in ("fsync", "interval", "none"):
                raise ClientInputError("durability must be 'fsync', 'interval' or 'none'")
            body["durability"] = durability
        for key, value in (("retention_max_bytes", retention_max_bytes),
                           ("retention_max_age_ms", retention_max_age_ms),
                           ("dedup_window_ms", dedup_window_ms)):
            if value is not None:
                body[key] = _check_int(key, value, 0)
        if sync_interval_ms is not None:
            body["sync_interval_ms"] = _check_int("sync_interval_ms", sync_interval_ms, 1)
        return dict(self.transport.json_request("POST", "/v1/topics", body, ok=(201,)))

    def describe_topic(self, topic: str) -> dict[str, Any]:
        return dict(self.transport.json_request(
            "GET", f"/v1/topics/{quote_segment(check_topic(topic))}", retry_safe=True))

    # --- publish ------------------------------------------------------------------------
    def _events_target(self, topic: str) -> str:
        return f"/v1/topics/{quote_segment(check_topic(topic))}/events"

    @staticmethod
    def _results(res: Response) -> list[PublishResult]:
        return [PublishResult(str(r["id"]), int(r["partition"]), int(r["offset"]),
                              bool(r["duplicate"])) for r in res.json()["results"]]

    @staticmethod
    def _check_event(event: CloudEvent, check_data: bool = True) -> None:
        if not isinstance(event, CloudEvent):
            raise ClientInputError(f"expected a CloudEvent, got {type(event).__name__}")
        event.validate(check_data)

    @staticmethod
    def _encode_json(payload: Any, events: Sequence[CloudEvent]) -> bytes:
        """The request body; data that does not serialize names its event."""
        try:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            for i, e in enumerate(events):
                try:
                    check_json_data(e.data)
                except ClientInputError as err:
                    raise ClientInputError(f"event[{i}]: {err}") from None
            raise

    def publish(self, topic: str, event: CloudEvent) -> PublishResult:
        """Publishes one event in structured mode (``application/cloudevents+json``).

        Retried on a lost connection, 429 and 503: the server stores an event once per
        (source, id) within the topic's dedup window, so a retry never duplicates it.
        """
        self._check_event(event, check_data=False)
        body = self._encode_json(event.to_dict(), [event])
        res = self.transport.request("POST", self._events_target(topic), body=body,
                                     headers={"Content-Type": "application/cloudevents+json"},
                                     retry_safe=True)
        return self._results(res)[0]

    def publish_batch(self, topic: str, events: Sequence[CloudEvent]) -> list[PublishResult]:
        """Publishes events in batched mode, all or nothing, in order per partition key."""
        if isinstance(events, CloudEvent) or not isinstance(events, Sequence):
            raise ClientInputError("publish_batch takes a sequence of CloudEvents")
        if not events:
            raise ClientInputError("publish_batch needs at least one event")
        for e in events:
            self._check_event(e, check_data=False)
        body = self._encode_json([e.to_dict() for e in events], events)
        res = self.transport.request(
            "POST", self._events_target(topic), body=body,
            headers={"Content-Type": "application/cloudevents-batch+json"}, retry_safe=True)
        return self._results(res)

    def publish_binary(self, topic: str, event: CloudEvent) -> PublishResult:
        """Publishes one event in binary mode: attributes in ``ce-*`` headers, data as the body.

        Every extension travels as a string in this mode (the binding's rule).
        """
        self._check_event(event, check_data=False)
        body = event.checked_data_bytes()
        res = self.transport.request("POST", self._events_target(topic),
                                     body=body, headers=binary_mode_headers(event),
                                     retry_safe=True)
        return self._results(res)[0]

    # --- consumer groups ------------------------------------------------------------------
    def _group_target(self, topic: str, group: str, action: str) -> str:
        return (f"/v1/topics/{quote_segment(check_topic(topic))}/groups/"
                f"{quote_segment(check_group(group))}/{action}")

    def create_group(self, topic: str, name: str, *, lease_ms: int | None = None,
                     max_deliveries: int | None = None, max_in_flight: int | None = None,
                     start: str | None = None,
                     session_timeout_ms: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": check_group(name)}
        if lease_ms is not None:
            body["lease_ms"] = _check_int("lease_ms", lease_ms, 1)
        if max_deliveries is not None:
            body["max_deliveries"] = _check_int("max_deliveries", max_deliveries, 1, 10000)
        if max_in_flight is not None:
            body["max_in_flight"] = _check_int("max_in_flight", max_in_flight, 1, 100000)
        if start is not None:
            if start not in ("earliest", "latest"):
                raise ClientInputError("start must be 'earliest' or 'latest'")
            body["start"] = start
        if session_timeout_ms is not None:
            body["session_timeout_ms"] = _check_int("session_timeout_ms", session_timeout_ms,
                                                    100, 86400000)
        return dict(self.transport.json_request(
            "POST", f"/v1/topics/{quote_segment(check_topic(topic))}/groups", body, ok=(201,)))

    def fetch(self, topic: str, group: str, *, max_events: int = 100, wait_ms: int = 0,
              consumer: str | None = None, max_bytes: int | None = None) -> list[Delivery]:
        """Leases up to ``max_events`` events (long-polls up to ``wait_ms``)."""
        body: dict[str, Any] = {"max_events": _check_int("max_events", max_events, 1),
                                "wait_ms": _check_int("wait_ms", wait_ms, 0)}
        if consumer is not None:
            body["consumer"] = check_consumer(consumer)
        if max_bytes is not None:
            body["max_bytes"] = _check_int("max_bytes", max_bytes, 1)
        target = self._group_target(topic, group, "fetch")
        out = self.transport.json_request("POST", target, body)
        return [Delivery.from_dict(d) for d in out["deliveries"]]

    @staticmethod
    def _leases(leases: Sequence[Lease | Delivery]) -> list[dict[str, Any]]:
        out = []
        for item in leases:
            if isinstance(item, Delivery):
                item = item.lease
            if not isinstance(item, Lease):
                raise ClientInputError(f"expected a Lease or Delivery, got {type(item).__name__}")
            out.append(item.to_dict())
        return out

    def ack(self, topic: str, group: str, leases: Sequence[Lease | Delivery], *,
            consumer: str | None = None) -> AckResult:
        """Acknowledges leases; ``lost`` lists those that had expired (not acked)."""
        body: dict[str, Any] = {"acks": self._leases(leases)}
        if consumer is not None:
            body["consumer"] = check_consumer(consumer)
        # Acking a lease twice acks it once (the second is reported lost), so a retry is safe.
        out = self.transport.json_request("POST", self._group_target(topic, group, "ack"), body,
                                          retry_safe=True)
        return AckResult(int(out["acked"]), [int(i) for i in out.get("lost", [])])

    def extend_leases(self, topic: str, group: str, leases: Sequence[Lease | Delivery],
                      lease_ms: int, *, consumer: str | None = None) -> ExtendResult:
        """Keeps leased events for ``lease_ms`` from now (a handler slower than the group's
        lease): they are not redelivered meanwhile. Call it before the leases expire."""
        body: dict[str, Any] = {"leases": self._leases(leases),
                                "lease_ms": _check_int("lease_ms", lease_ms, 1)}
        if consumer is not None:
            body["consumer"] = check_consumer(consumer)
        # Extending again is harmless, so a retry is safe.
        out = self.transport.json_request("POST", self._group_target(topic, group, "extend"),
                                          body, retry_safe=True)
        lost = [int(i) for i in out.get("lost", [])]
        expires: dict[int, int] = {}
        extended = iter(out.get("leases", []))
        for i in range(len(body["leases"])):
            if i not in lost:
                expires[i] = int(next(extended)["lease_expires_at_ms"])
        return ExtendResult(int(out["extended"]), lost, expires)

    def nack(self, topic: str, group: str, nacks: Sequence[Nack], *,
             consumer: str | None = None) -> NackResult:
        items = []
        for n in nacks:
            if not isinstance(n, Nack):
                raise ClientInputError(f"expected a Nack, got {type(n).__name__}")
            _check_int("delay_ms", n.delay_ms, 0)
            items.append(n.to_dict())
        body: dict[str, Any] = {"nacks": items}
        if consumer is not None:
            body["consumer"] = check_consumer(consumer)
        out = self.transport.json_request("POST", self._group_target(topic, group, "nack"), body,
                                          retry_safe=True)
        return NackResult(int(out["nacked"]), [int(i) for i in out.get("lost", [])],
                          list(out.get("failed", [])))

    def leave(self, topic: str, group: str, consumer: str = "default") -> bool:
        """Leaves the group at once: unacked leases are redelivered without using an attempt."""
        out = self.transport.json_request("POST", self._group_target(topic, group, "leave"),
                                          {"consumer": check_consumer(consumer)},
                                          retry_safe=True)
        return bool(out["left"])

    def stream(self, topic: str, group: str, *, consumer: str | None = None,
               max_events: int | None = None, auto_ack: bool = False) -> DeliveryStream:
        """Opens a Server-Sent Events subscription of the group."""
        query: dict[str, str] = {}
        if consumer is not None:
            query["consumer"] = check_consumer(consumer)
        if max_events is not None:
            query["max_events"] = str(_check_int("max_events", max_events, 1))
        if auto_ack:
            query["auto_ack"] = "true"
        target = self._group_target(topic, group, "stream")
        if query:
            target += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return DeliveryStream(self.transport, target)

    def describe_group(self, topic: str, group: str) -> dict[str, Any]:
        for g in self.describe_topic(topic).get("groups", []):
            if g.get("name") == group:
                return dict(g)
        raise NotFoundError("NOT_FOUND", f"topic {topic!r} has no group {group!r}", 404)

    # --- dead letters -----------------------------------------------------------------------
    def dead_letters(self, topic: str, group: str, *, from_offset: int = 0,
                     limit: int = 100) -> dict[str, Any]:
        q = urllib.parse.urlencode({"from_offset": _check_int("from_offset", from_offset, 0),
                                    "limit": _check_int("limit", limit, 1)})
        return dict(self.transport.json_request(
            "GET", self._group_target(topic, group, "dead-letters") + "?" + q, retry_safe=True))

    def replay_dead_letters(self, topic: str, group: str, *, from_offset: int | None = None,
                            to_offset: int | None = None, max_events: int | None = None,
                            target_topic: str | None = None,
                            include_replayed: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if from_offset is not None:
            body["from_offset"] = _check_int("from_offset", from_offset, 0)
        if to_offset is not None:
            body["to_offset"] = _check_int("to_offset", to_offset, 0)
        if max_events is not None:
            body["max_events"] = _check_int("max_events", max_events, 1)
        if target_topic is not None:
            body["target_topic"] = check_topic(target_topic)
        if include_replayed:
            body["include_replayed"] = True
        # A retried replay does not duplicate events (the server counts them deduplicated).
        return dict(self.transport.json_request(
            "POST", self._group_target(topic, group, "dead-letters/replay"), body,
            retry_safe=True))
