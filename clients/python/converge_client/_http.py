"""HTTP/1.1 to converge serve over keep-alive connections (one per thread), standard library only."""

from __future__ import annotations

import http.client
import json
import random
import select
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .errors import ApiError, ClientInputError, RetryableError, TransportError, error_from_reply


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2^n))."""

    base_s: float = 0.05
    cap_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap_s, self.base_s * (2 ** min(attempt, 30))))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


def quote_segment(value: str) -> str:
    """One path segment, percent-encoded (``/`` and ``+`` too: the server decodes both)."""
    return urllib.parse.quote(value, safe="-._~:@!,=")


class Transport:
    """Sends requests; one kept-alive connection per thread.

    ``retries`` bounds how often a request marked retry-safe is sent again after a broken
    connection, a 429 or a 503 (with the server's ``Retry-After`` as the least wait).
    """

    def __init__(self, base_url: str, token: str | None, timeout_s: float, retries: int,
                 backoff: Backoff, ssl_context: ssl.SSLContext | None = None) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ClientInputError(f"base_url must be http://host[:port] or https://..., got "
                                   f"{base_url!r}")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise ClientInputError(f"base_url must not carry a path or query: {base_url!r}")
        if timeout_s <= 0:
            raise ClientInputError("timeout must be positive")
        if retries < 0:
            raise ClientInputError("retries must be >= 0")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff = backoff
        self.ssl_context = ssl_context
        self._local = threading.local()

    # --- connections ----------------------------------------------------------------------
    def new_connection(self, timeout_s: float | None = None) -> http.client.HTTPConnection:
        t = self.timeout_s if timeout_s is None else timeout_s
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=t,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=t)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.new_connection()
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Closes this thread's connection."""
        self._drop_connection()

    def base_headers(self) -> dict[str, str]:
        h = {"Host": f"{self.host}:{self.port}"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    # --- requests -------------------------------------------------------------------------
    def send_once(self, method: str, target: str, body: bytes | None,
                  headers: Mapping[str, str]) -> Response:
        """One request on this thread's connection.

        A kept-alive connection the server has closed meanwhile (its idle timeout) is noticed
        before sending (it reads as end-of-file) and replaced, so the request goes out once.
        A connection lost after sending raises :class:`TransportError`: the outcome is
        unknown, and only :meth:`request` with ``retry_safe`` sends it again.
        """
        all_headers = self.base_headers()
        all_headers.update(headers)
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        conn = self._connection()
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                readable = select.select([sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [sock]
            if readable:  # an idle kept-alive connection has nothing to read but its close
                self._drop_connection()
                conn = self._connection()
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in all_headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            headers_out = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._drop_connection()
            return Response(resp.status, headers_out, data)
        except (OSError, http.client.HTTPException) as e:
            self._drop_connection()
            raise TransportError(f"{method} {target}: {type(e).__name__}: {e}", e) from e

    def request(self, method: str, target: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, retry_safe: bool = False,
                ok: Iterable[int] = (200, 201, 204)) -> Response:
        """Sends the request and returns a 2xx reply, or raises the typed error.

        With ``retry_safe`` (the request may be applied twice with one effect: a publish with
        its event ids, a read) a lost connection, 429 and 503 are retried with backoff.
        """
        ok_set = set(ok)
        attempt = 0
        while True:
            try:
                res = self.send_once(method, target, body, headers or {})
            except TransportError:
                if not retry_safe or attempt >= self.retries:
                    raise
                time.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            if res.status in ok_set:
                return res
            err = error_from_reply(res.status, res.body, res.headers.get("retry-after"))
            if (retry_safe and attempt < self.retries and isinstance(err, RetryableError)
                    and res.status in (429, 503)):
                wait = max(self.backoff.delay(attempt), err.retry_after or 0.0)
                time.sleep(wait)
                attempt += 1
                continue
            raise err

    def json_request(self, method: str, target: str, payload: Any = None, *,
                     retry_safe: bool = False, ok: Iterable[int] = (200, 201, 204),
                     headers: Mapping[str, str] | None = None) -> Any:
        h = dict(headers or {})
        body = None
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
            h["Content-Type"] = "application/json"
        return self.request(method, target, body=body, headers=h, retry_safe=retry_safe,
                            ok=ok).json()


def call_with_retries(fn: Callable[[], Any], *, retries: int, backoff: Backoff,
                      should_stop: Callable[[], bool] = lambda: False) -> Any:
    """Runs ``fn`` until it succeeds, retrying transport and retryable errors."""
    attempt = 0
    while True:
        try:
            return fn()
        except (TransportError, RetryableError) as e:
            if attempt >= retries or should_stop():
                raise
            wait = backoff.delay(attempt)
            if isinstance(e, ApiError) and e.retry_after:
                wait = max(wait, e.retry_after)
            time.sleep(wait)
            attempt += 1

