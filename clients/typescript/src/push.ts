// Receiving push deliveries (docs/push.md): check that converge sent a request and read it.
// A push subscription makes converge POST each event to the service's endpoint, signed with
// the subscription's secret. `readPush` verifies the signature (`v2`: the timestamp, the
// Content-Type and ce-* headers and the exact body) and returns the event with the delivery's
// headers: the subscription, the attempt and the event's log position. Answer 2xx to ack,
// another 4xx than 408/429 to dead-letter, anything else to have it retried. Works with any
// HTTP server: pass the request's headers (as node:http gives them) and the body bytes.
import { ReceivedEvent, fromJsonEvent, isJsonMediaType, isTextMediaType } from "./events.js";

/** Header name -> value (node:http's `IncomingMessage.headers`, or any plain object). */
export type PushHeaders = Record<string, string | string[] | undefined>;

export interface PushDelivery {
  subscription: string;
  /** 1 for the first delivery of the event (docs/push.md says when it starts again at 1). */
  attempt: number;
  /** The event's position in its topic's log (Converge-Partition / Converge-Offset); absent
   * from a server that does not send them. Not covered by the signature. */
  partition?: number;
  offset?: number;
  event: ReceivedEvent;
}

/** The request is not a push delivery converge signed (`signature`: the check failed) or holds
 * no readable event. Answer it with a 4xx: converge never sends such a one. */
export class PushRequestError extends Error {
  constructor(message: string, readonly signature = false) {
    super(message);
    this.name = "PushRequestError";
  }
}

export interface PushVerifyOptions {
  /** Refuse timestamps further than this from now (default 300 s). */
  toleranceS?: number;
  /** Now, in ms since the epoch (default Date.now()). */
  nowMs?: number;
}

function lowerHeaders(headers: PushHeaders): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out.set(name.toLowerCase(), Array.isArray(value) ? value.join(", ") : value);
  }
  return out;
}

// Header values are bytes on the wire; node:http hands them over as latin-1 strings.
function latin1(text: string): Uint8Array | undefined {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) return undefined;
    out[i] = c;
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** True if `Converge-Signature` holds a v2 HMAC-SHA256 of this request under `secret` with a
 * timestamp within the tolerance (docs/push.md, "Verifying a request"). Constant-time compare. */
export async function verifyPushSignature(
  secret: string | Uint8Array,
  headers: PushHeaders,
  body: Uint8Array,
  options: PushVerifyOptions = {},
): Promise<boolean> {
  const lower = lowerHeaders(headers);
  const parts = new Map<string, string>();
  for (const p of (lower.get("converge-signature") ?? "").split(",")) {
    const eq = p.indexOf("=");
    if (eq > 0) parts.set(p.slice(0, eq), p.slice(eq + 1));
  }
  const t = parts.get("t");
  const sig = parts.get("v2");
  if (t === undefined || sig === undefined || !/^[0-9]+$/.test(t)) return false;
  const now = (options.nowMs ?? Date.now()) / 1000;
  if (Math.abs(now - Number(t)) > (options.toleranceS ?? 300)) return false;
  const names = [...lower.keys()].filter((n) => n === "content-type" || n.startsWith("ce-")).sort();
  const signed = latin1(names.map((n) => `${n}:${lower.get(n)}\n`).join(""));
  if (signed === undefined) return false;
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    typeof secret === "string" ? encoder.encode(secret) : secret,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, concat([encoder.encode(`${t}.`), signed, encoder.encode("\n"), body]));
  return sameText(hex(mac), sig);
}

function intHeader(lower: Map<string, string>, name: string): number | undefined {
  const v = lower.get(name);
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v)) throw new PushRequestError(`header ${name} is not a number: '${v}'`);
  return Number(v);
}

const CONTEXT = new Set(["specversion", "id", "source", "type", "subject", "time", "dataschema"]);

function binaryEvent(lower: Map<string, string>, body: Uint8Array): ReceivedEvent {
  const event: Record<string, unknown> = {};
  for (const [name, value] of lower) {
    if (name.startsWith("ce-")) event[name.slice(3)] = decodeURIComponent(value);
  }
  const contentType = lower.get("content-type");
  if (contentType !== undefined) event.datacontenttype = contentType;
  if (body.length > 0) {
    const text = () => new TextDecoder("utf-8", { fatal: true }).decode(body);
    if (contentType !== undefined && isJsonMediaType(contentType)) event.data = JSON.parse(text());
    else if (contentType !== undefined && isTextMediaType(contentType)) event.data = text();
    else event.data = body;
  }
  if (event.specversion === undefined) event.specversion = "1.0";
  for (const name of CONTEXT) {
    if (event[name] !== undefined && typeof event[name] !== "string") delete event[name];
  }
  return event as ReceivedEvent;
}

/** Verifies a push request and reads its event (structured or binary mode; in binary mode every
 * extension is a string, the HTTP binding's rule). Throws `PushRequestError`. */
export async function readPush(
  secret: string | Uint8Array,
  headers: PushHeaders,
  body: Uint8Array,
  options: PushVerifyOptions = {},
): Promise<PushDelivery> {
  if (!(await verifyPushSignature(secret, headers, body, options))) {
    throw new PushRequestError("the request does not carry a valid Converge-Signature", true);
  }
  const lower = lowerHeaders(headers);
  const contentType = (lower.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  let event: ReceivedEvent;
  try {
    if (contentType === "application/cloudevents+json") {
      const json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body)) as unknown;
      if (json === null || typeof json !== "object" || Array.isArray(json)) {
        throw new PushRequestError("a structured-mode body must be a JSON object");
      }
      event = fromJsonEvent(json as Record<string, unknown>);
    } else {
      event = binaryEvent(lower, body);
    }
  } catch (err) {
    if (err instanceof PushRequestError) throw err;
    throw new PushRequestError(`the request holds no readable event: ${(err as Error).message}`);
  }
  if (!event.id || !event.source || !event.type) throw new PushRequestError("the event lacks id, source or type");
  const delivery: PushDelivery = {
    subscription: lower.get("converge-subscription") ?? "",
    attempt: intHeader(lower, "converge-delivery-attempt") ?? 1,
    event,
  };
  const partition = intHeader(lower, "converge-partition");
  const offset = intHeader(lower, "converge-offset");
  if (partition !== undefined) delivery.partition = partition;
  if (offset !== undefined) delivery.offset = offset;
  return delivery;
}
