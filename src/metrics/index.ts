/**
 * Prometheus metrics of PROTOCOL.md section 10, on a registry owned by one app (no globals).
 * Every label value comes from the fixed sets below, so cardinality is bounded.
 * @module
 */
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERROR_CODES } from '../errors.js';

/** Label sets of section 10. */
export const LABELS = {
  proofResult: ['accepted', 'invalid', 'expired', 'replayed', 'unknown', 'binding_mismatch', 'pow_invalid', 'attestation_invalid'],
  replayKind: ['challenge', 'forwarded'],
  limiter: ['challenge_ip', 'challenge_identity', 'token_identity', 'proxy_identity', 'failed_proof', 'refusal_identity'],
  revocationMethod: ['ocsp', 'crl'],
  revocationResult: ['good', 'revoked', 'unknown', 'error'],
  forwardedResult: ['ok', 'missing', 'bad_signature', 'stale', 'unknown_kid', 'replayed', 'untrusted_proxy'],
  // allow: 204; refuse: a 4xx refusal; unavailable: a 5xx (the gate could not decide).
  authzResult: ['allow', 'refuse', 'unavailable'],
  shedReason: ['concurrency', 'event_loop'],
  connectionLimit: ['per_address', 'total'],
  connectionPhase: ['handshake', 'request'],
  route: ['challenge', 'token', 'proxy', 'authorize', 'jwks', 'health', 'other'],
  alg: ['EdDSA', 'ES256', 'ES384', 'PS256'],
} as const;

/** A label value of one of the sets above. */
export type LabelOf<K extends keyof typeof LABELS> = (typeof LABELS)[K][number];

/** The gate's metrics. */
export interface GateMetrics {
  registry: Registry;
  challengesIssued: Counter;
  tokensIssued: Counter;
  proofs: Counter<'result'>;
  replaysDetected: Counter<'kind'>;
  rateLimited: Counter<'limiter'>;
  revocationChecks: Counter<'method' | 'result'>;
  revocationCacheHits: Counter<'method'>;
  /** Requests let through without a revocation status (`GATE_REVOCATION_FAIL=open`). */
  revocationFailOpen: Counter;
  forwardedVerifications: Counter<'result'>;
  /** Authorizer mode: decisions answered to nginx, by result (section 13). */
  authzDecisions: Counter<'result'>;
  errors: Counter<'code'>;
  loadShed: Counter<'reason'>;
  /** Public-listener connections reset at accept by a cap. */
  connectionsRefused: Counter<'limit'>;
  /** Public-listener connections closed for missing a deadline: TLS handshake, or headers/whole request. */
  connectionTimeouts: Counter<'phase'>;
  /** Public-listener connections open now. */
  openConnections: Gauge;
  storeErrors: Counter;
  inflight: Gauge;
  requestDuration: Histogram<'route'>;
  signatureVerification: Histogram<'alg'>;
  /** Worker processes restarted after dying (`GATE_WORKERS` > 1; counted by the primary, 0 in workers). */
  workerRestarts: Counter;
  /** Audit events dropped (the trail's queue full, or recorded after shutdown); read from the trail at each scrape. */
  auditDropped: Counter;
  /** Audit records accepted but not yet durable; read from the trail at each scrape. */
  auditPending: Gauge;
  /**
   * Makes the two audit metrics report `trail`'s counts (this process's own: the writer's
   * backlog, or a cluster worker's events dropped after shutdown); 0 until called.
   */
  watchAudit(trail: AuditCounts): void;
}

/** What the audit metrics read from a trail (AuditLog and RemoteAuditLog have both). */
export interface AuditCounts {
  readonly dropped: number;
  readonly pending: number;
}

