/**
 * Everything a gate needs besides its HTTP listeners, built once from the configuration:
 * keys, trust bundle, store, tokens, revocation, limits, attestation, audit, deny list.
 * Shared by the standalone server (app.ts) and the embeddable plugin (plugin.ts).
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import type { FastifyBaseLogger } from 'fastify';
import type { BaseLogger } from 'pino';
import { AttestationRegistry } from './attestation/index.js';
import { AuditLog, AuditSetupError } from './audit/index.js';
import type { ConfigViolation, GateConfig } from './config/index.js';
import type { RefusalSinks } from './http/errors.js';
import { LoadShedder } from './http/shedding.js';
import type { GateDeps } from './gate/index.js';
import { DirectIdentityResolver, ForwardedVerifier, parseHmacKeys, TrustBundle } from './identity/index.js';
import { createMetrics, type GateMetrics } from './metrics/index.js';
import { authorizeRoute } from './authorizer/paths.js';
import { GateRateLimits } from './ratelimit/index.js';
import { RevocationChecker } from './revocation/index.js';
import { CooldownRegistry, DenyList, RefusalRecords } from './operator/index.js';
import { MemoryStore, RedisStore, type GateStore } from './store/index.js';
import { KeySourceError, loadSigningKeys, TokenService, type SigningKeySet } from './tokens/index.js';

/** Subject marker of the generated dev CA; prod refuses a trust bundle that contains it. */
export const DEV_CA_MARKER = /agent-gate dev CA/;

/** A startup problem that names the variable to change (same shape as config violations). */
export class StartupError extends Error {
  constructor(readonly violations: ConfigViolation[]) {
    super(violations.map((v) => `config violation: ${v.variable}: ${v.why}`).join('\n'));
    this.name = 'StartupError';
  }
}

/**
 * Opens the audit trail of GATE_AUDIT_FILE (none without it), logging checkpoints and trail
 * errors to `log()` and exporting its backlog and drops through `metrics`; a bad trail or key
 * file is a {@link StartupError}.
 */
export async function openAuditTrail(audit: GateConfig['audit'], metrics: GateMetrics, log: () => Pick<BaseLogger, 'info' | 'error'> | undefined): Promise<AuditLog | undefined> {
  if (!audit.file) return undefined;
  try {
    const trail = await AuditLog.open({
      file: audit.file,
      keyFile: audit.keyFile!,
      // Checkpoints also go to the log, so truncating both trail files together is still seen.
      onCheckpoint: (cp) => log()?.info({ event: 'audit_checkpoint', ...cp }, 'audit checkpoint'),
      onError: (err) => log()?.error({ event: 'audit_error', err }, 'audit trail error'),
    });
    metrics.watchAudit(trail);
    return trail;
  } catch (err) {
    if (err instanceof AuditSetupError) throw new StartupError([{ variable: err.variable, why: err.why }]);
    throw err;
  }
}

/** Things a caller may supply instead of the defaults derived from config (tests, embedding). */
export interface ServiceDeps {
  store?: GateStore;
  now?: () => number;
  /** Called once with a warning line for stderr (ephemeral key notice). */
  warn?: (line: string) => void;
}

/** The gate's parts (the checks of src/gate use the {@link GateDeps} among them). */
export interface GateServices extends GateDeps {
  config: GateConfig;
  now: () => number;
  metrics: GateMetrics;
  store: GateStore;
  tokens: TokenService;
  trust: TrustBundle;
  /** Server TLS options for the public listener (undefined: plain HTTP in forwarded mode). */
  tls: HttpsServerOptions | undefined;
  /** The identity source's own object: direct-mode resolver or forwarded-mode verifier (their counters). */
  identity: { direct?: DirectIdentityResolver; forwarded?: ForwardedVerifier };
  revocation: RevocationChecker;
  limits: GateRateLimits | undefined;
  attestation: AttestationRegistry | undefined;
  audit: AuditLog | undefined;
  shedder: LoadShedder;
  /** Failed-proof cooldowns, for the admin API. */
  cooldowns: CooldownRegistry;
  /** Refusal records by id, for appeals. */
  refusals: RefusalRecords;
  sinks: RefusalSinks;
  /** Mutable run state: draining after SIGTERM. */
  state: { draining: boolean };
  /** Where service events are logged once a listener exists. */
  log: { current?: FastifyBaseLogger };
  /** Releases everything (after the listeners have closed). */
  close(): Promise<void>;
}

