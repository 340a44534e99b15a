/**
 * Operator state shared by every gate through the store: the deny list, the registry of
 * failed-proof cooldowns, and recent refusals by id (for appeals). Gates keep a local copy of
 * the deny list, refreshed by polling a version counter, so the per-request check is a map
 * lookup and a new entry reaches every instance within one poll interval. The admin listing
 * is read from that same copy (reloaded first) with the same expiry rule, so what an operator
 * sees listed is exactly what is enforced.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { GateError } from '../errors.js';
import type { AgentIdentity } from '../identity/index.js';
import { RedisStore, type GateStore } from '../store/index.js';

/** One deny-list entry: by certificate thumbprint or by agent id. */
export interface DenyEntry {
  id: string;
  thumbprint?: string;
  agent_id?: string;
  reason: string;
  created_at: number;
  /** Unix ms; absent means until removed. */
  expires_at?: number;
}

/** A certificate cooling down after repeated failed proofs. */
export interface CooldownEntry {
  thumbprint: string;
  until: number;
}

/** What is kept about a refusal for lookup by id. */
export interface RefusalRecord {
  refusal_id: string;
  code: string;
  status: number;
  at: number;
  agent_id?: string;
  thumbprint?: string;
  method?: string;
}

/** Store primitives the operator state needs. */
interface Kv {
  hset(key: string, field: string, value: string): Promise<void>;
  hdel(key: string, field: string): Promise<boolean>;
  hgetall(key: string): Promise<Record<string, string>>;
  setPx(key: string, value: string, ttlMs: number): Promise<void>;
  get(key: string): Promise<string | undefined>;
  del(key: string): Promise<void>;
  /**
   * Pushes `member` onto the list `key`, keeps only the newest `cap` members, sets the list's
   * lifetime to `ttlMs`, and returns the members it dropped (one atomic step).
   */
  pushCapped(key: string, member: string, cap: number, ttlMs: number): Promise<string[]>;
}

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
type PushCappedClient = { agPushCapped(k: string, member: string, cap: string, ttl: string): Promise<string[]> };

function redisKv(redis: Redis | Cluster): Kv {
  if (!('agPushCapped' in redis)) redis.defineCommand('agPushCapped', { numberOfKeys: 1, lua: PUSH_CAPPED_LUA });
  const client = redis as (Redis | Cluster) & PushCappedClient;
  const wrap = async <T>(op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (err) {
      throw new GateError('store_unavailable', { cause: err, detail: (err as Error).message, headers: { 'retry-after': '1' } });
    }
  };
  return {
    hset: (k, f, v) => wrap(async () => void (await client.hset(k, f, v))),
    hdel: (k, f) => wrap(async () => (await client.hdel(k, f)) > 0),
    hgetall: (k) => wrap(() => client.hgetall(k)),
    setPx: (k, v, ttl) => wrap(async () => void (await client.set(k, v, 'PX', ttl))),
    get: (k) => wrap(async () => (await client.get(k)) ?? undefined),
    del: (k) => wrap(async () => void (await client.del(k))),
    pushCapped: (k, m, cap, ttl) => wrap(() => client.agPushCapped(k, m, String(cap), String(ttl))),
  };
}

