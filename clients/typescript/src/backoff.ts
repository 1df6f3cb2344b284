// Exponential backoff with full jitter, and a sleep that an AbortSignal cuts short.

export interface BackoffOptions {
  /** First delay bound, ms (default 100). */
  baseMs?: number;
  /** Largest delay bound, ms (default 10000). */
  maxMs?: number;
  /** Growth per failure (default 2). */
  multiplier?: number;
}

export class Backoff {
  private failures = 0;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly multiplier: number;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 100;
    this.maxMs = options.maxMs ?? 10_000;
    this.multiplier = options.multiplier ?? 2;
  }

  /** The next delay: uniform in [0, min(max, base * multiplier^failures)]. */
  next(): number {
    const bound = Math.min(this.maxMs, this.baseMs * Math.pow(this.multiplier, this.failures));
    this.failures++;
    return Math.floor(Math.random() * bound);
  }

  reset(): void {
    this.failures = 0;
  }
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
