"""Receiving push deliveries (docs/push.md): check that converge sent a request and read it.

A push subscription makes converge POST each event to a service's endpoint, signed with the
subscription's secret. :func:`read_push` verifies the signature (``v2``: the timestamp, the
``Content-Type`` and ``ce-*`` headers and the exact body) and returns the event with the
delivery's headers: the subscription, the attempt and the event's log position. Answer 2xx to
ack, another 4xx than 408/429 to dead-letter, anything else to have it retried. Works with any
HTTP server: pass the request's headers (name -> value, as received) and body bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

from .events import CloudEvent, _is_json_media_type, _is_text_media_type


class PushRequestError(ValueError):
    """The request is not a push delivery converge signed (``signature``: the check failed) or
    does not hold a readable event. Answer it with a 4xx: converge never sends such a one."""

    def __init__(self, message: str, *, signature: bool = False) -> None:
        super().__init__(message)
        self.signature = signature


@dataclass(frozen=True)
class PushDelivery:
    """One verified push request."""

    subscription: str
    #: 1 for the first delivery of the event (docs/push.md says when it starts again at 1).
    attempt: int
    #: The event's position in its topic's log (``Converge-Partition`` / ``Converge-Offset``;
    #: None from a server that does not send them). Not covered by the signature.
    partition: int | None
    offset: int | None
    event: CloudEvent


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def verify_push_signature(secret: bytes | str, headers: Mapping[str, str], body: bytes, *,
                          tolerance_s: int = 300, now: float | None = None) -> bool:
    """True if ``Converge-Signature`` holds a ``v2`` HMAC-SHA256 of this request under
    ``secret`` with a timestamp within ``tolerance_s`` of ``now`` (docs/push.md, "Verifying a
    request"). Compares in constant time."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    lower = _lower(headers)
    parts = dict(p.split("=", 1) for p in lower.get("converge-signature", "").split(",")
                 if "=" in p)
    t, sig = parts.get("t"), parts.get("v2")
    if t is None or sig is None or not t.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(t)) > tolerance_s:
        return False
    signed = "".join(name + ":" + value + "\n" for name, value in sorted(lower.items())
                     if name == "content-type" or name.startswith("ce-"))
    try:
        text = t.encode() + b"." + signed.encode("latin-1") + b"\n" + body
    except UnicodeEncodeError:
        return False  # header values are bytes on the wire: such a value was not received
    expected = hmac.new(key, text, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig)


def _int_header(lower: Mapping[str, str], name: str) -> int | None:
    value = lower.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise PushRequestError(f"header {name} is not a number: {value!r}")
    return int(value)


def _binary_event(lower: Mapping[str, str], body: bytes) -> CloudEvent:
    attrs: dict[str, Any] = {}
    for name, value in lower.items():
        if name.startswith("ce-"):
            attrs[name[3:]] = urllib.parse.unquote(value, errors="strict")
    content_type = lower.get("content-type")
    data: Any = None
    if body:
        if _is_json_media_type(content_type):
            data = json.loads(body)
        elif _is_text_media_type(content_type):
            data = body.decode("utf-8")
        else:
            data = body
    context = {"specversion", "id", "source", "type", "subject", "time", "dataschema"}
    return CloudEvent(type=attrs.get("type", ""), source=attrs.get("source", ""),
                      id=attrs.get("id", ""), data=data, subject=attrs.get("subject"),
                      time=attrs.get("time"), datacontenttype=content_type,
                      dataschema=attrs.get("dataschema"),
                      extensions={k: v for k, v in attrs.items() if k not in context},
                      specversion=attrs.get("specversion", "1.0"))


def read_push(secret: bytes | str, headers: Mapping[str, str], body: bytes, *,
              tolerance_s: int = 300) -> PushDelivery:
    """Verifies a push request and reads its event (structured or binary mode).

    Raises :class:`PushRequestError` (``signature=True`` when the signature check failed).
    In binary mode every extension is a string (the HTTP binding's rule), as converge sent it.
    """
    if not verify_push_signature(secret, headers, body, tolerance_s=tolerance_s):
        raise PushRequestError("the request does not carry a valid Converge-Signature",
                               signature=True)
    lower = _lower(headers)
    content_type = lower.get("content-type", "")
    try:
        if content_type.split(";", 1)[0].strip().lower() == "application/cloudevents+json":
            obj = json.loads(body)
            if not isinstance(obj, dict):
                raise PushRequestError("a structured-mode body must be a JSON object")
            if "data_base64" in obj and not isinstance(obj["data_base64"], str):
                raise PushRequestError("data_base64 must be a string")
            event = CloudEvent.from_dict(obj)
        else:
            event = _binary_event(lower, body)
    except ValueError as e:  # bad JSON, UTF-8, percent-encoding or base64
        if isinstance(e, PushRequestError):
            raise
        raise PushRequestError(f"the request holds no readable event: {e}") from e
    if not event.id or not event.source or not event.type:
        raise PushRequestError("the event lacks id, source or type")
    attempt = _int_header(lower, "converge-delivery-attempt")
    return PushDelivery(subscription=lower.get("converge-subscription", ""),
                        attempt=attempt if attempt is not None else 1,
                        partition=_int_header(lower, "converge-partition"),
                        offset=_int_header(lower, "converge-offset"), event=event)