/** Single-process twin of {@link redisKv} for the memory store (dev). */
function memoryKv(now: () => number): Kv {
  const hashes = new Map<string, Map<string, string>>();
  const values = new Map<string, { v: string; until: number }>();
  const lists = new Map<string, { members: string[]; until: number }>();
  // A last-resort bound for the dev store; the refusal-record caps normally hold far below it.
  const MAX_VALUES = 100_000;
  const sweepLists = () => {
    for (const [key, l] of lists) if (l.until <= now()) lists.delete(key);
  };
  return {
    async hset(k, f, v) {
      let h = hashes.get(k);
      if (!h) hashes.set(k, (h = new Map()));
      h.set(f, v);
    },
    async hdel(k, f) {
      return hashes.get(k)?.delete(f) ?? false;
    },
    async hgetall(k) {
      return Object.fromEntries(hashes.get(k) ?? []);
    },
    async setPx(k, v, ttl) {
      if (values.size >= MAX_VALUES) {
        for (const [key, e] of values) if (e.until <= now()) values.delete(key);
        if (values.size >= MAX_VALUES) values.delete(values.keys().next().value!);
      }
      values.set(k, { v, until: now() + ttl });
    },
    async get(k) {
      const e = values.get(k);
      return e && e.until > now() ? e.v : undefined;
    },
    async del(k) {
      values.delete(k);
    },
    async pushCapped(k, m, cap, ttl) {
      let l = lists.get(k);
      if (!l || l.until <= now()) {
        if (lists.size >= MAX_VALUES) sweepLists();
        if (lists.size >= MAX_VALUES) lists.delete(lists.keys().next().value!);
        lists.set(k, (l = { members: [], until: 0 }));
      }
      l.members.unshift(m);
      l.until = now() + ttl;
      return l.members.length > cap ? l.members.splice(cap) : [];
    },
  };
}

/**
 * One memory twin per store object, so gates built on the same MemoryStore (tests, an app
 * embedding two gates) share the deny list and refusal records the way Redis users do.
 */
const memoryKvs = new WeakMap<GateStore, Kv>();

const KEY = {
  deny: 'ag:op:deny',
  denyVersion: 'ag:op:deny:v',
  cooldowns: 'ag:op:cooldowns',
  refusal: (id: string) => `ag:op:refusal:${id}`,
  /** Ids of the refusal records kept for one certificate, newest first: the per-identity bound. */
  refusalsOf: (identity: string) => `ag:op:refusals:{${identity}}`,
  /** Ids of every refusal record kept, newest first: the total bound. */
  refusalsAll: 'ag:op:refusals:all',
};
/** How long a refusal can be looked up by id. */
export const REFUSAL_RETENTION_MS = 3 * 24 * 3600_000;
/** Default of `GATE_REFUSAL_RECORDS_PER_IDENTITY`. */
export const REFUSAL_RECORDS_PER_IDENTITY = 50;
/** Default of `GATE_REFUSAL_RECORDS_MAX`. */
export const REFUSAL_RECORDS_MAX = 100_000;
/** Anonymous refusals kept for lookup per second per gate (about 0.5 GB of Redis over the retention, at most). */
export const ANONYMOUS_PER_S = 5;
/** Refusals not kept for lookup: they come in floods and say nothing about one agent. */
const NOT_KEPT = new Set(['overloaded', 'rate_limited']);

/** Options of {@link OperatorState}. */
export interface OperatorStateOptions {
  store: GateStore;
  now: () => number;
  /** How often the local deny-list copy checks for changes. */
  refreshMs?: number;
  /** Refusal records kept per identity: the newest this many (`GATE_REFUSAL_RECORDS_PER_IDENTITY`). */
  refusalsPerIdentity?: number;
  /** Refusal records kept in total: the newest this many (`GATE_REFUSAL_RECORDS_MAX`). */
  refusalsMax?: number;
  log?: (event: Record<string, unknown>) => void;
}

/** The one expiry rule, for enforcement and listing alike. */
export function isLive(e: DenyEntry, now: number): boolean {
  return e.expires_at === undefined || e.expires_at > now;
}

/** Adds `e` to the entries under `key` (several entries may name the same agent). */
function addTo(index: Map<string, DenyEntry[]>, key: string, e: DenyEntry): void {
  const list = index.get(key);
  if (list) list.push(e);
  else index.set(key, [e]);
}

