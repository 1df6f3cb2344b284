"""Typed errors.

Every error reply of `converge serve` is ``{"code": ..., "message": ...}`` (docs/api/openapi.yaml,
schema ``Error``). :func:`error_from_reply` turns one into an instance of the class registered
for its ``code`` in :data:`ERROR_CLASSES`; each carries the code, the HTTP status, the message,
``Retry-After`` (when sent) and the whole reply body (some codes add members, e.g.
``SCHEMA_VIOLATION`` names ``event``, ``path`` and ``keyword``).

The classes form a small tree so callers can catch by meaning: :class:`BadRequestError` (the
request was wrong: do not retry it unchanged), :class:`ConflictError` (the server's state does
not allow it), :class:`PreconditionFailedError` (an optimistic-concurrency check failed: re-read
and redo), :class:`RetryableError` (later may work: 429, 503, 504).

Mistakes in calls to this library itself (a topic name the server would refuse, an extension
value of the wrong type, ...) raise :class:`ClientInputError`, a :class:`ValueError`, before
anything is sent.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


class ConvergeError(Exception):
    """Base of every error this library raises about a call to converge."""


class ClientInputError(ConvergeError, ValueError):
    """An argument to this library is invalid; nothing was sent."""


class TransportError(ConvergeError):
    """The server could not be reached, or the connection broke before a reply was read.

    The outcome of the request is unknown: it may or may not have been applied.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ApiError(ConvergeError):
    """An error reply of the server."""

    #: The ``code`` this class stands for (``None`` on the grouping classes).
    CODE: str | None = None

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        *,
        retry_after: float | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body: Mapping[str, Any] = body if body is not None else {}


class BadRequestError(ApiError):
    """The request itself is wrong (400, 405, 413, 415, 431, 501): retrying it unchanged fails."""


class RetryableError(ApiError):
    """Later may work (429, 503, 504); ``retry_after`` is the server's hint in seconds."""


class ConflictError(ApiError):
    """The server's state does not allow the call (409)."""


class PreconditionFailedError(ApiError):
    """An optimistic-concurrency precondition did not hold (412): re-read and redo."""


class InvalidArgumentError(BadRequestError):
    CODE = "INVALID_ARGUMENT"


class InvalidJsonError(BadRequestError):
    CODE = "INVALID_JSON"


class InvalidEventError(BadRequestError):
    CODE = "INVALID_EVENT"


class InvalidSchemaError(BadRequestError):
    CODE = "INVALID_SCHEMA"


class SchemaViolationError(BadRequestError):
    """An event the topic's schema refuses; ``event`` (index), ``path`` and ``keyword``."""

    CODE = "SCHEMA_VIOLATION"

    @property
    def event_index(self) -> int | None:
        v = self.body.get("event")
        return v if isinstance(v, int) else None

    @property
    def path(self) -> str | None:
        v = self.body.get("path")
        return v if isinstance(v, str) else None

    @property
    def keyword(self) -> str | None:
        v = self.body.get("keyword")
        return v if isinstance(v, str) else None


class SchemaIncompatibleError(ConflictError):
    """A new schema version incompatible with the type's mode; ``findings`` lists why."""

    CODE = "SCHEMA_INCOMPATIBLE"

    @property
    def findings(self) -> list[Any]:
        v = self.body.get("findings")
        return list(v) if isinstance(v, list) else []


class MalformedHttpError(BadRequestError):
    CODE = "MALFORMED_HTTP"


class OutOfRangeError(BadRequestError):
    CODE = "OUT_OF_RANGE"


class UnauthenticatedError(ApiError):
    CODE = "UNAUTHENTICATED"


class PermissionDeniedError(ApiError):
    CODE = "PERMISSION_DENIED"


class SystemTopicError(PermissionDeniedError):
    """A topic only converge writes (dead letters, the store's feed, saga commands)."""

    CODE = "SYSTEM_TOPIC"


class NotFoundError(ApiError):
    CODE = "NOT_FOUND"


class MethodNotAllowedError(BadRequestError):
    CODE = "METHOD_NOT_ALLOWED"


class AlreadyExistsError(ConflictError):
    """409; or 412 when an ``If-None-Match: *`` write found a document (``status`` tells)."""

    CODE = "ALREADY_EXISTS"


class FailedPreconditionError(ConflictError):
    CODE = "FAILED_PRECONDITION"


class AbortedError(PreconditionFailedError):
    """A stale ``If-Match``: the document changed since it was read."""

    CODE = "ABORTED"


class PayloadTooLargeError(BadRequestError):
    CODE = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(BadRequestError):
    CODE = "UNSUPPORTED_MEDIA_TYPE"


class NotImplementedByServerError(BadRequestError):
    CODE = "NOT_IMPLEMENTED"


class TooManyRequestsError(RetryableError):
    CODE = "TOO_MANY_REQUESTS"


class ResourceExhaustedError(RetryableError):
    CODE = "RESOURCE_EXHAUSTED"


class HeadersTooLargeError(BadRequestError):
    CODE = "HEADERS_TOO_LARGE"


