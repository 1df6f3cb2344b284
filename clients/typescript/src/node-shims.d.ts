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
