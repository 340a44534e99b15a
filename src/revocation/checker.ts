/**
 * The revocation policy of PROTOCOL.md section 7 over two sources, OCSP and CRL, with a
 * per-certificate cache so that the hot path is a map lookup: the network is consulted once
 * per cache period per certificate (single-flight), never per request.
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { Agent } from 'undici';
import { GateError } from '../errors.js';
import type { AgentIdentity } from '../identity/index.js';
import type { GateMetrics } from '../metrics/index.js';
import { certificateSubject } from '../lib/der.js';
import { crlDistributionPoints, parseCrl, type ParsedCrl } from './crl.js';
import { certCrlScope, crlVerdict, type CertCrlScope } from './crl-scope.js';
import { fetchBounded } from './fetch.js';
import { buildOcspRequest, ocspResponderUrls, REVOCATION_SKEW_MS, verifyOcspResponse } from './ocsp.js';

/** Revocation modes of `GATE_REVOCATION`. */
export type RevocationMode = 'off' | 'crl' | 'ocsp' | 'ocsp,crl';

/** Options of {@link RevocationChecker}. */
export interface RevocationOptions {
  mode: RevocationMode;
  fail: 'open' | 'closed';
  crlFiles: readonly string[];
  /** Overrides the certificates' AIA responder when set. */
  ocspUrl?: string;
  maxStaleS: number;
  timeoutMs: number;
  crlMaxBytes: number;
  metrics: GateMetrics;
  /** Receives fail-open and source-error events for the log. */
  log?: (event: Record<string, unknown>) => void;
  now?: () => number;
}

/** One source's view of a certificate. */
type SourceResult = { status: 'good' | 'revoked'; until: number } | { status: 'unknown' | 'error'; detail: string };

interface CacheEntry {
  status: 'good' | 'revoked';
  method: 'ocsp' | 'crl';
  until: number;
  /** When a background refresh should start, ahead of `until`. */
  refreshAt: number;
}

/** OCSP answers are at most 64 KiB (section 7). */
const OCSP_MAX_BYTES = 64 * 1024;
/** After a failed lookup, wait this long before asking the network again for that certificate. */
const ERROR_BACKOFF_MS = 2000;
const CACHE_MAX = 100_000;

/** Checks agent certificates for revocation. */
export class RevocationChecker {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inflight = new Map<string, Promise<CacheEntry | undefined>>();
  private readonly failedAt = new Map<string, number>();
  private readonly crlByUrl = new Map<string, { crl: ParsedCrl; until: number }>();
  private readonly crlFetches = new Map<string, Promise<ParsedCrl>>();
  private fileCrls: { crl: ParsedCrl; path: string; mtimeMs: number }[] = [];
  private readonly http = new Agent({ connections: 16, keepAliveTimeout: 10_000 });
  private readonly now: () => number;

  constructor(private readonly opts: RevocationOptions) {
    this.now = opts.now ?? Date.now;
    if (opts.mode !== 'off' && opts.mode !== 'ocsp') this.fileCrls = opts.crlFiles.map((path) => ({ path, crl: loadCrlFile(path), mtimeMs: mtimeOf(path) }));
  }

  /** True unless the mode is off. */
  get enabled(): boolean {
    return this.opts.mode !== 'off';
  }

  /**
   * Returns (synchronously, from the cache) or resolves when `agent` may pass; throws or
   * rejects with `client_cert_revoked`, or `revocation_unavailable` when the status is unknown
   * and the policy fails closed.
   */
  check(agent: AgentIdentity): void | Promise<void> {
    if (this.opts.mode === 'off') return;
    const key = cacheKey(agent);
    const now = this.now();
    const entry = this.cache.get(key);
    if (entry && now < entry.until) {
      // The hot path: answered from memory, synchronously.
      this.opts.metrics.revocationCacheHits.inc({ method: entry.method });
      if (now >= entry.refreshAt) void this.refresh(key, agent);
      return this.decide(agent, entry);
    }
    if ((this.failedAt.get(key) ?? -Infinity) + ERROR_BACKOFF_MS > now) return this.decide(agent, undefined);
    return this.refresh(key, agent).then((fresh) => this.decide(agent, fresh));
  }

  private decide(agent: AgentIdentity, entry: CacheEntry | undefined): void {
    if (entry?.status === 'revoked') throw new GateError('client_cert_revoked', { detail: `serial ${agent.serial} revoked (${entry.method})` });
    if (entry?.status === 'good') return;
    if (this.opts.fail === 'open') {
      // Every admission counts, also those in the back-off after a failed lookup (which counted
      // the lookup once in revocation_checks_total).
      this.opts.metrics.revocationFailOpen.inc();
      this.opts.log?.({ event: 'revocation_fail_open', agent_id: agent.agentId, serial: agent.serial });
      return;
    }
    throw new GateError('revocation_unavailable', { detail: `no revocation status for serial ${agent.serial}`, headers: { 'retry-after': '5' } });
  }

  /** Releases sockets. */
  async close(): Promise<void> {
    await this.http.close();
  }

