import type { Cluster, Redis } from 'ioredis';
import type { RecordOps } from './records.js';
import type { StepOutcome, WindowOp } from './windows.js';

/** What the gate remembers about an issued challenge (PROTOCOL.md section 3). */
export interface ChallengeRecord {
  /** The 256-bit nonce, base64url. */
  nonce: string;
  /** The audience the proof must name. */
  aud: string;
  /** Unix milliseconds. */
  issuedAt: number;
  /** Unix milliseconds; a proof is on time when its request headers arrived at or before this. */
  expiresAt: number;
  /** Thumbprint of the certificate that asked for the challenge. */
  thumbprint: string;
  /** Proof-of-work difficulty demanded, 0 when none. */
  powDifficulty: number;
}

/** Result of the atomic consume of step 8 of section 4. */
export type ConsumeResult =
  | { status: 'consumed'; record: ChallengeRecord }
  | { status: 'replayed' }
  | { status: 'unknown' };

/**
 * The gate's shared state. Every implementation keeps the contract's atomicity: a challenge
 * is written only if absent, and consumed at most once across all gates sharing the store.
 * Failures throw `GateError('store_unavailable')`.
 */
export interface GateStore extends RecordOps {
  /** `SET ag:{id}:ch record NX PX ttl`; false when the id already exists (a collision). */
  putChallenge(id: string, record: ChallengeRecord, ttlMs: number): Promise<boolean>;
  /** Deletes the challenge and leaves a tombstone for `tombstoneTtlMs`, atomically. */
  consumeChallenge(id: string, tombstoneTtlMs: number): Promise<ConsumeResult>;
  /** Remembers `key` for `ttlMs` if it is new (`SET NX PX`); false when already seen. */
  rememberOnce(key: string, ttlMs: number): Promise<boolean>;
  /**
   * Adds `by` to the counter `key` (created with a `ttlMs` lifetime) and returns the new
   * total: the shared half of the batched proxy rate limit.
   */
  incrementWindow(key: string, by: number, ttlMs: number): Promise<number>;
  /**
   * Runs one step's rate-limit counters in order (see windows.ts), in one round trip (one per
   * hash tag on a Redis Cluster); the first refusal ends the step.
   */
  countStep(ops: readonly WindowOp[]): Promise<StepOutcome>;
  /** The Redis client, when the store is Redis (tests and tooling read it; the gate goes through this interface). */
  readonly redis?: Redis | Cluster;
  /** Resolves when the store answers. */
  ping(): Promise<void>;
  /** Resolves once connected, or after `timeoutMs` at the latest (never rejects). */
  waitReady?(timeoutMs: number): Promise<void>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

/** Redis keys. The `{id}` hash tag keeps a challenge and its tombstone in one cluster slot. */
export const keys = {
  challenge: (id: string) => `ag:{${id}}:ch`,
  tombstone: (id: string) => `ag:{${id}}:used`,
  once: (key: string) => `ag:once:{${key}}`,
  counter: (key: string) => `ag:rl:{${key}}`,
};
