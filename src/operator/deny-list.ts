/**
 * The deny list (section 2), shared by every gate through the store. Gates keep a local copy,
 * refreshed by polling a version value, so the per-request check is a map lookup and a new
 * entry reaches every instance within one poll interval. The admin listing is read from that
 * same copy (reloaded first) with the same expiry rule, so what an operator sees listed is
 * exactly what is enforced.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { GateError } from '../errors.js';
import type { AgentIdentity } from '../identity/index.js';
import type { RecordOps } from '../store/index.js';

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

const KEY = { deny: 'ag:op:deny', denyVersion: 'ag:op:deny:v' };

/** Options of {@link DenyList}. */
export interface DenyListOptions {
  store: RecordOps;
  now: () => number;
  /** How often the local copy checks for changes. */
  refreshMs?: number;
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

/** The deny list's local copy, its refresh, and the admin operations on it. */
export class DenyList {
  private readonly kv: RecordOps;
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

  constructor(private readonly opts: DenyListOptions) {
    this.kv = opts.store;
    this.now = opts.now;
  }

  /** Starts polling the version. */
  start(): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs ?? 500);
    this.timer.unref();
  }

  /** Stops polling. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Reloads the local copy when the shared version moved (always when `force`). Never throws. */
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
    const v = await this.kv.getValue(KEY.denyVersion);
    if (!force && v === this.version) return;
    const all = await this.kv.hashGetAll(KEY.deny);
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
    await this.kv.hashSet(KEY.deny, entry.id, JSON.stringify(entry));
    await this.bumpVersion();
    await this.refresh(true);
    return entry;
  }

  /** Removes an entry; false when there was none. */
  async undeny(id: string): Promise<boolean> {
    const removed = await this.kv.hashDelete(KEY.deny, id);
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
    await this.kv.putValue(KEY.denyVersion, randomBytes(8).toString('hex'), 365 * 24 * 3600_000);
  }

  /**
   * The live entries: the enforced copy, reloaded from the store first, filtered by the same
   * {@link isLive} as {@link check}. Expired entries are dropped from the store on the way.
   */
  async list(): Promise<DenyEntry[]> {
    await this.load(true);
    const now = this.now();
    const out: DenyEntry[] = [];
    for (const e of this.entries) {
      if (isLive(e, now)) out.push(e);
      else await this.kv.hashDelete(KEY.deny, e.id);
    }
    return out;
  }
}
