/**
 * The challenge store contract (PROTOCOL.md sections 3, 4 step 8 and 12) against both
 * implementations: MemoryStore and RedisStore on the shared real redis-server.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GateError } from '../../src/errors.js';
import { MemoryStore, RedisStore, type ChallengeRecord, type ConsumeResult, type GateStore } from '../../src/store/index.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const newId = () => randomBytes(16).toString('base64url');

function record(extra: Partial<ChallengeRecord> = {}): ChallengeRecord {
  const issuedAt = Date.now();
  return {
    nonce: randomBytes(32).toString('base64url'),
    aud: 'agent-gate',
    issuedAt,
    expiresAt: issuedAt + 3000,
    thumbprint: randomBytes(32).toString('base64url'),
    powDifficulty: 0,
    ...extra,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` until it yields `want`, failing after `timeoutMs`; returns every value seen before. */
async function pollUntil<T>(f: () => Promise<T>, want: T, timeoutMs: number): Promise<T[]> {
  const seen: T[] = [];
  await waitFor(
    async () => {
      const v = await f();
      if (v === want) return true;
      seen.push(v);
      return false;
    },
    timeoutMs,
    `value ${String(want)}`,
    20,
  );
  return seen;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

const TTL = 200;

interface Impl {
  name: string;
  make(): GateStore;
}

const stores: GateStore[] = [];
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
});

const impls: Impl[] = [
  { name: 'MemoryStore', make: () => new MemoryStore(10_000) },
  { name: 'RedisStore', make: () => new RedisStore({ url: inject('redisUrl'), timeoutMs: 2000 }) },
];

