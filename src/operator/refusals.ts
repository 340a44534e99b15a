/**
 * Recent refusals by id, for appeals (section 9): bounded per identity and in total.
 * @module
 */
import type { RecordOps } from '../store/index.js';

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

const KEY = {
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

/** Options of {@link RefusalRecords}. */
export interface RefusalRecordsOptions {
  store: RecordOps;
  now: () => number;
  /** Records kept per identity: the newest this many (`GATE_REFUSAL_RECORDS_PER_IDENTITY`). */
  perIdentity?: number;
  /** Records kept in total: the newest this many (`GATE_REFUSAL_RECORDS_MAX`). */
  max?: number;
}

/** The refusal records. */
export class RefusalRecords {
  private anonSecond = 0;
  private anonCount = 0;

  constructor(private readonly opts: RefusalRecordsOptions) {}

  /**
   * Keeps a refusal for lookup by id (best effort), bounded per identity and in total: each
   * certificate keeps only its newest `perIdentity` records and the store its newest `max`; a
   * record pushed out is deleted. Newest rather than first, because an appeal is about the
   * refusal just seen; what is pushed out stays in the audit trail. Identified agents get here
   * only within `GATE_RATE_REFUSAL_IDENTITY` (see sendRefusal). Anonymous refusals (no or an
   * unacceptable certificate) have no identity to bound: they are sampled, at most
   * {@link ANONYMOUS_PER_S} a second per gate, and count only against the total.
   */
  record(r: RefusalRecord): void {
    if (NOT_KEPT.has(r.code)) return;
    if (!r.thumbprint) {
      const second = Math.floor(this.opts.now() / 1000);
      if (second !== this.anonSecond) {
        this.anonSecond = second;
        this.anonCount = 0;
      }
      if (++this.anonCount > ANONYMOUS_PER_S) return;
    }
    const kv = this.opts.store;
    const perIdentity = this.opts.perIdentity ?? REFUSAL_RECORDS_PER_IDENTITY;
    const max = this.opts.max ?? REFUSAL_RECORDS_MAX;
    const drop = (ids: string[]) => Promise.all(ids.map((id) => kv.deleteValue(KEY.refusal(id))));
    const id = r.refusal_id;
    void (async () => {
      await kv.putValue(KEY.refusal(id), JSON.stringify(r), REFUSAL_RETENTION_MS);
      await Promise.all([
        r.thumbprint ? kv.pushCapped(KEY.refusalsOf(r.thumbprint), id, perIdentity, REFUSAL_RETENTION_MS).then(drop) : undefined,
        kv.pushCapped(KEY.refusalsAll, id, max, REFUSAL_RETENTION_MS).then(drop),
      ]);
    })().catch(() => undefined);
  }

  /** A refusal by id, if still kept. */
  async get(id: string): Promise<RefusalRecord | undefined> {
    if (!/^[A-Za-z0-9]{1,64}$/.test(id)) return undefined;
    const raw = await this.opts.store.getValue(KEY.refusal(id));
    return raw ? (JSON.parse(raw) as RefusalRecord) : undefined;
  }
}