  /** Single-flight lookup through the configured sources. */
  private refresh(key: string, agent: AgentIdentity): Promise<CacheEntry | undefined> {
    let p = this.inflight.get(key);
    if (!p) {
      p = this.lookup(agent)
        .then((entry) => {
          if (entry) {
            if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
            this.cache.set(key, entry);
            this.failedAt.delete(key);
          } else {
            this.failedAt.set(key, this.now());
          }
          return entry;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async lookup(agent: AgentIdentity): Promise<CacheEntry | undefined> {
    const methods: ('ocsp' | 'crl')[] = this.opts.mode === 'ocsp,crl' ? ['ocsp', 'crl'] : [this.opts.mode as 'ocsp' | 'crl'];
    for (const method of methods) {
      const r = method === 'ocsp' ? await this.ocsp(agent) : await this.crl(agent);
      this.opts.metrics.revocationChecks.inc({ method, result: r.status });
      if (r.status === 'good' || r.status === 'revoked') {
        const now = this.now();
        const until = Math.min(r.until, now + this.opts.maxStaleS * 1000);
        // Refresh in the background during the last fifth of the period, so hot agents never wait.
        return { status: r.status, method, until, refreshAt: until - (until - now) / 5 };
      }
      this.opts.log?.({ event: 'revocation_source_failed', method, result: r.status, detail: 'detail' in r ? r.detail : undefined, serial: agent.serial });
    }
    return undefined;
  }

  private async ocsp(agent: AgentIdentity): Promise<SourceResult> {
    const url = this.opts.ocspUrl ?? ocspResponderUrls(agent.certDer)[0];
    if (!url) return { status: 'unknown', detail: 'no OCSP responder (no AIA, no GATE_OCSP_URL)' };
    try {
      const q = await buildOcspRequest(agent.certDer, agent.issuer);
      const der = await fetchBounded(this.http, url, { method: 'POST', body: q.der, contentType: 'application/ocsp-request', timeoutMs: this.opts.timeoutMs, maxBytes: OCSP_MAX_BYTES });
      const a = verifyOcspResponse(der, q, agent.issuer, this.now(), undefined, this.opts.maxStaleS * 1000);
      if (a.status === 'unknown') return { status: 'unknown', detail: 'responder does not know the certificate' };
      return { status: a.status, until: a.nextUpdate ?? this.now() + this.opts.maxStaleS * 1000 };
    } catch (err) {
      return { status: 'error', detail: (err as Error).message };
    }
  }

  private async crl(agent: AgentIdentity): Promise<SourceResult> {
    const now = this.now();
    const candidates: ParsedCrl[] = [];
    const issuerName = certificateSubject(agent.issuer.raw);
    for (const f of this.fileCrls) {
      // A replaced file (new mtime) or one past nextUpdate is read again: an operator's cron
      // publishes new CRLs by replacing the file.
      const mtimeMs = mtimeOf(f.path);
      if (mtimeMs !== f.mtimeMs || (f.crl.nextUpdate !== undefined && f.crl.nextUpdate < now)) {
        try {
          f.crl = loadCrlFile(f.path);
          f.mtimeMs = mtimeMs;
        } catch {
          // keep the previous one; a stale one is rejected below as past nextUpdate
        }
      }
      if (f.crl.issuerDer.equals(issuerName)) candidates.push(f.crl);
    }
    const errors: string[] = [];
    for (const url of crlDistributionPoints(agent.certDer).slice(0, 2)) {
      try {
        candidates.push(await this.crlFromUrl(url));
      } catch (err) {
        errors.push(`${url}: ${(err as Error).message}`);
      }
    }
    // RFC 5280 6.3.3: every CRL that is fresh, the issuer's and fully understood is a
    // candidate; the choice among them (scope, newest, deltas) is crlVerdict's.
    const usable: ParsedCrl[] = [];
    for (const crl of candidates) {
      if (crl.nextUpdate !== undefined && crl.nextUpdate < now) {
        errors.push('CRL past nextUpdate');
      } else if (crl.thisUpdate > now + REVOCATION_SKEW_MS) {
        // Not yet valid (OpenSSL refuses it too): as the newest by number or date it would
        // otherwise decide, and clear what the CRL in force still lists.
        errors.push('CRL not yet valid (thisUpdate in the future)');
      } else if (!crl.verifiedBy(agent.issuer)) {
        errors.push('CRL not signed by the issuing CA');
      } else if (crl.unusable !== undefined) {
        errors.push(`CRL unusable: ${crl.unusable}`);
      } else {
        usable.push(crl);
      }
    }
    if (candidates.length === 0 && errors.length === 0) return { status: 'unknown', detail: 'no CRL for this issuer' };
    let scope: CertCrlScope;
    try {
      scope = certCrlScope(agent.certDer);
    } catch (err) {
      return { status: 'error', detail: `certificate extensions: ${(err as Error).message}` };
    }
    const v = crlVerdict(usable, scope, agent.serial, now + this.opts.maxStaleS * 1000);
    if (!('detail' in v)) return { status: v.status, until: v.until };
    if (usable.length > 0 || errors.length === 0) errors.push(v.detail);
    return { status: 'error', detail: errors.join('; ') };
  }

  private async crlFromUrl(url: string): Promise<ParsedCrl> {
    const now = this.now();
    const cached = this.crlByUrl.get(url);
    if (cached && now < cached.until) {
      this.opts.metrics.revocationCacheHits.inc({ method: 'crl' });
      return cached.crl;
    }
    let p = this.crlFetches.get(url);
    if (!p) {
      p = fetchBounded(this.http, url, { method: 'GET', timeoutMs: this.opts.timeoutMs, maxBytes: this.opts.crlMaxBytes })
        .then((buf) => {
          const crl = parseCrl(buf);
          const until = Math.min(crl.nextUpdate ?? Infinity, this.now() + this.opts.maxStaleS * 1000);
          this.crlByUrl.set(url, { crl, until });
          return crl;
        })
        .finally(() => this.crlFetches.delete(url));
      this.crlFetches.set(url, p);
    }
    return p;
  }
}

/** CertID-equivalent key: the issuer certificate (name and key) and the serial. */
function cacheKey(agent: AgentIdentity): string {
  return `${agent.issuer.fingerprint256}/${agent.serial}`;
}

function mtimeOf(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -1;
  }
}

function loadCrlFile(path: string): ParsedCrl {
  return parseCrl(readFileSync(path));
}