/** Creates the metrics on a fresh registry, with every known label value present at 0. */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}): GateMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const p = 'agent_gate_';
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name: p + name, help, labelNames: labelNames as L[], registers: [registry] });
  let trail: AuditCounts | undefined;
  const m: GateMetrics = {
    registry,
    challengesIssued: counter('challenges_issued_total', 'Challenges issued'),
    tokensIssued: counter('tokens_issued_total', 'Access tokens issued'),
    proofs: counter('proofs_total', 'Proofs submitted, by result', ['result']),
    replaysDetected: counter('replays_detected_total', 'Replays refused, by kind', ['kind']),
    rateLimited: counter('rate_limited_total', 'Requests refused by a rate limit', ['limiter']),
    revocationChecks: counter('revocation_checks_total', 'Revocation checks, by method and result', ['method', 'result']),
    revocationCacheHits: counter('revocation_cache_hits_total', 'Revocation answers served from cache', ['method']),
    revocationFailOpen: counter('revocation_fail_open_total', 'Requests let through without a revocation status (GATE_REVOCATION_FAIL=open)'),
    forwardedVerifications: counter('forwarded_verifications_total', 'Forwarded-header verifications, by result', ['result']),
    authzDecisions: counter('authz_decisions_total', 'Authorizer-mode decisions answered to nginx, by result', ['result']),
    errors: counter('errors_total', 'Refusals and errors answered, by contract code', ['code']),
    loadShed: counter('load_shed_total', 'Requests shed, by reason', ['reason']),
    connectionsRefused: counter('connections_refused_total', 'Connections reset at accept by a connection cap, by cap', ['limit']),
    connectionTimeouts: counter('connection_timeouts_total', 'Connections closed for missing the handshake or request deadline, by phase', ['phase']),
    openConnections: new Gauge({ name: p + 'open_connections', help: 'Connections open on the public listener', registers: [registry] }),
    storeErrors: counter('store_errors_total', 'Store commands that failed or timed out'),
    inflight: new Gauge({ name: p + 'inflight_requests', help: 'Requests in flight on the public listener', registers: [registry] }),
    requestDuration: new Histogram({
      name: p + 'request_duration_seconds',
      help: 'Request duration on the public listener, by route',
      labelNames: ['route'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    signatureVerification: new Histogram({
      name: p + 'signature_verification_seconds',
      help: 'Proof signature verification time, by algorithm',
      labelNames: ['alg'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01],
      registers: [registry],
    }),
    workerRestarts: counter('worker_restarts_total', 'Worker processes restarted after dying'),
    auditDropped: new Counter({
      name: p + 'audit_dropped_total',
      help: 'Audit events dropped: the trail queue was full (writes failing or too slow) or the event came after shutdown',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(trail?.dropped ?? 0);
      },
    }),
    auditPending: new Gauge({
      name: p + 'audit_pending_records',
      help: 'Audit records accepted but not yet written and fsynced',
      registers: [registry],
      collect() {
        this.set(trail?.pending ?? 0);
      },
    }),
    watchAudit(t) {
      trail = t;
    },
  };
  for (const v of LABELS.proofResult) m.proofs.inc({ result: v }, 0);
  for (const v of LABELS.replayKind) m.replaysDetected.inc({ kind: v }, 0);
  for (const v of LABELS.limiter) m.rateLimited.inc({ limiter: v }, 0);
  for (const method of LABELS.revocationMethod) {
    m.revocationCacheHits.inc({ method }, 0);
    for (const result of LABELS.revocationResult) m.revocationChecks.inc({ method, result }, 0);
  }
  for (const v of LABELS.forwardedResult) m.forwardedVerifications.inc({ result: v }, 0);
  for (const v of LABELS.authzResult) m.authzDecisions.inc({ result: v }, 0);
  for (const v of ERROR_CODES) m.errors.inc({ code: v }, 0);
  for (const v of LABELS.shedReason) m.loadShed.inc({ reason: v }, 0);
  for (const v of LABELS.connectionLimit) m.connectionsRefused.inc({ limit: v }, 0);
  for (const v of LABELS.connectionPhase) m.connectionTimeouts.inc({ phase: v }, 0);
  return m;
}

/** One process's metrics as JSON, the form {@link aggregateMetrics} merges (prom-client's cluster format). */
export function metricsSnapshot(registry: Registry): Promise<object[]> {
  return registry.getMetricsAsJSON();
}

/**
 * The exposition of a gate of several processes: counters and histograms summed, gauges by
 * their prom-client aggregator (sum unless a default metric says otherwise).
 */
export async function aggregateMetrics(snapshots: object[][]): Promise<string> {
  return AggregatorRegistry.aggregate(snapshots).metrics();
}

/**
 * Makes `/metrics` of this process answer for the whole gate: `registry.metrics()` (what the
 * admin route serves) returns `gather()`, while {@link metricsSnapshot} still reads this process alone.
 */
export function exposeGateMetrics(metrics: GateMetrics, gather: () => Promise<string>): void {
  metrics.registry.metrics = gather;
}
