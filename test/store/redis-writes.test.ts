/**
 * The Redis store's commands of one turn of the event loop leave in one socket write
 * (RedisStore corks the connection until setImmediate): on the authorizer's decision route one
 * write per command was a fifth of the gate's CPU. Real redis-server of its own.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Socket } from 'node:net';
import { RedisStore } from '../../src/store/index.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

let redis: RedisServer;
let store: RedisStore;

beforeAll(async () => {
  redis = await startRedis();
  store = new RedisStore({ url: redis.url, timeoutMs: 2000 });
  await store.waitReady(10_000);
  await store.ping();
});
afterAll(async () => {
  await store.close();
  await redis.stop();
});

/** Counts the socket's writes to the kernel (Writable's _write and _writev) while `fn` runs. */
async function socketWrites(fn: () => Promise<unknown>): Promise<number> {
  const socket = (store.redis as unknown as { stream: Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void } }).stream;
  let n = 0;
  const [w, wv] = [socket._write, socket._writev];
  socket._write = function (...a: unknown[]) {
    n++;
    return w.apply(this, a);
  };
  socket._writev = function (...a: unknown[]) {
    n++;
    return wv.apply(this, a);
  };
  try {
    await fn();
  } finally {
    socket._write = w;
    socket._writev = wv;
  }
  return n;
}

it('twenty commands issued in one turn of the loop are one socket write, and all answer', async () => {
  const tag = `${process.pid}-${Date.now()}`;
  const results: boolean[] = [];
  const writes = await socketWrites(async () => {
    results.push(...(await Promise.all(Array.from({ length: 20 }, (_, i) => store.rememberOnce(`w:${tag}:${i % 10}`, 60_000)))));
  });
  expect(writes).toBe(1);
  // SET NX semantics are untouched by the batching: ten new keys, ten repeats.
  expect(results.filter(Boolean)).toHaveLength(10);
});

it('commands of separate turns are written separately (nothing waits beyond its turn)', async () => {
  const tag = `${process.pid}-${Date.now()}`;
  const writes = await socketWrites(async () => {
    await store.rememberOnce(`s:${tag}:1`, 60_000);
    await store.rememberOnce(`s:${tag}:2`, 60_000);
  });
  expect(writes).toBe(2);
});

it('commands held for the batch when the connection drops are refused at once, and the store serves again after reconnecting', async () => {
  const tag = `${process.pid}-${Date.now()}`;
  const socket = (store.redis as unknown as { stream: Socket }).stream;
  const started = performance.now();
  const pending = Array.from({ length: 20 }, (_, i) => store.rememberOnce(`d:${tag}:${i}`, 60_000).then(() => 'answered', (e: { code?: string }) => e.code));
  socket.destroy();
  expect(await Promise.all(pending)).toEqual(Array(20).fill('store_unavailable'));
  expect(performance.now() - started).toBeLessThan(1_000);
  // ioredis reconnects by itself (retryStrategy); nothing of the old batch is held over.
  const deadline = Date.now() + 10_000;
  while (store.redis!.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const fresh = (store.redis as unknown as { stream: Socket }).stream;
  expect(fresh).not.toBe(socket);
  expect(fresh.writableCorked).toBe(0);
  expect(await store.rememberOnce(`d:${tag}:after`, 60_000)).toBe(true);
});
