/**
 * The six limits of PROTOCOL.md section 12, answered as 429 `rate_limited` with Retry-After
 * and the IETF RateLimit-Policy / RateLimit headers. Shared limits live in Redis through
 * rate-limiter-flexible, each with an in-memory insurance limiter so that a Redis outage does
 * not turn into "no limits"; the per-request proxy limit is batched (see batched.ts).
 * @module
 */
import type { Cluster, Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { GateError } from '../errors.js';
import type { GateMetrics, LabelOf } from '../metrics/index.js';
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
  /** Shared counters; without it every limit is per gate instance (memory store, dev). */
  redis?: Redis | Cluster;
  /** Shared counter for the batched proxy limit. */
  sink: (key: string, by: number, ttlMs: number) => Promise<number>;
  metrics: GateMetrics;
  /** Told when a certificate starts a failed-proof cooldown (for the operator registry). */
  onCooldown?: (thumbprint: string, untilMs: number) => void;
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

/** All limits of one gate. */
export class GateRateLimits {
  private readonly challengeIp: RateLimiterAbstract;
  private readonly challengeIdentityLimiter: RateLimiterAbstract;
  private readonly tokenIdentityLimiter: RateLimiterAbstract;
  private readonly failedProofs: RateLimiterAbstract;
  private readonly proxy: BatchedLimiter;
  private readonly refusals: BatchedLimiter;

  constructor(private readonly opts: RateLimitOptions) {
    const make = (prefix: string, spec: RateSpec, blockS = 0): RateLimiterAbstract => {
      const base = { keyPrefix: `ag:rl:${prefix}`, points: spec.points, duration: spec.durationS, blockDuration: blockS };
      const memory = new RateLimiterMemory(base);
      if (!opts.redis) return memory;
      return new RateLimiterRedis({ ...base, storeClient: opts.redis, insuranceLimiter: memory, rejectIfRedisNotReady: true });
    };
    this.challengeIp = make('cip', opts.challengeIp);
    this.challengeIdentityLimiter = make('cid', opts.challengeIdentity);
    this.tokenIdentityLimiter = make('tid', opts.tokenIdentity);
    // N-1 points: the Nth failure overflows the limiter, which then blocks the certificate
    // for S seconds counted from that Nth failure (section 12).
    this.failedProofs = make('fp', { points: opts.failedProofs.points - 1, durationS: opts.failedProofs.durationS }, opts.failedProofs.durationS);
    this.proxy = new BatchedLimiter({ ...opts.proxyIdentity, sink: opts.sink });
    // Batched like the proxy limit: a refusal is answered synchronously, and a store outage
    // still limits per gate. Its own key space, so refusals never spend the proxy budget.
    this.refusals = new BatchedLimiter({ ...opts.refusalIdentity, sink: (key, by, ttl) => opts.sink(`rf:${key}`, by, ttl) });
  }

  /** Consumes one point; resolves to the fraction of the limit now used. */
  private async consume(limiter: Limiter, rl: RateLimiterAbstract, spec: RateSpec, key: string): Promise<number> {
    try {
      const res = await rl.consume(key);
      return res.consumedPoints / spec.points;
    } catch (res) {
      if (res instanceof RateLimiterRes) {
        this.opts.metrics.rateLimited.inc({ limiter });
        throw rateLimited(limiter, spec, res.msBeforeNext);
      }
      // A store error with a broken insurance limiter: fail closed.
      throw new GateError('store_unavailable', { cause: res, headers: { 'retry-after': '1' } });
    }
  }

  /** 429 while the certificate is cooling down after repeated failed proofs. */
  async checkCooldown(thumbprint: string): Promise<void> {
    let res: RateLimiterRes | null;
    try {
      res = await this.failedProofs.get(thumbprint);
    } catch {
      res = null;
    }
    if (res && res.consumedPoints >= this.opts.failedProofs.points) {
      this.opts.metrics.rateLimited.inc({ limiter: 'failed_proof' });
      throw rateLimited('failed_proof', this.opts.failedProofs, res.msBeforeNext);
    }
  }

  /** Step 4 on `P/v1/challenge`: the certificate's challenge limit (checked before the address's). */
  async challengeIdentity(thumbprint: string): Promise<void> {
    await this.consume('challenge_identity', this.challengeIdentityLimiter, this.opts.challengeIdentity, thumbprint);
  }

  /** Step 4 on `P/v1/challenge`: the address's limit; resolves to the share of it in use. */
  challengeAddress(address: string): Promise<number> {
    return this.consume('challenge_ip', this.challengeIp, this.opts.challengeIp, address);
  }

  /** Step 4 on `P/v1/token` (after {@link checkCooldown}). */
  async tokenIdentity(thumbprint: string): Promise<void> {
    await this.consume('token_identity', this.tokenIdentityLimiter, this.opts.tokenIdentity, thumbprint);
  }

  /** Counts a refusal at steps 9-11 against the certificate. */
  async failedProof(thumbprint: string): Promise<void> {
    try {
      await this.failedProofs.consume(thumbprint);
    } catch (res) {
      // Rejected means this failure was the Nth: the certificate is now blocked.
      if (res instanceof RateLimiterRes) this.opts.onCooldown?.(thumbprint, Date.now() + res.msBeforeNext);
    }
  }

  /** Clears a certificate's cooldown (admin action). */
  async clearCooldown(thumbprint: string): Promise<void> {
    await this.failedProofs.delete(thumbprint);
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
