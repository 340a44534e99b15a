import { GateError } from '../errors.js';
import { MemoryRecords } from './records.js';
import { keys, type ChallengeRecord, type ConsumeResult, type GateStore } from './types.js';
import { MemoryWindows, type StepOutcome, type WindowOp } from './windows.js';

interface Entry {
  value: string;
  expiresAt: number;
}

/**
 * In-memory store for dev: same semantics as Redis, including expiry. Bounded: when full
 * it sweeps expired entries and otherwise refuses new ones (503) rather than evicting a live
 * entry, because evicting a tombstone would let a proof be replayed.
 */
export class MemoryStore implements GateStore {
  private readonly entries = new Map<string, Entry>();
  private readonly sweeper: NodeJS.Timeout;
  /** Operator records, shared by every gate built on this store object (as Redis users share Redis). */
  private readonly records: MemoryRecords;
  /** Rate-limit counters, bounded like the entries (the oldest counter goes first). */
  private readonly windows: MemoryWindows;

  constructor(private readonly maxEntries: number, private readonly now: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
    this.records = new MemoryRecords(now);
    this.windows = new MemoryWindows({ maxKeys: maxEntries, now });
  }

  async countStep(ops: readonly WindowOp[]): Promise<StepOutcome> {
    return this.windows.step(ops);
  }

  hashSet(k: string, f: string, v: string) {
    return this.records.hashSet(k, f, v);
  }
  hashDelete(k: string, f: string) {
    return this.records.hashDelete(k, f);
  }
  hashGetAll(k: string) {
    return this.records.hashGetAll(k);
  }
  putValue(k: string, v: string, ttlMs: number) {
    return this.records.putValue(k, v, ttlMs);
  }
  getValue(k: string) {
    return this.records.getValue(k);
  }
  deleteValue(k: string) {
    this.windows.delete(k);
    return this.records.deleteValue(k);
  }
  pushCapped(k: string, m: string, cap: number, ttlMs: number) {
    return this.records.pushCapped(k, m, cap, ttlMs);
  }

  async putChallenge(id: string, record: ChallengeRecord, ttlMs: number): Promise<boolean> {
    return this.setNx(keys.challenge(id), JSON.stringify(record), ttlMs);
  }

  async consumeChallenge(id: string, tombstoneTtlMs: number): Promise<ConsumeResult> {
    const value = this.get(keys.challenge(id));
    if (value !== undefined) {
      this.entries.delete(keys.challenge(id));
      // Same as the Lua script: the tombstone is written even if the store is full, since
      // the challenge entry it replaces was just freed.
      this.entries.set(keys.tombstone(id), { value: '1', expiresAt: this.now() + tombstoneTtlMs });
      return { status: 'consumed', record: JSON.parse(value) as ChallengeRecord };
    }
    return this.get(keys.tombstone(id)) !== undefined ? { status: 'replayed' } : { status: 'unknown' };
  }

  async rememberOnce(key: string, ttlMs: number): Promise<boolean> {
    return this.setNx(keys.once(key), '1', ttlMs);
  }

  async incrementWindow(key: string, by: number, ttlMs: number): Promise<number> {
    const k = keys.counter(key);
    const cur = this.get(k);
    if (cur === undefined) {
      this.setNx(k, String(by), ttlMs);
      return by;
    }
    const e = this.entries.get(k)!;
    e.value = String(Number(cur) + by);
    return Number(e.value);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.entries.clear();
  }

  /** Live entry count, for tests and metrics. */
  get size(): number {
    return this.entries.size;
  }

  private setNx(key: string, value: string, ttlMs: number): boolean {
    if (this.get(key) !== undefined) return false;
    if (this.entries.size >= this.maxEntries) {
      this.sweep();
      if (this.entries.size >= this.maxEntries) {
        throw new GateError('store_unavailable', { detail: `memory store full (${this.maxEntries} entries)`, headers: { 'retry-after': '1' } });
      }
    }
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
    return true;
  }

  private get(key: string): string | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
  }
}
