// The few Node built-ins this package uses, declared here because the build uses only the
// TypeScript compiler (no @types/node). Not emitted: nothing exported refers to these types.
declare module "node:fs" {
  export function openSync(path: string, flags: string): number;
  export function writeSync(fd: number, data: string): number;
  export function fsyncSync(fd: number): void;
  export function closeSync(fd: number): void;
  export function readFileSync(path: string, encoding: "utf8"): string;
  export function existsSync(path: string): boolean;
  export function truncateSync(path: string, length: number): void;
}
declare module "node:http" {
  export interface AgentOptions {
    keepAlive?: boolean;
    keepAliveMsecs?: number;
    maxSockets?: number;
    maxFreeSockets?: number;
  }
  export class Agent {
    constructor(options?: AgentOptions);
    destroy(): void;
  }
  export interface IncomingMessage extends AsyncIterable<Uint8Array> {
    statusCode?: number;
    headers: Record<string, string | string[] | undefined>;
    destroy(error?: Error): void;
    on(event: "error", listener: (error: Error) => void): this;
    on(event: "data", listener: (chunk: Uint8Array) => void): this;
    on(event: "end", listener: () => void): this;
  }
  export interface ClientRequest {
    on(event: "response", listener: (response: IncomingMessage) => void): this;
    on(event: "error", listener: (error: Error) => void): this;
    end(data?: string | Uint8Array): void;
    destroy(error?: Error): void;
  }
  export interface RequestOptions {
    protocol?: string;
    hostname?: string;
    port?: number | string;
    path?: string;
    method?: string;
    headers?: Record<string, string | number>;
    agent?: Agent;
    ca?: string;
    rejectUnauthorized?: boolean;
  }
  export function request(options: RequestOptions): ClientRequest;
}
declare module "node:https" {
  import { AgentOptions, ClientRequest, RequestOptions } from "node:http";
  export class Agent {
    constructor(options?: AgentOptions & { ca?: string; rejectUnauthorized?: boolean });
    destroy(): void;
  }
  export function request(options: RequestOptions): ClientRequest;
}
