"""CloudEvents 1.0 as converge reads and writes them (docs/api/openapi.yaml, ``CloudEvent``)."""

from __future__ import annotations

import base64
import json
import os
import re
import time as _time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from .errors import ClientInputError

#: An extension value: a string, a 32-bit integer or a boolean (CloudEvents type system).
ExtensionValue = Union[str, int, bool]

#: Every context attribute and extension value is at most this many bytes (the server's
#: ``Event::kMaxAttributeBytes``).
MAX_ATTRIBUTE_BYTES = 16384

_CONTEXT = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype",
            "dataschema")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_RESERVED = set(_CONTEXT) | {"data", "data_base64"}


def new_event_id() -> str:
    """A UUIDv7 (time-ordered, random): what converge's own writers use for event ids."""
    ms = int(_time.time() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0x0FFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def event_identity(source: str, event_id: str) -> str:
    """The event's identity ``<byte length of source>:<source><id>`` (docs/formats/outbox.md).

    The log deduplicates publishes by it, and the inbox records it.
    """
    return f"{len(source.encode('utf-8'))}:{source}{event_id}"


#: Strings up to this many characters are within MAX_ATTRIBUTE_BYTES whatever they hold.
_CERTAINLY_SHORT = MAX_ATTRIBUTE_BYTES // 4


def _too_long(value: str) -> bool:
    # A UTF-8 character is at most 4 bytes: most values need no encoding to be checked.
    return len(value) * 4 > MAX_ATTRIBUTE_BYTES and len(value.encode("utf-8")) > MAX_ATTRIBUTE_BYTES


def check_json_data(data: Any) -> None:
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ClientInputError(f"data is not JSON-serializable: {e}") from None


def _is_json_media_type(media_type: str | None) -> bool:
    if media_type is None:
        return True
    base = media_type.split(";", 1)[0].strip().lower()
    return base.endswith("/json") or base.endswith("+json")


def _is_text_media_type(media_type: str | None) -> bool:
    if media_type is None:
        return False
    base = media_type.split(";", 1)[0].strip().lower()
    return base.startswith("text/") or base.endswith("/xml") or base.endswith("+xml")


@dataclass
class CloudEvent:
    """One CloudEvent.

    ``data`` is a JSON value (for JSON media types, the default), ``str`` (text media types) or
    ``bytes`` (anything; sent as ``data_base64`` in JSON modes). ``None`` means no data.
    ``id`` defaults to a fresh UUIDv7, drawn once when the event is made: keep the event (or
    its id) to retry a publish, and the server stores it once.
    """

    type: str
    source: str
    data: Any = None
    id: str = field(default_factory=new_event_id)
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: dict[str, ExtensionValue] = field(default_factory=dict)
    specversion: str = "1.0"

    # --- conveniences ---------------------------------------------------------------------
    @property
    def partitionkey(self) -> str | None:
        v = self.extensions.get("partitionkey")
        return v if isinstance(v, str) else None

    @partitionkey.setter
    def partitionkey(self, key: str | None) -> None:
        if key is None:
            self.extensions.pop("partitionkey", None)
        else:
            self.extensions["partitionkey"] = key

    @property
    def ordering_key(self) -> str | None:
        """The key converge partitions and orders by: ``partitionkey``, else ``subject``."""
        return self.partitionkey if self.partitionkey is not None else self.subject

    @property
    def identity(self) -> str:
        return event_identity(self.source, self.id)

    def data_bytes(self) -> bytes:
        """The data as the bytes a binary-mode body carries."""
        if self.data is None:
            return b""
        if isinstance(self.data, (bytes, bytearray, memoryview)):
            return bytes(self.data)
        if isinstance(self.data, str) and not _is_json_media_type(self.datacontenttype):
            return self.data.encode("utf-8")
        return json.dumps(self.data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def checked_data_bytes(self) -> bytes:
        """:meth:`data_bytes`, refusing data that is not strict JSON (what ``validate`` checks)
        with :class:`ClientInputError`: one encoding where validating first would make two."""
        data = self.data
        if data is None or isinstance(data, (bytes, bytearray, memoryview)) or (
                isinstance(data, str) and not _is_json_media_type(self.datacontenttype)):
            return self.data_bytes()
        try:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise ClientInputError(f"data is not JSON-serializable: {e}") from None

    def json_data(self) -> Any:
        """``data`` parsed as JSON when it is bytes or text of a JSON media type."""
        if isinstance(self.data, (bytes, bytearray)) and _is_json_media_type(self.datacontenttype):
            return json.loads(bytes(self.data).decode("utf-8"))
        return self.data

    # --- validation -------------------------------------------------------------------------
    def validate(self, check_data: bool = True) -> None:
        """Raises :class:`ClientInputError` for what the server would refuse with 400.

        ``check_data=False`` leaves out the check that ``data`` serializes as JSON (a publish
        makes it while encoding the request, once).
        """
        # Straight-line checks on the attributes (no getattr loop): this runs once per event
        # of every publish, and a batch of 100 spent most of its client CPU here.
        if self.specversion != "1.0":
            raise ClientInputError(f"specversion must be '1.0', got {self.specversion!r}")
        event_id, source, type_ = self.id, self.source, self.type
        if type(event_id) is not str or not event_id:
            raise ClientInputError("attribute 'id' must be a non-empty string")
        if type(source) is not str or not source:
            raise ClientInputError("attribute 'source' must be a non-empty string")
        if type(type_) is not str or not type_:
            raise ClientInputError("attribute 'type' must be a non-empty string")
        for attr, text in (("id", event_id), ("source", source), ("type", type_)):
            if len(text) > _CERTAINLY_SHORT and _too_long(text):
                raise ClientInputError(f"attribute '{attr}' is longer than "
                                       f"{MAX_ATTRIBUTE_BYTES} bytes")
        for attr, optional in (("subject", self.subject), ("time", self.time),
                               ("datacontenttype", self.datacontenttype),
                               ("dataschema", self.dataschema)):
            if optional is None:
                continue
            if not isinstance(optional, str):
                raise ClientInputError(f"attribute '{attr}' must be a string, got "
                                       f"{type(optional).__name__}")
            if len(optional) > _CERTAINLY_SHORT and _too_long(optional):
                raise ClientInputError(f"attribute '{attr}' is longer than "
                                       f"{MAX_ATTRIBUTE_BYTES} bytes")
        if type(self.extensions) is not dict and not isinstance(self.extensions, Mapping):
            raise ClientInputError("extensions must be a mapping of name to value")
        for name, value in self.extensions.items():
            if not isinstance(name, str) or not _EXTENSION_NAME.match(name):
                raise ClientInputError(
                    f"extension name {name!r} must be 1-20 characters of a-z and 0-9")
            if name in _RESERVED:
                raise ClientInputError(f"extension name {name!r} is a context attribute")
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                if not -(2**31) <= value < 2**31:
                    raise ClientInputError(f"extension {name!r}: integer {value} is outside "
                                           "the 32-bit range")
                continue
            if not isinstance(value, str):
                raise ClientInputError(f"extension {name!r} must be a string, integer or "
                                       f"boolean, got {type(value).__name__}")
            if _too_long(value):
                raise ClientInputError(f"extension {name!r} is longer than "
                                       f"{MAX_ATTRIBUTE_BYTES} bytes")
        data = self.data
        if data is None or isinstance(data, (bytes, bytearray, memoryview)):
            return
        if not _is_json_media_type(self.datacontenttype):
            if isinstance(data, str):
                return
            raise ClientInputError(
                f"data for datacontenttype {self.datacontenttype!r} must be str or bytes")
        if check_data:
            check_json_data(data)

    # --- JSON format --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The event in the CloudEvents JSON format (structured and batched modes)."""
        out: dict[str, Any] = {"specversion": self.specversion, "id": self.id,
                               "source": self.source, "type": self.type}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.time is not None:
            out["time"] = self.time
        if self.datacontenttype is not None:
            out["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            out["dataschema"] = self.dataschema
        if self.extensions:
            out.update(self.extensions)
        data = self.data
        if data is not None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
            else:
                out["data"] = data
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "CloudEvent":
        """An event from the CloudEvents JSON format (what deliveries carry)."""
        if not isinstance(obj, Mapping):
            raise ClientInputError("a CloudEvent must be a JSON object")
        extensions: dict[str, ExtensionValue] = {}
        for name, value in obj.items():
            if name not in _RESERVED:
                extensions[name] = value
        data: Any = None
        if "data_base64" in obj:
            data = base64.b64decode(obj["data_base64"])
        elif "data" in obj:
            data = obj["data"]
        return cls(
            type=obj.get("type", ""),
            source=obj.get("source", ""),
            id=obj.get("id", ""),
            data=data,
            subject=obj.get("subject"),
            time=obj.get("time"),
            datacontenttype=obj.get("datacontenttype"),
            dataschema=obj.get("dataschema"),
            extensions=extensions,
            specversion=obj.get("specversion", "1.0"),
        )


def binary_mode_headers(event: CloudEvent) -> dict[str, str]:
    """The ``ce-*`` headers and ``Content-Type`` of the CloudEvents HTTP binary mode.

    Values are percent-encoded as the binding says (space, ``"``, ``%`` and everything outside
    printable ASCII). Every extension becomes a string here: that is the binding's rule.
    """
    headers: dict[str, str] = {"ce-specversion": event.specversion, "ce-id": _pct(event.id),
                               "ce-source": _pct(event.source), "ce-type": _pct(event.type)}
    for name in ("subject", "time", "dataschema"):
        value = getattr(event, name)
        if value is not None:
            headers["ce-" + name] = _pct(value)
    for name, value in event.extensions.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        headers["ce-" + name] = _pct(text)
    if event.datacontenttype is not None:
        headers["Content-Type"] = event.datacontenttype
    elif isinstance(event.data, (bytes, bytearray, memoryview)):
        headers["Content-Type"] = "application/octet-stream"
    else:
        headers["Content-Type"] = "application/json"
    return headers


#: Values made only of these characters are sent as they are (the common case).
_NO_PCT_NEEDED = re.compile(r"[\x21\x23\x24\x26-\x7e]*")


def _pct(value: str) -> str:
    if _NO_PCT_NEEDED.fullmatch(value):
        return value
    out = []
    for b in value.encode("utf-8"):
        if b <= 0x20 or b >= 0x7F or b in (0x22, 0x25):
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)
