/**
 * The rate-limit step (store/windows.ts, ratelimit/limits.ts): the Lua script on a real
 * redis-server and the in-memory counters agree on every sequence of steps (fast-check, the one
 * implementation the other's oracle), a refused counter ends its step without spending the ones
 * after it, a step is one round trip, and an unreachable store still limits per gate.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createMetrics } from '../../src/metrics/index.js';
import { GateRateLimits, counterKey, type RateSpec } from '../../src/ratelimit/index.js';
import { MemoryStore, MemoryWindows, RedisStore, type WindowOp } from '../../src/store/index.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

let store: RedisStore;
let run = 0;

beforeAll(async () => {
  store = new RedisStore({ url: inject('redisUrl'), timeoutMs: 2000 });
  await store.waitReady(10_000);
  await store.ping();
});
afterAll(async () => {
  await store.close();
});

/** Keys unique to one run, so runs and test files never share counters. */
const ns = () => `t${process.pid}-${Date.now()}-${run++}`;

describe('the step script and the memory counters agree', () => {
  it('on random steps of check / count / fail over a few keys (windows far longer than the run)', async () => {
    const op = fc.record({
      kind: fc.constantFrom('check' as const, 'count' as const, 'fail' as const),
      key: fc.constantFrom('a', 'b', 'c'),
      points: fc.integer({ min: 1, max: 4 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 12 }), async (steps) => {
        const prefix = ns();
        const memory = new MemoryWindows({ maxKeys: 100 });
        for (const step of steps) {
          const ops: WindowOp[] = step.map((o) => ({ ...o, key: `ag:test:{${prefix}}:${o.key}`, windowMs: 600_000 }));
          const [r, m] = [await store.countStep(ops), memory.step(ops)];
          expect({ refused: r.refused, counts: r.counts }).toEqual({ refused: m.refused, counts: m.counts });
          if (r.refused >= 0) {
            // Time left: the window (or cooldown) of the refused counter, within the run's time.
            expect(r.msLeft).toBeGreaterThan(590_000);
            expect(m.msLeft).toBeGreaterThan(590_000);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('every counter the script writes expires (fixed window, cooldown from the failure that reached it)', async () => {
    const k = `ag:test:{${ns()}}`;
    const out = await store.countStep([
      { kind: 'count', key: `${k}:n`, points: 5, windowMs: 5000 },
      { kind: 'fail', key: `${k}:f`, points: 1, windowMs: 7000 },
    ]);
    expect(out).toMatchObject({ refused: 1, msLeft: 7000, counts: [1, 1] });
    const ttl = (key: string) => store.redis!.pttl(key);
    expect(await ttl(`${k}:n`)).toBeGreaterThan(4000);
    expect(await ttl(`${k}:n`)).toBeLessThanOrEqual(5000);
    expect(await ttl(`${k}:f`)).toBeGreaterThan(6000);
    // A counter left without an expiry (written by hand) gets the window on its next count.
    await store.redis!.set(`${k}:bare`, '3');
    await store.countStep([{ kind: 'count', key: `${k}:bare`, points: 10, windowMs: 9000 }]);
    expect(await ttl(`${k}:bare`)).toBeGreaterThan(8000);
  });
});

describe('GateRateLimits.step', () => {
  const spec: RateSpec = { points: 2, durationS: 60 };
  const make = (s: { countStep: RedisStore['countStep']; deleteValue: RedisStore['deleteValue'] }, onCooldown?: (thumbprint: string) => void) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const limits = new GateRateLimits({ challengeIp: { points: 3, durationS: 60 }, challengeIdentity: spec, tokenIdentity: spec, proxyIdentity: spec, failedProofs: spec, refusalIdentity: spec, store: s, sink: (_k, by) => Promise.resolve(by), metrics, onCooldown });
    return { metrics, limits };
  };

  it('one round trip for the challenge step; the identity refusal leaves the address budget unspent', async () => {
    let calls = 0;
    const counting = { countStep: (ops: readonly WindowOp[]) => (calls++, store.countStep(ops)), deleteValue: (k: string) => store.deleteValue(k) };
    const { limits, metrics } = make(counting);
    const [tp, addr] = [ns(), `10.${run}.0.1`];
    const step = () => limits.step([{ limit: 'cooldown', key: tp }, { limit: 'challenge_identity', key: tp }, { limit: 'challenge_ip', key: addr }]);
    expect(await step()).toEqual([0, 0.5, 1 / 3]);
    expect(await step()).toEqual([0, 1, 2 / 3]);
    expect(calls).toBe(2);
    const err = await step().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'rate_limited', status: 429, headers: { 'ratelimit-policy': '"challenge_identity";q=2;w=60' } });
    expect(Number((err as { headers: Record<string, string> }).headers['retry-after'])).toBeGreaterThan(55);
    expect(await store.redis!.get(counterKey('challenge_ip', addr))).toBe('2');
    expect((await metrics.registry.getSingleMetricAsString('agent_gate_rate_limited_total'))).toContain('limiter="challenge_identity"} 1');
  });

  it('failed proofs start a cooldown the step refuses, until an operator clears it', async () => {
    const tp = ns();
    const cooled: string[] = [];
    const { limits: l2 } = make(store, (t) => cooled.push(t));
    await l2.failedProof(tp);
    expect(await l2.step([{ limit: 'cooldown', key: tp }])).toEqual([0.5]);
    await l2.failedProof(tp);
    expect(cooled).toEqual([tp]);
    await expect(l2.step([{ limit: 'cooldown', key: tp }, { limit: 'token_identity', key: tp }])).rejects.toMatchObject({ code: 'rate_limited', reason: 'failed_proof_cooldown' });
    // The refused cooldown spent nothing after it.
    expect(await store.redis!.get(counterKey('token_identity', tp))).toBeNull();
    await l2.clearCooldown(tp);
    expect(await l2.step([{ limit: 'cooldown', key: tp }, { limit: 'token_identity', key: tp }])).toEqual([0, 0.5]);
  });

  it('with the store down, the per-gate counters still limit (no "no limits" during an outage)', async () => {
    const redis: RedisServer = await startRedis();
    const down = new RedisStore({ url: redis.url, timeoutMs: 300 });
    try {
      await down.waitReady(10_000);
      await down.ping();
      await redis.stop();
      const { limits } = make(down);
      const tp = ns();
      expect(await limits.step([{ limit: 'token_identity', key: tp }])).toEqual([0.5]);
      expect(await limits.step([{ limit: 'token_identity', key: tp }])).toEqual([1]);
      await expect(limits.step([{ limit: 'token_identity', key: tp }])).rejects.toMatchObject({ code: 'rate_limited' });
    } finally {
      await down.close();
      await redis.stop().catch(() => {});
    }
  });

  it('the memory store keeps the same counters, bounded', async () => {
    const mem = new MemoryStore(3);
    const { limits } = make(mem);
    for (const tp of ['a', 'b', 'c', 'd']) expect(await limits.step([{ limit: 'token_identity', key: tp }])).toEqual([0.5]);
    // Four counters in a store of three: the oldest was dropped, the newest is kept.
    expect(await limits.step([{ limit: 'token_identity', key: 'd' }])).toEqual([1]);
    expect(await limits.step([{ limit: 'token_identity', key: 'a' }])).toEqual([0.5]);
    await mem.close();
  });
});
