"""The shared store (``/v1/collections``): JSON documents with versions and strong ETags."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from ._http import Backoff, quote_segment
from .client import Client
from .errors import AbortedError, AlreadyExistsError, ClientInputError, NotFoundError

_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z0-9._~:@/+=,!-]{1,512}$")
MAX_TTL_MS = 3153600000000


def check_collection(name: str) -> str:
    if not isinstance(name, str) or not _COLLECTION.match(name):
        raise ClientInputError(f"collection name {name!r} must be 1..128 characters of "
                               "[A-Za-z0-9._-] starting with a letter or digit")
    return name


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ClientInputError(f"document key {key!r} must be 1..512 characters of "
                               "A-Z a-z 0-9 and - . _ ~ : @ / + = , !")
    return key


def _check_ttl(ttl_ms: int | None) -> None:
    if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int)
                               or not 0 <= ttl_ms <= MAX_TTL_MS):
        raise ClientInputError(f"ttl_ms must be an integer in 0..{MAX_TTL_MS}")


def _check_json(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ClientInputError(f"the document is not JSON-serializable: {e}") from None


@dataclass(frozen=True)
class Document:
    key: str
    value: Any
    version: int
    etag: str
    expires_at_ms: int | None = None


@dataclass(frozen=True)
class WriteResult:
    version: int
    etag: str
    created: bool
    merged: bool
    consistency_token: str | None = None


class _Absent:
    """The value :meth:`Collection.update` passes for a document that does not exist."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class Collection:
    """One collection of the shared store."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = check_collection(name)
        self._t = client.transport

    def _doc_target(self, key: str) -> str:
        return f"/v1/collections/{quote_segment(self.name)}/docs/{quote_segment(check_key(key))}"

    # --- administration ---------------------------------------------------------------------
    def create(self, *, owner: str | None = None, writers: Sequence[str] | None = None,
               default_ttl_ms: int | None = None, max_document_bytes: int | None = None,
               merge_fields: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Creates the collection or replaces its configuration (``PUT``)."""
        body: dict[str, Any] = {}
        if owner is not None:
            body["owner"] = owner
        if writers is not None:
            if isinstance(writers, str):
                raise ClientInputError("writers is a list of service names")
            body["writers"] = list(writers)
        if default_ttl_ms is not None:
            _check_ttl(default_ttl_ms)
            body["default_ttl_ms"] = default_ttl_ms
        if max_document_bytes is not None:
            body["max_document_bytes"] = max_document_bytes
        if merge_fields is not None:
            body["merge_fields"] = dict(merge_fields)
        return dict(self._t.json_request("PUT", f"/v1/collections/{quote_segment(self.name)}",
                                         body, ok=(200, 201)))

    def describe(self) -> dict[str, Any]:
        return dict(self._t.json_request("GET", f"/v1/collections/{quote_segment(self.name)}",
                                         retry_safe=True))

    def drop(self) -> None:
        self._t.request("DELETE", f"/v1/collections/{quote_segment(self.name)}")

    # --- documents --------------------------------------------------------------------------
    def get(self, key: str) -> Document:
        """The document; :class:`NotFoundError` when it (or the collection) does not exist."""
        res = self._t.request("GET", self._doc_target(key), retry_safe=True)
        expires = res.headers.get("converge-expires-at-ms")
        return Document(key, res.json(), int(res.headers["converge-version"]),
                        res.headers["etag"], int(expires) if expires else None)

    def find(self, key: str) -> Document | None:
        """The document, or ``None`` when there is none."""
        try:
            return self.get(key)
        except NotFoundError:
            return None

    def put(self, key: str, value: Any, *, if_match: str | None = None,
            if_none_match: bool = False, ttl_ms: int | None = None) -> WriteResult:
        """Writes the document. ``if_match``: an ETag (``'"42"'``) or ``*``; a stale one raises
        :class:`AbortedError` (412). ``if_none_match``: only if absent, else
        :class:`AlreadyExistsError` (412)."""
        if if_match is not None and if_none_match:
            raise ClientInputError("give if_match or if_none_match, not both")
        if if_match is not None and (not isinstance(if_match, str) or not if_match):
            raise ClientInputError("if_match must be an ETag such as '\"42\"' or '*'")
        _check_ttl(ttl_ms)
        headers = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match
        if if_none_match:
            headers["If-None-Match"] = "*"
        if ttl_ms is not None:
            headers["Converge-TTL-Ms"] = str(ttl_ms)
        res = self._t.request("PUT", self._doc_target(key), body=_check_json(value),
                              headers=headers, ok=(200, 201))
        out = res.json()
        return WriteResult(int(out["version"]), str(out["etag"]), bool(out["created"]),
                           bool(out.get("merged", False)),
                           res.headers.get("converge-consistency-token"))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        headers = {"If-Match": if_match} if if_match is not None else {}
        self._t.request("DELETE", self._doc_target(key), headers=headers, ok=(204,))

    def list(self, *, prefix: str | None = None, start_key: str | None = None,
             end_key: str | None = None, page_size: int = 100) -> Iterator[Document]:
        """Every document in key order (page by page; each page a consistent snapshot)."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
            raise ClientInputError("page_size must be an integer in 1..1000")
        token = ""
        while True:
            q: dict[str, str] = {"limit": str(page_size)}
            for name, value in (("prefix", prefix), ("start_key", start_key),
                                ("end_key", end_key)):
                if value is not None:
                    q[name] = value
            if token:
                q["page_token"] = token
            target = (f"/v1/collections/{quote_segment(self.name)}/docs?"
                      + urllib.parse.urlencode(q, quote_via=urllib.parse.quote))
            page = self._t.json_request("GET", target, retry_safe=True)
            for d in page["documents"]:
                yield Document(d["key"], d["value"], int(d["version"]), d["etag"],
                               d.get("expires_at_ms"))
            token = page.get("next_page_token") or ""
            if not token:
                return

    def update(self, key: str, fn: Callable[[Any], Any], *, max_attempts: int = 100,
               backoff: Backoff | None = None, ttl_ms: int | None = None) -> WriteResult:
        """Read-modify-write that retries on a stale ETag: no lost update.

        ``fn(current)`` gets the document's value (:data:`ABSENT` when there is none) and
        returns the new value; it may run several times, so keep it free of side effects. The
        write is conditional (``If-Match`` on the version read, ``If-None-Match: *`` when
        absent); when another writer got there first the document is read again and ``fn``
        runs again, up to ``max_attempts`` times (then :class:`AbortedError` propagates).
        """
        if not callable(fn):
            raise ClientInputError("fn must be callable")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ClientInputError("max_attempts must be an integer >= 1")
        wait = backoff or Backoff(base_s=0.002, cap_s=0.2)
        attempt = 0
        while True:
            current = self.find(key)
            new_value = fn(current.value if current is not None else ABSENT)
            try:
                if current is None:
                    return self.put(key, new_value, if_none_match=True, ttl_ms=ttl_ms)
                return self.put(key, new_value, if_match=current.etag, ttl_ms=ttl_ms)
            except (AbortedError, AlreadyExistsError) as e:
                if isinstance(e, AlreadyExistsError) and e.status != 412:
                    raise
                attempt += 1
                if attempt >= max_attempts:
                    raise
                time.sleep(wait.delay(attempt))


class Store:
    """The shared store of one server: ``store.collection("orders").update(...)``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def collection(self, name: str) -> Collection:
        return Collection(self.client, name)

    def list_collections(self) -> list[str]:
        return list(self.client.transport.json_request("GET", "/v1/collections",
                                                       retry_safe=True)["collections"])

    def transaction(self, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Commits puts, deletes and checks atomically (``POST /v1/collections/_transaction``).

        Each op: ``{"op": "put"|"delete"|"check", "collection", "key", "value"?, "if_match"?,
        "if_none_match"?: "*", "ttl_ms"?}``.
        """
        if isinstance(ops, Mapping) or not isinstance(ops, Sequence) or not ops:
            raise ClientInputError("transaction takes a non-empty list of ops")
        for i, op in enumerate(ops):
            if not isinstance(op, Mapping) or op.get("op") not in ("put", "delete", "check"):
                raise ClientInputError(f"op {i}: 'op' must be put, delete or check")
            check_collection(op.get("collection", ""))
            check_key(op.get("key", ""))
        res = self.client.transport.request(
            "POST", "/v1/collections/_transaction",
            body=_check_json({"ops": [dict(o) for o in ops]}),
            headers={"Content-Type": "application/json"})
        out = dict(res.json())
        out["consistency_token"] = res.headers.get("converge-consistency-token")
        return out
