// The Node globals the inventory service uses (the build has no @types/node; the client's
// own shims declare the node: modules it imports).
declare const process: {
  readonly env: Record<string, string | undefined>;
  readonly pid: number;
  readonly argv: string[];
  exitCode?: number;
  on(event: "SIGTERM" | "SIGINT", listener: () => void): void;
  exit(code?: number): never;
  readonly stdout: { write(text: string): boolean };
  readonly stderr: { write(text: string): boolean };
};
