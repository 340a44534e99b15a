/**
 * The six limits of PROTOCOL.md section 12, answered as 429 `rate_limited` with Retry-After
 * and the IETF RateLimit-Policy / RateLimit headers. The limits of one step (a cooldown, then
 * the step's limits, in the contract's order) are fixed-window counters spent in one store round
 * trip (store/windows.ts: a Lua script on Redis), with a per-gate copy of the same counters
 * that answers while the store is unreachable, so an outage never turns into "no limits". The
 * per-request proxy limit and the refusal limit are batched (see batched.ts).
 *
 * rate-limiter-flexible, used before, spends one store command per limiter (and a MULTI for a
 * read), with no way to run a step's limits together; on a small machine each command's socket
 * write cost more CPU than the rest of the limiter.
 * @module
 */
import { GateError } from '../errors.js';
import type { GateMetrics, LabelOf } from '../metrics/index.js';
import { MemoryWindows, type GateStore, type WindowOp } from '../store/index.js';
import { BatchedLimiter } from './batched.js';

/** N requests per S seconds. */
export interface RateSpec {
  points: number;
  durationS: number;
}

/** Options of {@link GateRateLimits}. */
export interface RateLimitOptions {
  challengeIp: RateSpec;
  challengeIdentity: RateSpec;
  tokenIdentity: RateSpec;
  proxyIdentity: RateSpec;
  failedProofs: RateSpec;
  /** Client-caused refusals (4xx) per certificate, before any refusal record is written. */
  refusalIdentity: RateSpec;
  /** The shared counters (Redis, or the memory store in dev). */
  store: Pick<GateStore, 'countStep' | 'deleteValue'>;
  /** Most counters the per-gate fallback holds while the store is unreachable. */
  fallbackKeys?: number;
  /** Shared counter for the batched proxy limit. */
  sink: (key: string, by: number, ttlMs: number) => Promise<number>;
  metrics: GateMetrics;
  /** Told when a certificate starts a failed-proof cooldown (for the operator registry). */
  onCooldown?: (thumbprint: string, untilMs: number) => void;
  /** The gate's clock (windows of the batched limits and the fallback counters). */
  now?: () => number;
}

type Limiter = LabelOf<'limiter'>;

/** The 429 for `limiter`, with the draft-ietf-httpapi-ratelimit-headers fields. */
export function rateLimited(limiter: Limiter, spec: RateSpec, msBeforeNext: number): GateError {
  const reset = Math.max(1, Math.ceil(msBeforeNext / 1000));
  return new GateError('rate_limited', {
    detail: `${limiter} limit ${spec.points}/${spec.durationS}s`,
    // A failed-proof cooldown is its own log event (what an appeal is usually about).
    reason: limiter === 'failed_proof' ? 'failed_proof_cooldown' : undefined,
    headers: {
      'retry-after': String(reset),
      'ratelimit-policy': `"${limiter}";q=${spec.points};w=${spec.durationS}`,
      ratelimit: `"${limiter}";r=0;t=${reset}`,
    },
  });
}

/** A counter of step 4 (section 4): the failed-proof cooldown (read only) or a limit that is spent. */
export type StepLimit = 'cooldown' | 'challenge_identity' | 'challenge_ip' | 'token_identity';

/** One counter of a step, for one certificate thumbprint or client address. */
export interface StepCounter {
  limit: StepLimit;
  key: string;
}

const PREFIX: Record<StepLimit, string> = { cooldown: 'fp', challenge_identity: 'cid', challenge_ip: 'cip', token_identity: 'tid' };

/**
 * The store key of a counter: the hash tag is the thumbprint or address, so every counter of one
 * certificate shares a Redis Cluster slot and a step keyed by it stays one round trip there.
 */
export function counterKey(limit: StepLimit, key: string): string {
  return `ag:rl:{${key}}:${PREFIX[limit]}`;
}

/** All limits of one gate. */
export class GateRateLimits {
  private readonly fallback: MemoryWindows;
  private readonly proxy: BatchedLimiter;
  private readonly refusals: BatchedLimiter;
  private readonly now: () => number;

