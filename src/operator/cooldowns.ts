/**
 * The registry of failed-proof cooldowns (section 12), shared through the store so the admin
 * API can list and lift them on any gate. The limiter itself lives in ratelimit/.
 * @module
 */
import type { RecordOps } from '../store/index.js';

/** A certificate cooling down after repeated failed proofs. */
export interface CooldownEntry {
  thumbprint: string;
  until: number;
}

const KEY = 'ag:op:cooldowns';

/** Cooldowns by thumbprint, with their end time. */
export class CooldownRegistry {
  constructor(private readonly kv: RecordOps, private readonly now: () => number) {}

  /** Records a cooldown (called by the failed-proof limiter when it blocks a certificate). */
  async note(thumbprint: string, until: number): Promise<void> {
    await this.kv.hashSet(KEY, thumbprint, String(until)).catch(() => undefined);
  }

  /** Cooldowns still running (expired ones are dropped from the store on the way). */
  async list(): Promise<CooldownEntry[]> {
    const now = this.now();
    const out: CooldownEntry[] = [];
    for (const [thumbprint, until] of Object.entries(await this.kv.hashGetAll(KEY))) {
      if (Number(until) > now) out.push({ thumbprint, until: Number(until) });
      else await this.kv.hashDelete(KEY, thumbprint);
    }
    return out;
  }

  /** Forgets a cooldown in the registry (the limiter itself is cleared by the caller). */
  async forget(thumbprint: string): Promise<boolean> {
    return this.kv.hashDelete(KEY, thumbprint);
  }
}
