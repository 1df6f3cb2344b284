// Typed errors. Every error reply of converge serve is `{"code","message"}` (docs/server.md,
// "Routing and errors"); each documented code maps to one class below, so callers can catch a
// kind of failure (`instanceof AbortedError`) or switch on `err.code`.

/** Every error code the server documents (the `Error` schema of docs/api/openapi.yaml). */
export const SERVER_ERROR_CODES = [
  "INVALID_ARGUMENT",
  "INVALID_JSON",
  "INVALID_EVENT",
  "INVALID_SCHEMA",
  "SCHEMA_VIOLATION",
  "SCHEMA_INCOMPATIBLE",
  "MALFORMED_HTTP",
  "OUT_OF_RANGE",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "SYSTEM_TOPIC",
  "NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "ALREADY_EXISTS",
  "FAILED_PRECONDITION",
  "ABORTED",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "NOT_IMPLEMENTED",
  "TOO_MANY_REQUESTS",
  "RESOURCE_EXHAUSTED",
  "HEADERS_TOO_LARGE",
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "DATA_LOSS",
  "INTERNAL",
  "TOKEN_NOT_APPLIED",
  "REPLICA_STALE",
  "POSITION_GONE",
] as const;

export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];

export interface ErrorDetails {
  /** HTTP status of the reply; 0 when the request never got one (local check, network). */
  status?: number;
  /** Milliseconds the server asked to wait (`Retry-After`), if it did. */
  retryAfterMs?: number;
  /** The whole parsed error body (e.g. `findings`, `failing`, `path`, `keyword`). */
  body?: Record<string, unknown>;
  cause?: unknown;
}

/** Base class: `code` is the server's error code (or a client-side one, see subclasses). */
export class ConvergeError extends Error {
  readonly code: string;
  readonly status: number;
  readonly retryAfterMs: number | undefined;
  readonly body: Record<string, unknown> | undefined;

  constructor(code: string, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = details.status ?? 0;
    this.retryAfterMs = details.retryAfterMs;
    this.body = details.body;
  }

  /** True when the same request may succeed later (load, shutdown, a full disk, a timeout). */
  get retryable(): boolean {
    return false;
  }
}

/** 400: the request is malformed (INVALID_ARGUMENT, INVALID_JSON, INVALID_EVENT, INVALID_SCHEMA,
 * SCHEMA_VIOLATION, SCHEMA_INCOMPATIBLE, MALFORMED_HTTP, OUT_OF_RANGE). Also raised by the
 * client itself, before sending, for input it can tell is wrong (`status` 0). */
export class InvalidArgumentError extends ConvergeError {}
/** 401 UNAUTHENTICATED. */
export class UnauthenticatedError extends ConvergeError {}
/** 403 PERMISSION_DENIED, SYSTEM_TOPIC. */
export class PermissionDeniedError extends ConvergeError {}
/** 404 NOT_FOUND. */
export class NotFoundError extends ConvergeError {}
/** 410 POSITION_GONE: a collection's change stream no longer keeps the position asked for (its
 * feed's retention removed it); `body.start` is the oldest position kept. */
export class PositionGoneError extends ConvergeError {}
/** 405 METHOD_NOT_ALLOWED. */
export class MethodNotAllowedError extends ConvergeError {}
/** 409 ALREADY_EXISTS, or 412 ALREADY_EXISTS for an `If-None-Match: *` that found a document. */
export class AlreadyExistsError extends ConvergeError {}
/** 409 FAILED_PRECONDITION: the server's state does not allow the call. */
export class FailedPreconditionError extends ConvergeError {}
/** 412 ABORTED: an optimistic-concurrency check (a stale `If-Match`) failed. */
export class AbortedError extends ConvergeError {}
/** 413 PAYLOAD_TOO_LARGE. */
export class PayloadTooLargeError extends ConvergeError {}
/** 415 UNSUPPORTED_MEDIA_TYPE. */
export class UnsupportedMediaTypeError extends ConvergeError {}
/** 501 NOT_IMPLEMENTED. */
export class NotImplementedError extends ConvergeError {}
/** 429 RESOURCE_EXHAUSTED, TOO_MANY_REQUESTS: later may work (`retryAfterMs`). */
export class ResourceExhaustedError extends ConvergeError {
  override get retryable(): boolean {
    return true;
  }
}
/** 431 HEADERS_TOO_LARGE. */
export class HeadersTooLargeError extends ConvergeError {}
/** 503 UNAVAILABLE (also a full disk, a closing server), REPLICA_STALE; and network failures
 * (`status` 0, code UNAVAILABLE). */
