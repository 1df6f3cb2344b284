"""HTTP/1.1 to converge serve over keep-alive connections (one per thread), standard library only."""

from __future__ import annotations

import http.client
import json
import random
import re
import select
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Mapping

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
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.close()
            self._local.reader = None
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

    def _base_header_text(self) -> str:
        # The headers every request carries, rendered once per transport (not per request).
        text: str | None = getattr(self, "_base_text", None)
        if text is None:
            text = "".join(f"{k}: {v}\r\n" for k, v in self.base_headers().items())
            if _ILLEGAL_HEADER_TEXT.search(text.replace("\r\n", "")):
                raise ValueError("invalid header value in the base headers")
            self._base_text = text
        return text

    # --- requests -------------------------------------------------------------------------
    def send_once(self, method: str, target: str, body: bytes | None,
                  headers: Mapping[str, str]) -> Response:
        """One request on this thread's connection.

        A kept-alive connection the server has closed meanwhile (its idle timeout) is noticed
        before sending (it reads as end-of-file) and replaced, so the request goes out once.
        A connection lost after sending raises :class:`TransportError`: the outcome is
        unknown, and only :meth:`request` with ``retry_safe`` sends it again.

        The request goes out in one write and the reply is read by this module's own small
        HTTP/1.1 reader: http.client's per-request header parsing (the email package) and its
        separate writes for headers and body were most of the client's CPU per publish.
        http.client still opens the connection (TLS included).
        """
        if _ILLEGAL_TARGET.search(target):
            raise ValueError(f"request target {target!r} has characters HTTP does not allow")
        head = [method, " ", target, " HTTP/1.1\r\n", self._base_header_text()]
        for k, v in headers.items():
            if _ILLEGAL_HEADER_NAME.search(k) or not k or _ILLEGAL_HEADER_TEXT.search(v):
                raise ValueError(f"invalid header {k!r}: {v!r}")
            head += (k, ": ", v, "\r\n")
        if body is not None:
            head += ("Content-Length: ", str(len(body)), "\r\n")
        head.append("\r\n")
        request = "".join(head).encode("latin-1")
        if body:
            request += body
        conn = self._connection()
        sock = conn.sock
        if sock is not None:
            try:
                readable = select.select([sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [sock]
            if readable:  # an idle kept-alive connection has nothing to read but its close
                self._drop_connection()
                conn = self._connection()
        try:
            reader = getattr(self._local, "reader", None)
            if conn.sock is None or reader is None:
                if conn.sock is None:
                    conn.connect()
                sock = conn.sock
                assert sock is not None
                reader = sock.makefile("rb")
                self._local.reader = reader
            sock = conn.sock
            assert sock is not None
            sock.sendall(request)
            status, headers_out, data, will_close = _read_response(reader, method)
            if will_close:
                self._drop_connection()
            return Response(status, headers_out, data)
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


# What http.client refuses in a request line and headers (a CR or LF would split the request).
_ILLEGAL_TARGET = re.compile(r"[\x00-\x20\x7f]")
_ILLEGAL_HEADER_NAME = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_ILLEGAL_HEADER_TEXT = re.compile(r"\n(?![ \t])|\r(?![ \t\n])|[\x00]")
_MAX_LINE = 65536
_MAX_HEADERS = 100


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("header line")
    return line


def _read_response(reader: BinaryIO, method: str) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 reply: status, headers (lower-case names), body, and whether the server
    closes the connection after it."""
    while True:
        line = _read_line(reader)
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise http.client.BadStatusLine(repr(line))
        try:
            status = int(parts[1])
        except ValueError:
            raise http.client.BadStatusLine(repr(line)) from None
        if not 100 <= status <= 999:
            raise http.client.BadStatusLine(repr(line))
        headers: dict[str, str] = {}
        while True:
            h = _read_line(reader)
            if h in (b"\r\n", b"\n", b""):
                break
            if len(headers) >= _MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise http.client.HTTPException(f"malformed header line {h!r}")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            continue  # an interim reply (100 Continue): the real one follows
        break
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (parts[0] == b"HTTP/1.0"
                                           and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304) or status < 200:
        return status, headers, b"", will_close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = _read_line(reader)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(chunks)) from None
            if size == 0:
                while _read_line(reader) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunk = reader.read(size)
            if len(chunk) < size:
                raise http.client.IncompleteRead(chunk, size - len(chunk))
            chunks.append(chunk)
            reader.read(2)
        return status, headers, b"".join(chunks), will_close
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise http.client.HTTPException(f"bad Content-Length {length!r}") from None
        if n < 0:
            raise http.client.HTTPException(f"bad Content-Length {length!r}")
        data = reader.read(n) if n else b""
        if len(data) < n:
            raise http.client.IncompleteRead(data, n - len(data))
        return status, headers, data, will_close
    return status, headers, reader.read(), True  # delimited by the connection's close


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

