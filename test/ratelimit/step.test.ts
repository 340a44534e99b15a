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

describe('the failed-proof cooldown', () => {
  const fail = (key: string): WindowOp[] => [{ kind: 'fail', key, points: 3, windowMs: 10_000 }];

  it('on Redis: lasts S from the Nth failure; a later failure neither extends nor reports it', async () => {
    const key = `ag:test:{${ns()}}:fp`;
    expect((await store.countStep(fail(key))).refused).toBe(-1);
    await new Promise((r) => setTimeout(r, 400));
    expect((await store.countStep(fail(key))).refused).toBe(-1);
    await new Promise((r) => setTimeout(r, 400));
    // The third failure: the cooldown restarts at 10 s, not 10 s from the first failure (~9.2 s).
    expect(await store.countStep(fail(key))).toMatchObject({ refused: 0, msLeft: 10_000 });
    expect(await store.redis!.pttl(key)).toBeGreaterThan(9_700);
    await new Promise((r) => setTimeout(r, 400));
    expect(await store.countStep(fail(key))).toMatchObject({ refused: -1, counts: [4] });
    expect(await store.redis!.pttl(key)).toBeLessThan(9_700);
    // The cooldown reads its remaining time.
    const check = await store.countStep([{ kind: 'check', key, points: 3, windowMs: 10_000 }]);
    expect(check.refused).toBe(0);
    expect(check.msLeft).toBeLessThan(9_700);
    expect(check.msLeft).toBeGreaterThan(8_000);
  });

  it('in memory: the same, on a clock the test moves', () => {
    let now = 1_000_000;
    const w = new MemoryWindows({ maxKeys: 10, now: () => now });
    w.step(fail('k'));
    now += 4_000;
    w.step(fail('k'));
    now += 4_000;
    expect(w.step(fail('k'))).toMatchObject({ refused: 0, msLeft: 10_000 });
    now += 9_000;
    expect(w.step(fail('k')).refused).toBe(-1);
    expect(w.step([{ kind: 'check', key: 'k', points: 3, windowMs: 10_000 }])).toMatchObject({ refused: 0, msLeft: 1_000 });
    now += 1_000;
    expect(w.step([{ kind: 'check', key: 'k', points: 3, windowMs: 10_000 }]).refused).toBe(-1);
  });

  it('in memory: a running cooldown is the last counter evicted when the map is full', () => {
    const w = new MemoryWindows({ maxKeys: 3 });
    w.step(fail('fp'));
    w.step(fail('fp'));
    w.step(fail('fp'));
    for (const k of ['a', 'b']) w.step([{ kind: 'count', key: k, points: 9, windowMs: 60_000 }]);
    w.step([{ kind: 'count', key: 'c', points: 9, windowMs: 60_000 }]);
    expect(w.step([{ kind: 'check', key: 'fp', points: 3, windowMs: 10_000 }]).refused).toBe(0);
  });

  it('a cooldown found without an expiry gets one (no counter blocks forever)', async () => {
    const key = `ag:test:{${ns()}}:fp`;
    await store.redis!.set(key, '5');
    expect((await store.countStep([{ kind: 'check', key, points: 3, windowMs: 10_000 }])).msLeft).toBe(10_000);
    expect(await store.redis!.pttl(key)).toBeGreaterThan(9_000);
  });
});

describe('GateRateLimits.step', () => {
  const spec: RateSpec = { points: 2, durationS: 60 };
  const make = (s: { countStep: RedisStore['countStep']; deleteValue: RedisStore['deleteValue'] }, onCooldown?: (thumbprint: string) => void) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const limits = new GateRateLimits({ challengeIp: { points: 3, durationS: 60 }, challengeIdentity: spec, tokenIdentity: spec, proxyIdentity: spec, failedProofs: spec, refusalIdentity: spec, store: s, sink: (_k, by) => Promise.resolve(by), metrics, onCooldown });
    return { metrics, limits };
  };

  it('one script call for the challenge step; the identity refusal leaves the address budget unspent', async () => {
    // A Redis of its own, so its command statistics count this test's commands only.
    const own = await startRedis();
    const mine = new RedisStore({ url: own.url, timeoutMs: 2000 });
    await mine.waitReady(10_000);
    const scripts = async () => {
      const stats = await mine.redis!.info('commandstats');
      return [...stats.matchAll(/^cmdstat_(eval|evalsha):calls=(\d+)/gm)].reduce((n, m) => n + Number(m[2]), 0);
    };
    const { limits, metrics } = make(mine);
    const [tp, addr] = [ns(), `10.${run}.0.1`];
    const step = () => limits.step([{ limit: 'cooldown', key: tp }, { limit: 'challenge_identity', key: tp }, { limit: 'challenge_ip', key: addr }]);
    try {
      expect(await step()).toEqual([0, 0.5, 1 / 3]);
      const before = await scripts();
      expect(await step()).toEqual([0, 1, 2 / 3]);
      expect((await scripts()) - before).toBe(1);
      const err = await step().catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'rate_limited', status: 429, headers: { 'ratelimit-policy': '"challenge_identity";q=2;w=60' } });
      expect(Number((err as { headers: Record<string, string> }).headers['retry-after'])).toBeGreaterThan(55);
      expect(await mine.redis!.get(counterKey('challenge_ip', addr))).toBe('2');
      expect(await metrics.registry.getSingleMetricAsString('agent_gate_rate_limited_total')).toContain('limiter="challenge_identity"} 1');
    } finally {
      await mine.close();
      await own.stop();
    }
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

  it('only a store outage falls back to the per-gate counters; any other error reaches the caller', async () => {
    const broken = { countStep: () => Promise.reject(new TypeError('unexpected reply')), deleteValue: () => Promise.resolve() };
    const { limits } = make(broken);
    await expect(limits.step([{ limit: 'token_identity', key: ns() }])).rejects.toBeInstanceOf(TypeError);
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