class UnavailableError(RetryableError):
    CODE = "UNAVAILABLE"


class DeadlineExceededError(RetryableError):
    CODE = "DEADLINE_EXCEEDED"


class DataLossError(ApiError):
    CODE = "DATA_LOSS"


class InternalError(ApiError):
    CODE = "INTERNAL"


class TokenNotAppliedError(RetryableError):
    """A replica had not applied the consistency token within the wait (504)."""

    CODE = "TOKEN_NOT_APPLIED"


class ReplicaStaleError(RetryableError):
    """A replica is further behind than ``max_staleness_ms`` allows (503)."""

    CODE = "REPLICA_STALE"


class PositionGoneError(ApiError):
    """410: a collection's change stream no longer has the position asked for (the feed's
    retention removed it); ``start`` in the body is the oldest position kept."""

    CODE = "POSITION_GONE"


class UnknownApiError(ApiError):
    """A code this version of the library does not know (a newer server)."""


#: The class of each error code of the ``Error`` schema in docs/api/openapi.yaml.
ERROR_CLASSES: dict[str, type[ApiError]] = {
    cls.CODE: cls
    for cls in (
        InvalidArgumentError,
        InvalidJsonError,
        InvalidEventError,
        InvalidSchemaError,
        SchemaViolationError,
        SchemaIncompatibleError,
        MalformedHttpError,
        OutOfRangeError,
        UnauthenticatedError,
        PermissionDeniedError,
        SystemTopicError,
        NotFoundError,
        MethodNotAllowedError,
        AlreadyExistsError,
        FailedPreconditionError,
        AbortedError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        NotImplementedByServerError,
        TooManyRequestsError,
        ResourceExhaustedError,
        HeadersTooLargeError,
        UnavailableError,
        DeadlineExceededError,
        DataLossError,
        InternalError,
        TokenNotAppliedError,
        ReplicaStaleError,
        PositionGoneError,
    )
    if cls.CODE is not None
}


#: The HTTP status each code is sent with (docs/server.md, "Routing and errors"); used for an
#: error that arrives without one (a stream's ``error`` event). ``ALREADY_EXISTS`` is 412 on a
#: conditional write.
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400, "INVALID_JSON": 400, "INVALID_EVENT": 400, "INVALID_SCHEMA": 400,
    "SCHEMA_VIOLATION": 400, "SCHEMA_INCOMPATIBLE": 409, "MALFORMED_HTTP": 400,
    "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "SYSTEM_TOPIC": 403,
    "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405, "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409, "ABORTED": 412, "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415, "NOT_IMPLEMENTED": 501, "TOO_MANY_REQUESTS": 429,
    "RESOURCE_EXHAUSTED": 429, "HEADERS_TOO_LARGE": 431, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504, "DATA_LOSS": 500, "INTERNAL": 500, "TOKEN_NOT_APPLIED": 504,
    "REPLICA_STALE": 503, "POSITION_GONE": 410,
}


def _fallback_class(status: int) -> type[ApiError]:
    if status in (429, 503, 504):
        return RetryableError
    if status == 409:
        return ConflictError
    if status == 412:
        return PreconditionFailedError
    if status in (400, 405, 413, 415, 431, 501):
        return BadRequestError
    return UnknownApiError


def error_from_reply(status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """The typed error for an HTTP error reply (any non-2xx status)."""
    parsed: Any = None
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        parsed = None
    hint: float | None = None
    if retry_after is not None:
        try:
            hint = float(retry_after)
        except ValueError:
            hint = None
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        code = parsed["code"]
        message = parsed.get("message")
        cls = ERROR_CLASSES.get(code) or _fallback_class(status)
        return cls(code, message if isinstance(message, str) else "", status,
                   retry_after=hint, body=parsed)
    # Not converge's error body (a proxy in between, say): keep what is known.
    text = body.decode("utf-8", "replace")[:512]
    return _fallback_class(status)(f"HTTP_{status}", text, status, retry_after=hint)


__all__ = [
    "ConvergeError",
    "ClientInputError",
    "TransportError",
    "ApiError",
    "BadRequestError",
    "RetryableError",
    "ConflictError",
    "PreconditionFailedError",
    "UnknownApiError",
    "InvalidArgumentError",
    "InvalidJsonError",
    "InvalidEventError",
    "InvalidSchemaError",
    "SchemaViolationError",
    "SchemaIncompatibleError",
    "MalformedHttpError",
    "OutOfRangeError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "SystemTopicError",
    "NotFoundError",
    "MethodNotAllowedError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "AbortedError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "NotImplementedByServerError",
    "TooManyRequestsError",
    "ResourceExhaustedError",
    "HeadersTooLargeError",
    "UnavailableError",
    "DeadlineExceededError",
    "DataLossError",
    "InternalError",
    "TokenNotAppliedError",
    "ReplicaStaleError",
    "PositionGoneError",
    "ERROR_CLASSES",
    "HTTP_STATUS",
    "error_from_reply",
]
