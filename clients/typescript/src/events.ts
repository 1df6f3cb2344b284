// CloudEvents as plain objects. The official `cloudevents` npm package's `CloudEvent` keeps its
// context attributes and its extensions as top-level properties (`event.id`, `event.tenant`)
// and `data` / `data_base64` beside them; `CloudEventLike` is that shape, so an instance of that
// class (or any object literal of the same shape) is accepted without depending on the package.
import { badInput } from "./errors.js";

/** Values an extension attribute may take (docs/api/openapi.yaml, CloudEvent). */
export type ExtensionValue = string | number | boolean;

/** What publish accepts: a CloudEvent in the shape of the `cloudevents` package's class. */
export interface CloudEventLike {
  specversion?: string;
  /** Required by CloudEvents; the client fills a fresh UUID when it is absent or empty. */
  id?: string;
  source: string;
  type: string;
  subject?: string;
  /** RFC 3339 text (or a Date). */
  time?: string | Date;
  datacontenttype?: string;
  dataschema?: string;
  /** JSON data for JSON media types (any value); a string for text; bytes otherwise. */
  data?: unknown;
  data_base64?: string;
  /** Extensions sit beside the attributes, as in the `cloudevents` package. */
  [extension: string]: unknown;
}

/** A delivered event: the same shape, data decoded (JSON value, string, or bytes). */
export interface ReceivedEvent extends CloudEventLike {
  specversion: string;
  id: string;
}

const CONTEXT_ATTRIBUTES = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64",
]);
// Properties of the `cloudevents` class that are not attributes of a 1.0 event.
const IGNORED_PROPERTIES = new Set(["schemaurl", "datacontentencoding"]);
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
/** Event::kMaxAttributeBytes: a longer attribute is refused by the server (INVALID_EVENT). */
export const MAX_ATTRIBUTE_BYTES = 16384;

const encoder = new TextEncoder();
const utf8Length = (s: string): number => encoder.encode(s).length;
// An attribute can only be too long when 3 bytes per UTF-16 unit could pass the limit.
const maybeTooLong = (s: string): boolean => s.length * 3 > MAX_ATTRIBUTE_BYTES;

/** The event's identity as the log and the inbox use it: `<len(source)>:<source><id>`
 * (docs/formats/outbox.md, "Event identity"); the length is in UTF-8 bytes. */
export function eventIdentity(source: string, id: string): string {
  return `${utf8Length(source)}:${source}${id}`;
}

/** The partition key converge uses: `partitionkey`, else `subject`, else none. */
export function partitionKeyOf(event: CloudEventLike): string | undefined {
  const pk = event.partitionkey;
  if (typeof pk === "string" && pk.length > 0) return pk;
  if (typeof event.subject === "string" && event.subject.length > 0) return event.subject;
  return undefined;
}

function isJsonMediaType(ct: string | undefined): boolean {
  if (ct === undefined || ct === "") return true;
  const base = ct.split(";")[0]!.trim().toLowerCase();
  return base === "application/json" || base.endsWith("/json") || base.endsWith("+json");
}

function isTextMediaType(ct: string): boolean {
  const base = ct.split(";")[0]!.trim().toLowerCase();
  return base.startsWith("text/") || base.endsWith("/xml") || base.endsWith("+xml");
}

function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function base64ToBytes(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function checkAttribute(name: string, value: string, where: string): void {
  if (maybeTooLong(value) && utf8Length(value) > MAX_ATTRIBUTE_BYTES) {
    throw badInput(`${where}attribute '${name}' is longer than ${MAX_ATTRIBUTE_BYTES} bytes`);
  }
}

function timeText(t: string | Date | undefined, where: string): string | undefined {
  if (t === undefined) return undefined;
  if (t instanceof Date) {
    if (Number.isNaN(t.getTime())) throw badInput(`${where}attribute 'time' is an invalid Date`);
    return t.toISOString();
  }
  return t;
}

/** The extensions of an event (every other own property with a value). */
export function extensionsOf(event: CloudEventLike, where = ""): Record<string, ExtensionValue> {
  const out: Record<string, ExtensionValue> = {};
  for (const name of Object.keys(event)) {
    if (CONTEXT_ATTRIBUTES.has(name) || IGNORED_PROPERTIES.has(name)) continue;
    const value = event[name];
    if (value === undefined || value === null || typeof value === "function") continue;
    if (!EXTENSION_NAME.test(name)) {
      throw badInput(`${where}extension name '${name}' must be 1-20 characters a-z0-9`);
    }
    if (typeof value === "number") {
      if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647) {
        throw badInput(`${where}extension '${name}' must be a 32-bit integer, got ${value}`);
      }
    } else if (typeof value === "string") {
      checkAttribute(name, value, where);
    } else if (typeof value !== "boolean") {
      throw badInput(`${where}extension '${name}' must be a string, an integer or a boolean`);
    }
    out[name] = value as ExtensionValue;
  }
  return out;
}

function requireString(event: CloudEventLike, name: "source" | "type", where: string): string {
  const v = event[name];
  if (typeof v !== "string" || v.length === 0) {
    throw badInput(`${where}attribute '${name}' is required (a non-empty string)`);
  }
  checkAttribute(name, v, where);
  return v;
}