/** Deny list, cooldown registry and refusal records. */
export class OperatorState {
  private readonly kv: Kv;
  private readonly now: () => number;
  private version: string | undefined = '(never loaded)';
  /** Every entry, expired or not, as last loaded: the one copy that is enforced and listed. */
  private entries: DenyEntry[] = [];
  private byThumbprint = new Map<string, DenyEntry[]>();
  private byAgentId = new Map<string, DenyEntry[]>();
  /** Loads started and applied: an older load finishing late must not overwrite a newer one. */
  private loadsStarted = 0;
  private loadApplied = 0;
  /** The retry kicked off by a request that arrived before the first load. */
  private firstLoad: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private anonSecond = 0;
  private anonCount = 0;

  constructor(private readonly opts: OperatorStateOptions) {
    this.now = opts.now;
    if (opts.store instanceof RedisStore) this.kv = redisKv(opts.store.redis);
    else {
      let kv = memoryKvs.get(opts.store);
      if (!kv) memoryKvs.set(opts.store, (kv = memoryKv(opts.now)));
      this.kv = kv;
    }
  }

  /** Starts polling the deny-list version. */
  start(): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs ?? 500);
    this.timer.unref();
  }

  /** Stops polling. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Reloads the local deny-list copy when the shared version moved (always when `force`). Never throws. */
  async refresh(force = false): Promise<void> {
    try {
      await this.load(force);
    } catch (err) {
      // Keep the last copy: a store outage must not empty the deny list.
      this.opts.log?.({ event: 'deny_list_refresh_failed', detail: (err as Error).message });
    }
  }

  /** Reads the shared list into the local copy (unless `force` is false and the version did not move). */
  private async load(force: boolean): Promise<void> {
    const seq = ++this.loadsStarted;
    const v = await this.kv.get(KEY.denyVersion);
    if (!force && v === this.version) return;
    const all = await this.kv.hgetall(KEY.deny);
    // Commands on one connection are answered in order: a later load saw a newer list.
    if (seq < this.loadApplied) return;
    const entries: DenyEntry[] = [];
    const byT = new Map<string, DenyEntry[]>();
    const byA = new Map<string, DenyEntry[]>();
    for (const raw of Object.values(all)) {
      const e = JSON.parse(raw) as DenyEntry;
      entries.push(e);
      if (e.thumbprint) addTo(byT, e.thumbprint, e);
      if (e.agent_id) addTo(byA, e.agent_id, e);
    }
    this.entries = entries.sort((a, b) => a.created_at - b.created_at);
    this.byThumbprint = byT;
    this.byAgentId = byA;
    this.version = v;
    this.loadApplied = seq;
  }

  /** The identity step's deny-list check (section 2): `agent_denied` when any live entry names the agent. */
  check(agent: AgentIdentity): void {
    if (this.loadApplied === 0) {
      // A gate that has not read the list yet cannot know the agent is not on it: fail closed.
      this.firstLoad ??= this.refresh().finally(() => (this.firstLoad = undefined));
      throw new GateError('store_unavailable', { detail: 'deny list not loaded yet', headers: { 'retry-after': '1' } });
    }
    const now = this.now();
    const e = this.byThumbprint.get(agent.thumbprint)?.find((x) => isLive(x, now)) ?? this.byAgentId.get(agent.agentId)?.find((x) => isLive(x, now));
    if (e) throw new GateError('agent_denied', { detail: `deny-list entry ${e.id}: ${e.reason}` });
  }

  /** Adds an entry, visible to every gate within one refresh interval (here at once). */
  async deny(input: { thumbprint?: string; agent_id?: string; reason: string; expires_at?: number }): Promise<DenyEntry> {
    const entry: DenyEntry = { id: randomBytes(8).toString('hex'), created_at: this.now(), ...input };
    await this.kv.hset(KEY.deny, entry.id, JSON.stringify(entry));
    await this.bumpVersion();
    await this.refresh(true);
    return entry;
  }

  /** Removes an entry; false when there was none. */
  async undeny(id: string): Promise<boolean> {
    const removed = await this.kv.hdel(KEY.deny, id);
    if (removed) {
      await this.bumpVersion();
      await this.refresh(true);
    }
    return removed;
  }

  /**
   * A random version rather than a counter: a store restarted empty would restart a counter
   * at values gates have already seen, and they would miss the next change.
   */
  private async bumpVersion(): Promise<void> {
    await this.kv.setPx(KEY.denyVersion, randomBytes(8).toString('hex'), 365 * 24 * 3600_000);
  }

  /**
   * The live deny-list entries: the enforced copy, reloaded from the store first, filtered by
   * the same {@link isLive} as {@link check}. Expired entries are dropped from the store on the way.
   */
  async denyList(): Promise<DenyEntry[]> {
    await this.load(true);
    const now = this.now();
    const out: DenyEntry[] = [];
    for (const e of this.entries) {
      if (isLive(e, now)) out.push(e);
      else await this.kv.hdel(KEY.deny, e.id);
    }
    return out;
  }

  /** Records a cooldown (called by the failed-proof limiter when it blocks a certificate). */
  async noteCooldown(thumbprint: string, until: number): Promise<void> {
    await this.kv.hset(KEY.cooldowns, thumbprint, String(until)).catch(() => undefined);
  }

  /** Cooldowns still running. */
  async cooldowns(): Promise<CooldownEntry[]> {
    const now = this.now();
    const out: CooldownEntry[] = [];
    for (const [thumbprint, until] of Object.entries(await this.kv.hgetall(KEY.cooldowns))) {
      if (Number(until) > now) out.push({ thumbprint, until: Number(until) });
      else await this.kv.hdel(KEY.cooldowns, thumbprint);
    }
    return out;
  }

  /** Forgets a cooldown in the registry (the limiter itself is cleared by the caller). */
  async forgetCooldown(thumbprint: string): Promise<boolean> {
    return this.kv.hdel(KEY.cooldowns, thumbprint);
  }

  /**
   * Keeps a refusal for lookup by id (best effort), bounded per identity and in total: each
   * certificate keeps only its newest `refusalsPerIdentity` records and the store its newest
   * `refusalsMax`; a record pushed out is deleted. Newest rather than first, because an appeal
   * is about the refusal just seen; what is pushed out stays in the audit trail. Identified
   * agents get here only within `GATE_RATE_REFUSAL_IDENTITY` (see sendRefusal). Anonymous
   * refusals (no or an unacceptable certificate) have no identity to bound: they are sampled,
   * at most {@link ANONYMOUS_PER_S} a second per gate, and count only against the total.
   */
  record(r: RefusalRecord): void {
    if (NOT_KEPT.has(r.code)) return;
    if (!r.thumbprint) {
      const second = Math.floor(this.now() / 1000);
      if (second !== this.anonSecond) {
        this.anonSecond = second;
        this.anonCount = 0;
      }
      if (++this.anonCount > ANONYMOUS_PER_S) return;
    }
    const perIdentity = this.opts.refusalsPerIdentity ?? REFUSAL_RECORDS_PER_IDENTITY;
    const max = this.opts.refusalsMax ?? REFUSAL_RECORDS_MAX;
    const drop = (ids: string[]) => Promise.all(ids.map((id) => this.kv.del(KEY.refusal(id))));
    const id = r.refusal_id;
    void (async () => {
      await this.kv.setPx(KEY.refusal(id), JSON.stringify(r), REFUSAL_RETENTION_MS);
      await Promise.all([
        r.thumbprint ? this.kv.pushCapped(KEY.refusalsOf(r.thumbprint), id, perIdentity, REFUSAL_RETENTION_MS).then(drop) : undefined,
        this.kv.pushCapped(KEY.refusalsAll, id, max, REFUSAL_RETENTION_MS).then(drop),
      ]);
    })().catch(() => undefined);
  }

  /** A refusal by id, if still kept. */
  async refusal(id: string): Promise<RefusalRecord | undefined> {
    if (!/^[A-Za-z0-9]{1,64}$/.test(id)) return undefined;
    const raw = await this.kv.get(KEY.refusal(id));
    return raw ? (JSON.parse(raw) as RefusalRecord) : undefined;
  }
}