  constructor(private readonly opts: RateLimitOptions) {
    const now = opts.now ?? Date.now;
    this.now = now;
    this.fallback = new MemoryWindows({ maxKeys: opts.fallbackKeys ?? 100_000, now });
    this.proxy = new BatchedLimiter({ ...opts.proxyIdentity, sink: opts.sink, now });
    // Batched like the proxy limit: a refusal is answered synchronously, and a store outage
    // still limits per gate. Its own key space, so refusals never spend the proxy budget.
    this.refusals = new BatchedLimiter({ ...opts.refusalIdentity, sink: (key, by, ttl) => opts.sink(`rf:${key}`, by, ttl), now });
  }

  private spec(limit: StepLimit): RateSpec {
    switch (limit) {
      case 'cooldown':
        return this.opts.failedProofs;
      case 'challenge_identity':
        return this.opts.challengeIdentity;
      case 'challenge_ip':
        return this.opts.challengeIp;
      case 'token_identity':
        return this.opts.tokenIdentity;
    }
  }

  /**
   * Step 4: reads or spends `counters` in order, in one store round trip; rejects with the 429
   * of the first that refuses (the ones after it are not spent). Resolves to the share of each
   * counter's limit now in use.
   */
  async step(counters: readonly StepCounter[]): Promise<number[]> {
    const ops: WindowOp[] = counters.map(({ limit, key }) => {
      const spec = this.spec(limit);
      return { kind: limit === 'cooldown' ? 'check' : 'count', key: counterKey(limit, key), points: spec.points, windowMs: spec.durationS * 1000 };
    });
    const out = await this.run(ops);
    if (out.refused >= 0) {
      const limit = counters[out.refused]!.limit;
      const label: Limiter = limit === 'cooldown' ? 'failed_proof' : limit;
      this.opts.metrics.rateLimited.inc({ limiter: label });
      throw rateLimited(label, this.spec(limit), out.msLeft);
    }
    return out.counts.map((c, i) => c / ops[i]!.points);
  }

  /** Counts a refusal at steps 9-11 against the certificate; the Nth within S starts its cooldown. */
  async failedProof(thumbprint: string): Promise<void> {
    const spec = this.opts.failedProofs;
    const out = await this.run([{ kind: 'fail', key: counterKey('cooldown', thumbprint), points: spec.points, windowMs: spec.durationS * 1000 }]);
    if (out.refused >= 0) this.opts.onCooldown?.(thumbprint, this.now() + out.msLeft);
  }

  /** Clears a certificate's cooldown (admin action). */
  async clearCooldown(thumbprint: string): Promise<void> {
    const key = counterKey('cooldown', thumbprint);
    this.fallback.delete(key);
    await this.opts.store.deleteValue(key);
  }

  /**
   * The shared counters, or this gate's own while the store is unreachable (fail closed: they
   * still limit). Anything else thrown is a bug and reaches the caller (500 `internal_error`).
   */
  private async run(ops: WindowOp[]) {
    try {
      return await this.opts.store.countStep(ops);
    } catch (err) {
      if (err instanceof GateError && err.code === 'store_unavailable') return this.fallback.step(ops);
      throw err;
    }
  }

  /** The gated-request limit: synchronous, no store round trip. */
  proxyRequest(thumbprint: string): void {
    const r = this.proxy.take(thumbprint);
    if (!r.ok) {
      this.opts.metrics.rateLimited.inc({ limiter: 'proxy_identity' });
      throw rateLimited('proxy_identity', this.opts.proxyIdentity, r.msBeforeNext);
    }
  }

  /**
   * Counts one client-caused refusal of the certificate; over `GATE_RATE_REFUSAL_IDENTITY` it
   * returns the 429 to answer instead (synchronous, no store round trip).
   */
  refusal(thumbprint: string): GateError | undefined {
    const r = this.refusals.take(thumbprint);
    if (r.ok) return undefined;
    this.opts.metrics.rateLimited.inc({ limiter: 'refusal_identity' });
    return rateLimited('refusal_identity', this.opts.refusalIdentity, r.msBeforeNext);
  }
}