/**
 * The structured-mode JSON object of an event (CloudEvents JSON format). `id` must already be
 * set (see `withId`). Bytes go as `data_base64`, strings of a JSON media type as JSON strings.
 */
export function toJsonEvent(event: CloudEventLike, where = ""): Record<string, unknown> {
  if (event === null || typeof event !== "object") throw badInput(`${where}an event must be an object`);
  const spec = event.specversion ?? "1.0";
  if (spec !== "1.0") throw badInput(`${where}specversion must be "1.0", got ${JSON.stringify(spec)}`);
  const out: Record<string, unknown> = { specversion: "1.0" };
  if (typeof event.id !== "string" || event.id.length === 0) throw badInput(`${where}attribute 'id' is required`);
  checkAttribute("id", event.id, where);
  out.id = event.id;
  out.source = requireString(event, "source", where);
  out.type = requireString(event, "type", where);
  for (const name of ["subject", "datacontenttype", "dataschema"] as const) {
    const v = event[name];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") throw badInput(`${where}attribute '${name}' must be a string`);
    checkAttribute(name, v, where);
    out[name] = v;
  }
  const time = timeText(event.time, where);
  if (time !== undefined) out.time = time;
  Object.assign(out, extensionsOf(event, where));
  const bytes = toBytes(event.data);
  if (event.data_base64 !== undefined && event.data_base64 !== null) {
    if (event.data !== undefined) throw badInput(`${where}an event has either data or data_base64, not both`);
    out.data_base64 = event.data_base64;
  } else if (bytes !== undefined) {
    out.data_base64 = bytesToBase64(bytes);
  } else if (event.data !== undefined) {
    out.data = event.data;
  }
  return out;
}

/** Gives the event an id when it has none (a UUID), keeping every other attribute. */
export function withId<T extends CloudEventLike>(event: T): T & { id: string } {
  if (event === null || typeof event !== "object") throw badInput("an event must be an object");
  if (typeof event.id === "string" && event.id.length > 0) return event as T & { id: string };
  return { ...copyAttributes(event), id: crypto.randomUUID() } as unknown as T & { id: string };
}

// A plain copy of an event: own properties plus `data`, which the `cloudevents` class keeps
// behind a getter.
function copyAttributes(event: CloudEventLike): CloudEventLike {
  const copy: CloudEventLike = { ...event };
  if (!("data" in copy) && event.data !== undefined) copy.data = event.data;
  return copy;
}

// CloudEvents HTTP binding 3.1.3.2: percent-encode space, '"', '%' and anything outside
// printable ASCII, as UTF-8.
function encodeHeaderValue(v: string): string {
  let out = "";
  for (const b of encoder.encode(v)) {
    if (b <= 0x20 || b >= 0x7f || b === 0x22 || b === 0x25) {
      out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    } else {
      out += String.fromCharCode(b);
    }
  }
  return out;
}

/** Binary mode: the `ce-` headers and the body of an event. */
export function toBinary(event: CloudEventLike & { id: string }, where = ""): {
  headers: Record<string, string>;
  body: Uint8Array | string;
} {
  const json = toJsonEvent(event, where);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(json)) {
    if (name === "data" || name === "data_base64" || name === "datacontenttype") continue;
    headers[`ce-${name}`] = encodeHeaderValue(String(value));
  }
  const ct = typeof event.datacontenttype === "string" ? event.datacontenttype : undefined;
  const bytes = toBytes(event.data);
  let body: Uint8Array | string;
  if (json.data_base64 !== undefined) {
    body = bytes ?? base64ToBytes(json.data_base64 as string);
    headers["content-type"] = ct ?? "application/octet-stream";
  } else if (event.data === undefined) {
    body = "";
    headers["content-type"] = ct ?? "application/json";
    if (ct === undefined || isJsonMediaType(ct)) {
      throw badInput(`${where}binary mode needs data (or a non-JSON datacontenttype for an empty body)`);
    }
  } else if (isJsonMediaType(ct)) {
    body = JSON.stringify(event.data);
    headers["content-type"] = ct ?? "application/json";
  } else if (typeof event.data === "string") {
    body = event.data;
    headers["content-type"] = ct!;
  } else {
    throw badInput(`${where}data of media type '${ct}' must be a string or bytes`);
  }
  return { headers, body };
}

/** Reads a delivered structured event: `data_base64` becomes bytes in `data`. */
export function fromJsonEvent(json: Record<string, unknown>): ReceivedEvent {
  const event = { ...json } as ReceivedEvent;
  if (typeof json.data_base64 === "string") {
    event.data = base64ToBytes(json.data_base64);
    delete event.data_base64;
  }
  return event;
}

/** The data of a delivered event as text (a JSON value re-serialized, bytes as UTF-8). */
export function dataText(event: CloudEventLike): string {
  const bytes = toBytes(event.data);
  if (bytes !== undefined) return new TextDecoder().decode(bytes);
  if (typeof event.data === "string" && !isJsonMediaType(event.datacontenttype)) return event.data;
  return event.data === undefined ? "" : JSON.stringify(event.data);
}

export { isJsonMediaType, isTextMediaType };
