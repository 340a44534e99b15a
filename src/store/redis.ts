import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { GateError } from '../errors.js';
import { keys, type ChallengeRecord, type ConsumeResult, type GateStore } from './types.js';
import { STEP_LUA, stepReply, type StepOutcome, type WindowOp } from './windows.js';

/**
 * Step 8 of section 4 in one script, so that of N concurrent consumers exactly one sees the
 * record: KEYS[1] challenge, KEYS[2] tombstone, ARGV[1] tombstone TTL (ms).
 * Returns {1, record} when consumed, {2} when a tombstone exists, {0} when unknown.
 */
const CONSUME_LUA = `
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return {1, v}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
return {0}
`;

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL of a single Redis. */
  url?: string;
  /** Cluster seed nodes, `host:port`. */
  clusterNodes?: string[];
  /** Per-command timeout; a slower answer is `store_unavailable`. */
  timeoutMs: number;
  /** Called on every store error, for metrics and logs. */
  onError?: (err: unknown) => void;
}

/** INCRBY that sets the expiry only when it created the key: KEYS[1], ARGV[1] by, ARGV[2] ttl ms. */
const INCR_WINDOW_LUA = `
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
`;

/** KEYS[1] list, ARGV[1] member, ARGV[2] cap, ARGV[3] ttl ms: one key, so it is cluster-safe. */
const PUSH_CAPPED_LUA = `
local n = redis.call('LPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
local dropped = {}
if n > cap then
  dropped = redis.call('LRANGE', KEYS[1], cap, -1)
  redis.call('LTRIM', KEYS[1], 0, cap - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return dropped
`;

type Client = (Redis | Cluster) & {
  agConsume(k1: string, k2: string, ttl: string): Promise<[number, string?]>;
  agIncrWindow(k: string, by: string, ttl: string): Promise<number>;
  agPushCapped(k: string, member: string, cap: string, ttl: string): Promise<string[]>;
  agStep(numKeys: number, ...keysThenArgs: string[]): Promise<number[]>;
};

