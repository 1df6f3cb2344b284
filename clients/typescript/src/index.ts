// @converge/client: the public surface.
export * from "./errors.js";
export * from "./events.js";
export { ClientOptions, Transport } from "./transport.js";
export * from "./client.js";
export * from "./backoff.js";
export * from "./consumer.js";
export * from "./inbox.js";
export * from "./journal.js";
export * from "./outbox.js";
export * from "./saga.js";
export * from "./store.js";
export * from "./push.js";
