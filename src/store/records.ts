/**
 * Small shared records of operator state (deny list, cooldown registry, refusal records): the
 * primitives the store offers for them, and their single-process twin for the memory store.
 * @module
 */

/** Hash, value and capped-list primitives with Redis semantics. Failures throw `store_unavailable`. */
export interface RecordOps {
  /** `HSET key field value`. */
  hashSet(key: string, field: string, value: string): Promise<void>;
  /** `HDEL key field`; false when there was no such field. */
  hashDelete(key: string, field: string): Promise<boolean>;
  /** `HGETALL key`. */
  hashGetAll(key: string): Promise<Record<string, string>>;
  /** `SET key value PX ttl`. */
  putValue(key: string, value: string, ttlMs: number): Promise<void>;
  /** `GET key`. */
  getValue(key: string): Promise<string | undefined>;
  /** `DEL key`. */
  deleteValue(key: string): Promise<void>;
  /**
   * Pushes `member` onto the list `key`, keeps only the newest `cap` members, sets the list's
   * lifetime to `ttlMs`, and returns the members it dropped (one atomic step).
   */
  pushCapped(key: string, member: string, cap: number, ttlMs: number): Promise<string[]>;
}

/** A last-resort bound for the dev store; the refusal-record caps normally hold far below it. */
const MAX_VALUES = 100_000;

/** {@link RecordOps} in process memory (the memory store's; dev and tests). */
export class MemoryRecords implements RecordOps {
  private readonly hashes = new Map<string, Map<string, string>>();
  private readonly values = new Map<string, { v: string; until: number }>();
  private readonly lists = new Map<string, { members: string[]; until: number }>();

  constructor(private readonly now: () => number) {}

  async hashSet(k: string, f: string, v: string): Promise<void> {
    let h = this.hashes.get(k);
    if (!h) this.hashes.set(k, (h = new Map()));
    h.set(f, v);
  }

  async hashDelete(k: string, f: string): Promise<boolean> {
    return this.hashes.get(k)?.delete(f) ?? false;
  }

  async hashGetAll(k: string): Promise<Record<string, string>> {
    return Object.fromEntries(this.hashes.get(k) ?? []);
  }

  async putValue(k: string, v: string, ttl: number): Promise<void> {
    const now = this.now();
    if (this.values.size >= MAX_VALUES) {
      for (const [key, e] of this.values) if (e.until <= now) this.values.delete(key);
      if (this.values.size >= MAX_VALUES) this.values.delete(this.values.keys().next().value!);
    }
    this.values.set(k, { v, until: now + ttl });
  }

  async getValue(k: string): Promise<string | undefined> {
    const e = this.values.get(k);
    return e && e.until > this.now() ? e.v : undefined;
  }

  async deleteValue(k: string): Promise<void> {
    this.values.delete(k);
  }

  async pushCapped(k: string, m: string, cap: number, ttl: number): Promise<string[]> {
    const now = this.now();
    let l = this.lists.get(k);
    if (!l || l.until <= now) {
      if (this.lists.size >= MAX_VALUES) for (const [key, x] of this.lists) if (x.until <= now) this.lists.delete(key);
      if (this.lists.size >= MAX_VALUES) this.lists.delete(this.lists.keys().next().value!);
      this.lists.set(k, (l = { members: [], until: 0 }));
    }
    l.members.unshift(m);
    l.until = now + ttl;
    return l.members.length > cap ? l.members.splice(cap) : [];
  }
}