/** The hash tag of a key (the part Redis Cluster hashes): `{...}` when non-empty, else the key. */
function hashTag(key: string): string {
  const open = key.indexOf('{');
  const close = open < 0 ? -1 : key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/** Redis or Redis Cluster store (ioredis). */
export class RedisStore implements GateStore {
  private readonly client: Client;


  constructor(private readonly opts: RedisStoreOptions) {
    const common: RedisOptions = {
      commandTimeout: opts.timeoutMs,
      connectTimeout: Math.max(opts.timeoutMs, 2000),
      // Fail fast while disconnected instead of queueing: a queued consume could run long
      // after the agent gave up, and a 503 now is the honest answer.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Reconnect forever, at most a second apart, so the gate serves again as soon as
      // Redis is back (section 12, GATE_REDIS_TIMEOUT_MS).
      retryStrategy: (times) => Math.min(50 * times, 1000),
      lazyConnect: false,
    };
    const seeds = opts.clusterNodes?.map(parseNode);
    // Credentials and TLS for the cluster come from the seed entries (`rediss://user:pass@h:p`);
    // every node of one cluster shares them.
    const secured = seeds?.find((n) => n.password !== undefined || n.tls);
    const client = seeds
      ? new Cluster(seeds.map(({ host, port }) => ({ host, port })), {
          redisOptions: {
            ...common,
            ...(secured?.username ? { username: secured.username } : {}),
            ...(secured?.password !== undefined ? { password: secured.password } : {}),
            ...(secured?.tls ? { tls: {} } : {}),
          },
          enableOfflineQueue: false,
          clusterRetryStrategy: (times) => Math.min(50 * times, 1000),
        })
      : // Not ioredis auto-pipelining: measured against this build without it (load/bench/proxy-ab.ts
        // --flow-ka, 6 rounds), the gate's CPU per flow was the same (411 vs 402 µs) and its peak
        // RSS 203 MB instead of 137 MB; on a cluster it also failed commands.
        new Redis(opts.url ?? 'redis://127.0.0.1:6379', common);
    client.defineCommand('agConsume', { numberOfKeys: 2, lua: CONSUME_LUA });
    client.defineCommand('agIncrWindow', { numberOfKeys: 1, lua: INCR_WINDOW_LUA });
    client.defineCommand('agPushCapped', { numberOfKeys: 1, lua: PUSH_CAPPED_LUA });
    client.defineCommand('agStep', { lua: STEP_LUA });
    // ioredis emits 'error' on every failed reconnect; without a listener Node would crash.
    client.on('error', (err: unknown) => opts.onError?.(err));
    this.client = client as Client;
  }

  async putChallenge(id: string, record: ChallengeRecord, ttlMs: number): Promise<boolean> {
    const r = await this.run(() => this.client.set(keys.challenge(id), JSON.stringify(record), 'PX', ttlMs, 'NX'));
    return r === 'OK';
  }

  async consumeChallenge(id: string, tombstoneTtlMs: number): Promise<ConsumeResult> {
    const r = await this.run(() => this.client.agConsume(keys.challenge(id), keys.tombstone(id), String(tombstoneTtlMs)));
    if (r[0] === 1 && typeof r[1] === 'string') return { status: 'consumed', record: JSON.parse(r[1]) as ChallengeRecord };
    return r[0] === 2 ? { status: 'replayed' } : { status: 'unknown' };
  }

  async rememberOnce(key: string, ttlMs: number): Promise<boolean> {
    const r = await this.run(() => this.client.set(keys.once(key), '1', 'PX', ttlMs, 'NX'));
    return r === 'OK';
  }

  async incrementWindow(key: string, by: number, ttlMs: number): Promise<number> {
    return this.run(() => this.client.agIncrWindow(keys.counter(key), String(by), String(ttlMs)));
  }

  async hashSet(key: string, field: string, value: string): Promise<void> {
    await this.run(() => this.client.hset(key, field, value));
  }

  async hashDelete(key: string, field: string): Promise<boolean> {
    return (await this.run(() => this.client.hdel(key, field))) > 0;
  }

  async hashGetAll(key: string): Promise<Record<string, string>> {
    return this.run(() => this.client.hgetall(key));
  }

  async putValue(key: string, value: string, ttlMs: number): Promise<void> {
    await this.run(() => this.client.set(key, value, 'PX', ttlMs));
  }

  async getValue(key: string): Promise<string | undefined> {
    return (await this.run(() => this.client.get(key))) ?? undefined;
  }

  async deleteValue(key: string): Promise<void> {
    await this.run(() => this.client.del(key));
  }

  async pushCapped(key: string, member: string, cap: number, ttlMs: number): Promise<string[]> {
    return this.run(() => this.client.agPushCapped(key, member, String(cap), String(ttlMs)));
  }

  async countStep(ops: readonly WindowOp[]): Promise<StepOutcome> {
    if (!this.opts.clusterNodes) return stepReply(await this.run(() => this.script(ops)));
    // A script may only touch one slot of a cluster: one call per run of ops that share a hash
    // tag (the limits keyed by the certificate share one), in order, stopping at a refusal.
    const counts: number[] = [];
    for (let from = 0; from < ops.length; ) {
      let to = from + 1;
      while (to < ops.length && hashTag(ops[to]!.key) === hashTag(ops[from]!.key)) to++;
      const part = stepReply(await this.run(() => this.script(ops.slice(from, to))), from);
      counts.push(...part.counts);
      if (part.refused >= 0) return { ...part, counts };
      from = to;
    }
    return { refused: -1, msLeft: 0, counts };
  }

  private script(ops: readonly WindowOp[]): Promise<number[]> {
    const argv: string[] = ops.map((o) => o.key);
    for (const o of ops) argv.push(o.kind, String(o.points), String(o.windowMs));
    return this.client.agStep(ops.length, ...argv);
  }

  /** The ioredis client (tests and tooling read it; the gate goes through this class). */
  get redis(): Redis | Cluster {
    return this.client;
  }

  async ping(): Promise<void> {
    await this.run(() => this.client.ping());
  }

  async waitReady(timeoutMs: number): Promise<void> {
    if (this.client.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.client.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.client.once('ready', done);
    });
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }

  /** See {@link corkUntilImmediate}; only on a connected single Redis. */
  private batchWrites(): void {
    if (this.opts.clusterNodes || this.client.status !== 'ready') return;
    const stream = (this.client as Redis).stream as unknown as { cork(): void; uncork(): void; writableCorked: number } | undefined;
    if (stream && typeof stream.cork === 'function') corkUntilImmediate(stream);
  }

  private async run<T>(op: () => Promise<T>): Promise<T> {
    this.batchWrites();
    try {
      return await op();
    } catch (err) {
      this.opts.onError?.(err);
      throw new GateError('store_unavailable', { cause: err, detail: (err as Error)?.message, headers: { 'retry-after': '1' } });
    }
  }
}

/**
 * Holds the connection's writes until the event loop's check phase, so that the commands of every
 * request handled in one turn of the loop leave in one `writev` instead of one write system call
 * each (they were a fifth of the gate's CPU on the authorizer's decision route). Single Redis only:
 * a cluster client writes to one socket per node.
 */
function corkUntilImmediate(stream: { cork(): void; uncork(): void; writableCorked: number }): void {
  if (stream.writableCorked > 0) return;
  stream.cork();
  setImmediate(() => stream.uncork());
}

/** A cluster seed: `host:port`, or `redis://` / `rediss://[user:pass@]host:port`. */
function parseNode(s: string): { host: string; port: number; username?: string; password?: string; tls: boolean } {
  if (/^rediss?:\/\//.test(s)) {
    const u = new URL(s);
    return {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || 6379),
      username: u.username ? decodeURIComponent(u.username) : undefined,
      password: u.password ? decodeURIComponent(u.password) : undefined,
      tls: u.protocol === 'rediss:',
    };
  }
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)), tls: false };
}