export class UnavailableError extends ConvergeError {
  override get retryable(): boolean {
    return true;
  }
}
/** 504 DEADLINE_EXCEEDED, TOKEN_NOT_APPLIED; and a request the client timed out (`status` 0). */
export class DeadlineExceededError extends ConvergeError {
  override get retryable(): boolean {
    return true;
  }
}
/** 500 DATA_LOSS. */
export class DataLossError extends ConvergeError {}
/** 500 INTERNAL (and any code this client does not know). */
export class InternalError extends ConvergeError {}

type ErrorClass = new (code: string, message: string, details?: ErrorDetails) => ConvergeError;

/** The class each documented code maps to. */
export const ERROR_CLASS_BY_CODE: Readonly<Record<ServerErrorCode, ErrorClass>> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  INVALID_JSON: InvalidArgumentError,
  INVALID_EVENT: InvalidArgumentError,
  INVALID_SCHEMA: InvalidArgumentError,
  SCHEMA_VIOLATION: InvalidArgumentError,
  SCHEMA_INCOMPATIBLE: InvalidArgumentError,
  MALFORMED_HTTP: InvalidArgumentError,
  OUT_OF_RANGE: InvalidArgumentError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  SYSTEM_TOPIC: PermissionDeniedError,
  NOT_FOUND: NotFoundError,
  METHOD_NOT_ALLOWED: MethodNotAllowedError,
  ALREADY_EXISTS: AlreadyExistsError,
  FAILED_PRECONDITION: FailedPreconditionError,
  ABORTED: AbortedError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  UNSUPPORTED_MEDIA_TYPE: UnsupportedMediaTypeError,
  NOT_IMPLEMENTED: NotImplementedError,
  TOO_MANY_REQUESTS: ResourceExhaustedError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  HEADERS_TOO_LARGE: HeadersTooLargeError,
  UNAVAILABLE: UnavailableError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  DATA_LOSS: DataLossError,
  INTERNAL: InternalError,
  TOKEN_NOT_APPLIED: DeadlineExceededError,
  REPLICA_STALE: UnavailableError,
  POSITION_GONE: PositionGoneError,
};

// A reply without a JSON error body (a proxy, a crash): the class follows the HTTP status.
function classForStatus(status: number): [string, ErrorClass] {
  switch (status) {
    case 400: return ["INVALID_ARGUMENT", InvalidArgumentError];
    case 401: return ["UNAUTHENTICATED", UnauthenticatedError];
    case 403: return ["PERMISSION_DENIED", PermissionDeniedError];
    case 404: return ["NOT_FOUND", NotFoundError];
    case 405: return ["METHOD_NOT_ALLOWED", MethodNotAllowedError];
    case 410: return ["POSITION_GONE", PositionGoneError];
    case 409: return ["FAILED_PRECONDITION", FailedPreconditionError];
    case 412: return ["ABORTED", AbortedError];
    case 413: return ["PAYLOAD_TOO_LARGE", PayloadTooLargeError];
    case 415: return ["UNSUPPORTED_MEDIA_TYPE", UnsupportedMediaTypeError];
    case 429: return ["RESOURCE_EXHAUSTED", ResourceExhaustedError];
    case 431: return ["HEADERS_TOO_LARGE", HeadersTooLargeError];
    case 501: return ["NOT_IMPLEMENTED", NotImplementedError];
    case 502:
    case 503: return ["UNAVAILABLE", UnavailableError];
    case 504: return ["DEADLINE_EXCEEDED", DeadlineExceededError];
    default: return ["INTERNAL", InternalError];
  }
}

/** Builds the typed error for an error reply (`bodyText` as received). */
export function errorFromReply(status: number, bodyText: string, retryAfter: string | null): ConvergeError {
  let body: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(bodyText);
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      body = parsed as Record<string, unknown>;
    }
  } catch {
    body = undefined;
  }
  let retryAfterMs: number | undefined;
  if (retryAfter !== null && /^\d+$/.test(retryAfter.trim())) retryAfterMs = Number(retryAfter.trim()) * 1000;
  const code = typeof body?.code === "string" ? body.code : undefined;
  const message =
    typeof body?.message === "string" ? body.message : bodyText.length > 0 ? bodyText.slice(0, 500) : `HTTP ${status}`;
  const details: ErrorDetails = { status, retryAfterMs, body };
  if (code !== undefined && Object.prototype.hasOwnProperty.call(ERROR_CLASS_BY_CODE, code)) {
    const cls = ERROR_CLASS_BY_CODE[code as ServerErrorCode];
    return new cls(code, message, details);
  }
  const [fallbackCode, cls] = classForStatus(status);
  // An unknown code is kept as the server sent it.
  return new cls(code ?? fallbackCode, message, details);
}

/** A client-side input check failed (nothing was sent). */
export function badInput(message: string): InvalidArgumentError {
  return new InvalidArgumentError("INVALID_ARGUMENT", message, { status: 0 });
}