/** Reads a file named by `variable`, or a StartupError naming it. */
export function readFileFor(variable: string, path: string | undefined): string {
  if (!path) throw new StartupError([{ variable, why: 'required' }]);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new StartupError([{ variable, why: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` }]);
  }
}

/** Loads files and keys named by the config; throws {@link StartupError} naming variables. */
export async function loadMaterials(config: GateConfig, warn: (line: string) => void): Promise<{ trust: TrustBundle; tls: HttpsServerOptions | undefined; keys: SigningKeySet }> {
  const violations: ConfigViolation[] = [];
  const caPem = readFileFor('GATE_CLIENT_CA', config.tls.clientCaFile);
  let trust: TrustBundle;
  try {
    trust = new TrustBundle(caPem);
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_CLIENT_CA', why: (err as Error).message }]);
  }
  if (config.env === 'prod' && trust.hasSubjectName(DEV_CA_MARKER)) violations.push({ variable: 'GATE_CLIENT_CA', why: 'contains the agent-gate dev CA' });
  let tls: HttpsServerOptions | undefined;
  if (config.mode === 'direct') {
    tls = {
      cert: readFileFor('GATE_TLS_CERT', config.tls.certFile),
      key: readFileFor('GATE_TLS_KEY', config.tls.keyFile),
      // OpenSSL verifies the chain against `ca` (= GATE_CLIENT_CA) in the handshake and the gate
      // takes that verdict (socket.authorized) as its first check; rejectUnauthorized: false so
      // that a refused certificate gets a contract error instead of a TLS alert.
      ca: caPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: config.tls.minVersion,
    };
  } else if (config.tls.certFile) {
    // Forwarded mode over TLS: nginx is the client; agents' certificates arrive in headers.
    tls = { cert: readFileFor('GATE_TLS_CERT', config.tls.certFile), key: readFileFor('GATE_TLS_KEY', config.tls.keyFile), minVersion: config.tls.minVersion };
  }
  let keys: SigningKeySet;
  try {
    keys = await loadSigningKeys({ jwk: config.signing.jwk, keyFile: config.signing.keyFile, allowEphemeral: config.env === 'dev' });
  } catch (err) {
    if (err instanceof KeySourceError) throw new StartupError([...violations, { variable: err.variable, why: err.message }]);
    throw err;
  }
  if (keys.source === 'ephemeral') {
    warn('agent-gate: using an ephemeral token-signing key (dev only): tokens die with this process. Persist one with `agent-gate keygen --out signing.jwk` and GATE_SIGNING_KEY_FILE=signing.jwk');
  }
  if (violations.length > 0) throw new StartupError(violations);
  return { trust, tls, keys };
}

/** Builds every service of a gate from a validated config. */
export async function createServices(config: GateConfig, deps: ServiceDeps = {}): Promise<GateServices> {
  const now = deps.now ?? Date.now;
  const metrics = createMetrics();
  const log: GateServices['log'] = {};
  const { trust, tls, keys } = await loadMaterials(config, deps.warn ?? ((l) => process.stderr.write(l + '\n')));
  const store: GateStore =
    deps.store ??
    (config.store.kind === 'memory'
      ? new MemoryStore(config.store.memoryMax, now)
      : new RedisStore({
          url: config.store.redisUrl,
          clusterNodes: config.store.clusterNodes,
          timeoutMs: config.store.timeoutMs,
          onError: () => metrics.storeErrors.inc(),
        }));
  const tokens = new TokenService({ keys, issuer: config.issuer, audience: config.audience, ttlS: config.tokenTtlS, skewS: config.maxSkewS, now });
  const identity: GateServices['identity'] =
    config.mode === 'direct'
      ? { direct: new DirectIdentityResolver(trust, now) }
      : {
          forwarded: new ForwardedVerifier({
            keys: parseHmacKeys(config.forwarded.hmacKeys ?? ''),
            maxSkewS: config.forwarded.maxSkewS,
            trustedProxies: config.forwarded.trustedProxies,
            replayCheck: config.forwarded.replayCheck,
            pathPrefix: config.pathPrefix,
            ...(config.mode === 'authorizer' ? { authorizeRoute: authorizeRoute(config.pathPrefix) } : {}),
            store,
            trust,
            metrics,
            now,
          }),
        };
  let revocation: RevocationChecker;
  try {
    revocation = new RevocationChecker({ ...config.revocation, metrics, now, log: (event) => log.current?.warn(event, String(event.event)) });
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_CRL_FILES', why: `cannot load a CRL: ${(err as Error).message}` }]);
  }
  let attestation: AttestationRegistry | undefined;
  try {
    attestation = config.attestation.registry ? AttestationRegistry.fromFile(config.attestation.registry) : undefined;
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_ATTESTATION_REGISTRY', why: (err as Error).message }]);
  }
  const audit = await openAuditTrail(config.audit, metrics, () => log.current);
  const denyList = new DenyList({ store, now, log: (event) => log.current?.warn(event, String(event.event)) });
  const cooldowns = new CooldownRegistry(store, now);
  const refusals = new RefusalRecords({ store, now, perIdentity: config.refusalRecords.perIdentity, max: config.refusalRecords.max });
  const limits = config.rateLimits.enabled
    ? new GateRateLimits({
        ...config.rateLimits,
        store,
        sink: (key, by, ttl) => store.incrementWindow(key, by, ttl),
        metrics,
        onCooldown: (thumbprint, untilMs) => void cooldowns.note(thumbprint, untilMs),
        now,
      })
    : undefined;
  const shedder = new LoadShedder({ maxInflight: config.maxInflight, maxEventLoopDelayMs: config.maxEventLoopDelayMs, metrics });
  const sinks: RefusalSinks = { metrics, audit, refusals, limitRefusal: limits && ((thumbprint) => limits.refusal(thumbprint)) };
  denyList.start();

  let closed: Promise<void> | undefined;
  return {
    config,
    now,
    metrics,
    store,
    tokens,
    trust,
    tls,
    identity,
    revocation,
    limits,
    attestation,
    audit,
    shedder,
    denyList,
    cooldowns,
    refusals,
    sinks,
    state: { draining: false },
    log,
    close() {
      closed ??= (async () => {
        // Every refusal answered so far is queued in the trail; close() drains it first.
        await audit?.close().catch((err: unknown) => log.current?.error({ event: 'audit_error', err }, 'audit trail could not be closed'));
        shedder.close();
        denyList.stop();
        await Promise.allSettled([store.close(), revocation.close()]);
      })();
      return closed;
    },
  };
}