for (const impl of impls) {
  describe(impl.name, () => {
    let store: GateStore;
    beforeAll(async () => {
      store = impl.make();
      stores.push(store);
      // The Redis client connects asynchronously and does not queue offline commands.
      await waitFor(async () => (await store.ping(), true), 10_000, 'store ping');
    });

    it('putChallenge is SET NX: a second put of the same id returns false and does not overwrite', async () => {
      const id = newId();
      const first = record();
      expect(await store.putChallenge(id, first, 5000)).toBe(true);
      expect(await store.putChallenge(id, record({ nonce: 'other' }), 5000)).toBe(false);
      const r = await store.consumeChallenge(id, 5000);
      expect(r).toEqual({ status: 'consumed', record: first });
    });

    it('consume returns the record once, then replayed', async () => {
      const id = newId();
      const rec = record();
      await store.putChallenge(id, rec, 5000);
      expect(await store.consumeChallenge(id, 5000)).toEqual({ status: 'consumed', record: rec });
      expect(await store.consumeChallenge(id, 5000)).toEqual({ status: 'replayed' });
      expect(await store.consumeChallenge(id, 5000)).toEqual({ status: 'replayed' });
    });

    it('an unknown id is unknown', async () => {
      expect(await store.consumeChallenge(newId(), 5000)).toEqual({ status: 'unknown' });
    });

    it('the tombstone lasts its TTL, then the id is unknown', async () => {
      const id = newId();
      await store.putChallenge(id, record(), 5000);
      const consumedAt = Date.now();
      expect((await store.consumeChallenge(id, TTL)).status).toBe('consumed');
      const before = await pollUntil(async () => (await store.consumeChallenge(id, TTL)).status, 'unknown', 3000);
      const elapsed = Date.now() - consumedAt;
      // Until it expired, every answer was replayed; and it did not expire early.
      expect(new Set(before)).toEqual(new Set(['replayed']));
      expect(elapsed).toBeGreaterThanOrEqual(TTL - 5);
    });

    it('a challenge expires after its TTL', async () => {
      const id = newId();
      await store.putChallenge(id, record(), TTL);
      await sleep(TTL + 20);
      expect(await store.consumeChallenge(id, 5000)).toEqual({ status: 'unknown' });
      // The id is free again.
      expect(await store.putChallenge(id, record(), 5000)).toBe(true);
    });

    it('rememberOnce: true the first time, false while remembered, true again after its TTL', async () => {
      const key = `fwd-${newId()}`;
      expect(await store.rememberOnce(key, TTL)).toBe(true);
      expect(await store.rememberOnce(key, TTL)).toBe(false);
      const before = await pollUntil(() => store.rememberOnce(key, TTL), true, 3000);
      expect(new Set(before)).toEqual(new Set([false]));
      expect(await store.rememberOnce(key, TTL)).toBe(false);
      // Independent of challenge ids.
      const id = newId();
      expect(await store.rememberOnce(id, 5000)).toBe(true);
      expect(await store.putChallenge(id, record(), 5000)).toBe(true);
    });

    it('ping resolves', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}

describe('RedisStore on a real redis-server', () => {
  let raw: Redis;
  let a: RedisStore;
  let b: RedisStore;
  beforeAll(async () => {
    raw = new Redis(inject('redisUrl'));
    a = new RedisStore({ url: inject('redisUrl'), timeoutMs: 2000 });
    b = new RedisStore({ url: inject('redisUrl'), timeoutMs: 2000 });
    stores.push(a, b);
    await waitFor(async () => (await a.ping(), await b.ping(), true), 10_000, 'redis ping');
  });
  afterAll(async () => {
    raw?.disconnect();
  });

  it('keys are ag:{<id>}:ch and ag:{<id>}:used, with PTTL within the given TTL', async () => {
    const id = newId();
    const rec = record();
    await a.putChallenge(id, rec, 5000);
    expect(await raw.exists(`ag:{${id}}:ch`)).toBe(1);
    expect(JSON.parse((await raw.get(`ag:{${id}}:ch`))!)).toEqual(rec);
    const pttlCh = await raw.pttl(`ag:{${id}}:ch`);
    expect(pttlCh).toBeGreaterThan(0);
    expect(pttlCh).toBeLessThanOrEqual(5000);
    expect(await raw.exists(`ag:{${id}}:used`)).toBe(0);

    expect((await a.consumeChallenge(id, 7000)).status).toBe('consumed');
    expect(await raw.exists(`ag:{${id}}:ch`)).toBe(0);
    expect(await raw.exists(`ag:{${id}}:used`)).toBe(1);
    const pttlUsed = await raw.pttl(`ag:{${id}}:used`);
    expect(pttlUsed).toBeGreaterThan(0);
    expect(pttlUsed).toBeLessThanOrEqual(7000);
    // Nothing else was written for this id.
    expect((await raw.keys(`*${id}*`)).sort()).toEqual([`ag:{${id}}:used`]);
  });

  it('rememberOnce uses SET NX PX under the ag: prefix, with PTTL within the given TTL', async () => {
    const key = newId();
    expect(await a.rememberOnce(key, 4000)).toBe(true);
    const found = await raw.keys(`ag:*${key}*`);
    expect(found).toHaveLength(1);
    const pttl = await raw.pttl(found[0]!);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(4000);
    expect(await b.rememberOnce(key, 4000)).toBe(false);
  });

  it('a challenge written by one instance is seen by another (shared store)', async () => {
    const id = newId();
    const rec = record();
    await a.putChallenge(id, rec, 5000);
    expect(await b.putChallenge(id, record(), 5000)).toBe(false);
    expect(await b.consumeChallenge(id, 5000)).toEqual({ status: 'consumed', record: rec });
    expect(await a.consumeChallenge(id, 5000)).toEqual({ status: 'replayed' });
  });

  it('500 concurrent consumes of one id on two instances: exactly one consumed', async () => {
    const id = newId();
    const rec = record();
    await a.putChallenge(id, rec, 10_000);
    const results: ConsumeResult[] = await Promise.all(Array.from({ length: 500 }, (_, i) => (i % 2 === 0 ? a : b).consumeChallenge(id, 10_000)));
    const consumed = results.filter((r) => r.status === 'consumed');
    expect(consumed).toHaveLength(1);
    expect(consumed[0]).toEqual({ status: 'consumed', record: rec });
    expect(results.filter((r) => r.status === 'replayed')).toHaveLength(499);
  });
});

describe('RedisStore when Redis is not there', () => {
  const timeoutMs = 300;

  it('against a port where nothing listens: store_unavailable within ~2x timeoutMs, not hanging', async () => {
    const port = await freePort();
    const errors: unknown[] = [];
    const s = new RedisStore({ url: `redis://127.0.0.1:${port}`, timeoutMs, onError: (e) => errors.push(e) });
    stores.push(s);
    for (const op of [() => s.putChallenge(newId(), record(), 1000), () => s.consumeChallenge(newId(), 1000), () => s.rememberOnce(newId(), 1000), () => s.ping()]) {
      const started = Date.now();
      const err = await rejection(op());
      expect(Date.now() - started).toBeLessThan(2 * timeoutMs);
      expect(err).toBeInstanceOf(GateError);
      expect(err).toMatchObject({ code: 'store_unavailable', status: 503 });
      expect((err as GateError).headers['retry-after']).toBeDefined();
    }
    expect(errors.length).toBeGreaterThan(0);
  });

  it('against a server that accepts but never answers: store_unavailable within ~2x timeoutMs', async () => {
    const sockets: Socket[] = [];
    const srv: Server = createServer((sock) => {
      sockets.push(sock);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const addr = srv.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const s = new RedisStore({ url: `redis://127.0.0.1:${port}`, timeoutMs });
    try {
      // Both right away and once the TCP connection is surely up.
      for (const wait of [0, 100]) {
        await sleep(wait);
        const started = Date.now();
        const err = await rejection(s.putChallenge(newId(), record(), 1000));
        expect(Date.now() - started).toBeLessThan(2 * timeoutMs);
        expect(err).toMatchObject({ code: 'store_unavailable' });
      }
    } finally {
      await s.close();
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('serves again by itself once Redis is back (private redis-server)', async () => {
    const redis: RedisServer = await startRedis();
    const s = new RedisStore({ url: redis.url, timeoutMs });
    try {
      await waitFor(async () => (await s.ping(), true), 10_000, 'redis up');
      await redis.stop();
      await waitFor(async () => (await rejection(s.ping())) instanceof GateError, 5000, 'store_unavailable while redis is down');
      await redis.start();
      await waitFor(async () => (await s.ping(), true), 10_000, 'store serving again');
      const id = newId();
      expect(await s.putChallenge(id, record(), 5000)).toBe(true);
      expect((await s.consumeChallenge(id, 5000)).status).toBe('consumed');
    } finally {
      await s.close();
      await redis.stop();
    }
  });
});

describe('MemoryStore bounds', () => {
  it('refuses (store_unavailable) when full of live entries, accepts again after they expire', async () => {
    let now = 1_000_000;
    const s = new MemoryStore(3, () => now);
    stores.push(s);
    const ids = [newId(), newId(), newId()];
    for (const id of ids) expect(await s.putChallenge(id, record(), 1000)).toBe(true);
    expect(s.size).toBe(3);

    const err = await rejection(s.putChallenge(newId(), record(), 1000));
    expect(err).toBeInstanceOf(GateError);
    expect(err).toMatchObject({ code: 'store_unavailable', status: 503 });
    await expect(s.rememberOnce('k', 1000)).rejects.toMatchObject({ code: 'store_unavailable' });
    // A live entry was never evicted to make room.
    expect(s.size).toBe(3);

    // Consuming still works when full (the tombstone replaces the freed challenge) and
    // replays are still detected.
    expect((await s.consumeChallenge(ids[0]!, 1000)).status).toBe('consumed');
    expect((await s.consumeChallenge(ids[0]!, 1000)).status).toBe('replayed');
    await expect(s.putChallenge(newId(), record(), 1000)).rejects.toMatchObject({ code: 'store_unavailable' });

    now += 1001;
    expect(await s.putChallenge(newId(), record(), 1000)).toBe(true);
    expect(await s.rememberOnce('k', 1000)).toBe(true);
    expect((await s.consumeChallenge(ids[0]!, 1000)).status).toBe('unknown');
  });

  it('with a real clock: full until the entries expire, then accepts again', async () => {
    const s = new MemoryStore(2);
    stores.push(s);
    await s.putChallenge(newId(), record(), TTL);
    await s.rememberOnce(newId(), TTL);
    await expect(s.putChallenge(newId(), record(), TTL)).rejects.toMatchObject({ code: 'store_unavailable' });
    await waitFor(
      async () => {
        try {
          return await s.putChallenge(newId(), record(), 5000);
        } catch (err) {
          if ((err as GateError).code === 'store_unavailable') return false;
          throw err;
        }
      },
      3000,
      'memory store accepting again',
    );
  });

  it('close() clears entries', async () => {
    const s = new MemoryStore(10);
    await s.putChallenge(newId(), record(), 5000);
    await s.close();
    expect(s.size).toBe(0);
  });
});
