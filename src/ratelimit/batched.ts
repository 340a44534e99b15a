/**
 * A shared fixed-window limit that costs no store round trip per request: each gate counts
 * locally and adds its count to the shared counter in batches. The shared total can overshoot
 * by (batch - 1) per gate instance plus what that gate admits while a write to the store is in
 * flight (its view of the total is as old as its last answer, so a gate new to a key admits
 * until its first write returns); when the store is down the local count still limits.
 * @module
 */

interface WindowState {
  window: number;
  /** Shared total as last seen (includes this gate's flushed counts). */
  shared: number;
  /** Counted here, being written to the store. */
  flushing: number;
  /** Counted here, not yet written. */
  pending: number;
}

/** Options of {@link BatchedLimiter}. */
export interface BatchedLimiterOptions {
  points: number;
  durationS: number;
  /** Adds `by` to the shared counter `key` (expiring after `ttlMs`) and returns the new total. */
  sink: (key: string, by: number, ttlMs: number) => Promise<number>;
  /** Most keys tracked at once; the oldest window states are dropped first. */
  maxKeys?: number;
  now?: () => number;
}

/** The outcome of one {@link BatchedLimiter.take}. */
export type TakeResult = { ok: true } | { ok: false; msBeforeNext: number };

/** Fixed-window limiter with batched synchronisation (see module doc). */
export class BatchedLimiter {
  private readonly states = new Map<string, WindowState>();
  private readonly durMs: number;
  private readonly batch: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(private readonly opts: BatchedLimiterOptions) {
    this.durMs = opts.durationS * 1000;
    // About 20 store writes per window per busy key, whatever the limit.
    this.batch = Math.max(1, Math.floor(opts.points / 20));
    this.maxKeys = opts.maxKeys ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  /** Counts one request for `key`; synchronous. */
  take(key: string): TakeResult {
    const now = this.now();
    const window = Math.floor(now / this.durMs);
    let s = this.states.get(key);
    if (!s || s.window !== window) {
      if (!s && this.states.size >= this.maxKeys) this.states.delete(this.states.keys().next().value!);
      s = { window, shared: 0, flushing: 0, pending: 0 };
      this.states.set(key, s);
    }
    if (s.shared + s.flushing + s.pending >= this.opts.points) return { ok: false, msBeforeNext: (window + 1) * this.durMs - now };
    s.pending++;
    if (s.flushing === 0 && (s.pending >= this.batch || s.shared === 0)) this.flush(key, s);
    return { ok: true };
  }

  private flush(key: string, s: WindowState): void {
    const n = s.pending;
    s.pending = 0;
    s.flushing += n;
    const ttl = this.durMs + 1000;
    this.opts.sink(`${key}:${s.window}`, n, ttl).then(
      (total) => {
        s.flushing -= n;
        s.shared = Math.max(s.shared + n, total);
      },
      () => {
        // Store unreachable: keep the count locally, so the limit still holds per gate.
        s.flushing -= n;
        s.shared += n;
      },
    );
  }
}
