/**
 * The audit writer's options and event type, checked before any file is touched.
 * @module
 */
import type { Checkpoint } from './format.js';

/**
 * One audit event. Pass ids, codes and thumbprints only (refusal `instance` id, `jti`, agent id,
 * certificate thumbprint): never certificate bodies, tokens or proofs. Values are copied when
 * recorded: strings cut at 1 KiB, at most 64 fields and 4 levels; a record still over 128 KiB
 * keeps only its name and size. Fields named `seq`, `ts`, `prev` or `mac` get a `_` prefix.
 */
export interface AuditEvent {
  /** Event name, `[A-Za-z0-9_.:-]{1,64}`; `audit.*` is reserved for the writer's own records. */
  event: string;
  [field: string]: unknown;
}

/** Options of {@link AuditLog.open}. */
export interface AuditOptions {
  /** The audit trail (`GATE_AUDIT_FILE`), created with mode 0600 if missing. One writing process per file. */
  file: string;
  /** Base64 HMAC key file (`GATE_AUDIT_KEY_FILE`). */
  keyFile: string;
  /** Checkpoint file; default `${file}.checkpoint`. */
  checkpointFile?: string;
  /** Queued records are written and fsynced at most this far apart (ms, default 200). */
  flushIntervalMs?: number;
  /** A checkpoint is written at most this far apart while records arrive (ms, default 10000). */
  checkpointIntervalMs?: number;
  /**
   * Records queued (not yet written) at most, default 100000. Beyond it `record` drops the event,
   * counts it in {@link AuditLog.dropped}, calls `onError` once per episode, and as soon as
   * there is room an `audit.overflow` record in the chain states how many were dropped and when.
   */
  maxQueue?: number;
  /** Called after each checkpoint is durable; log it, so a copy lives outside the audit files. */
  onCheckpoint?: (cp: Checkpoint) => void;
  /** Write failures (retried on the next tick), overflow and rewritten events. */
  onError?: (err: Error) => void;
  /** Clock for `ts` (Unix ms); default `Date.now`. */
  now?: () => number;
}

// Longer timer delays than this overflow and Node fires them after 1 ms instead.
const MAX_TIMER_MS = 2 ** 31 - 1;

function positiveInt(name: string, v: number | undefined, dflt: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new TypeError(`AuditOptions.${name} must be an integer from 1 to ${max}, got ${String(v)}`);
  return v;
}

/** Checks the options before any file is touched; throws TypeError naming the option. */
export function checkOptions(opts: AuditOptions): { maxQueue: number; flushIntervalMs: number; checkpointIntervalMs: number } {
  return {
    maxQueue: positiveInt('maxQueue', opts.maxQueue, 100_000),
    flushIntervalMs: positiveInt('flushIntervalMs', opts.flushIntervalMs, 200, MAX_TIMER_MS),
    checkpointIntervalMs: positiveInt('checkpointIntervalMs', opts.checkpointIntervalMs, 10_000, MAX_TIMER_MS),
  };
}
