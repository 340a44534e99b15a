/**
 * Assembles one gate from its configuration: the public listener (gate endpoints under the
 * prefix, everything else proxied) and the admin listener. No `listen` happens here until
 * {@link Gate.listen} is called, so tests can build, inject and close freely.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import { randomBytes } from 'node:crypto';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions, type onRequestHookHandler } from 'fastify';
import type { LoggerOptions } from 'pino';
import { challengeRoutes } from './challenge/index.js';
import type { ConfigViolation, GateConfig } from './config/index.js';
import { GateError } from './errors.js';
import { makeErrorHandler, sendRefusal, toGateError } from './http/errors.js';
import { decodeRequestPath, isGatePath } from './http/path.js';
import './http/types.js';
import { DirectIdentityResolver, ForwardedVerifier, identityHook, parseHmacKeys, TrustBundle, type IdentitySource } from './identity/index.js';
import { createMetrics, type GateMetrics, type LabelOf } from './metrics/index.js';
import { Forwarder, proxyRoutes } from './proxy/index.js';
import { RevocationChecker } from './revocation/index.js';
import { GateRateLimits } from './ratelimit/index.js';
import { AttestationRegistry, checkAttestation } from './attestation/index.js';
import { AuditLog, AuditSetupError } from './audit/index.js';
import { LoadShedder, powDifficulty } from './http/shedding.js';
import { MemoryStore, RedisStore, type GateStore } from './store/index.js';
import { KeySourceError, loadSigningKeys, TokenService, tokenGuard, type SigningKeySet } from './tokens/index.js';

/** Subject marker of the generated dev CA; prod refuses a trust bundle that contains it. */
export const DEV_CA_MARKER = /agent-gate dev CA/;

/** A startup problem that names the variable to change (same shape as config violations). */
export class StartupError extends Error {
  constructor(readonly violations: ConfigViolation[]) {
    super(violations.map((v) => `config violation: ${v.variable}: ${v.why}`).join('\n'));
    this.name = 'StartupError';
  }
}

/** Things a caller may supply instead of the defaults derived from config (tests, embedding). */
export interface GateDeps {
  store?: GateStore;
  now?: () => number;
  /** pino options or `false` to silence; default: JSON to stdout at the configured level. */
  logger?: LoggerOptions | false;
  /** Where log lines go instead of stdout (tests collect them to check redaction). */
  logStream?: NodeJS.WritableStream;
  /** Called once with a warning line for stderr (ephemeral key notice). */
  warn?: (line: string) => void;
}

/** A built gate. */
export interface Gate {
  config: GateConfig;
  metrics: GateMetrics;
  store: GateStore;
  tokens: TokenService;
  publicApp: FastifyInstance;
  adminApp: FastifyInstance;
  /** Binds both listeners; returns the actual ports (0 in config means random). */
  listen(): Promise<{ publicPort: number; adminPort: number }>;
  /** SIGTERM behaviour: readiness 503, stop accepting, let in-flight requests finish (bounded). */
  drain(): Promise<void>;
  /** Closes listeners, store and upstream pool. */
  close(): Promise<void>;
}

const REDACT = [
  'req.headers.authorization',
  'req.headers["x-gate-fwd-sig"]',
  'req.headers["x-gate-fwd-cert"]',
  'headers.authorization',
  'proof',
  'access_token',
  'attestation',
];

function readFileFor(variable: string, path: string | undefined): string {
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
      // `ca` only makes the server name acceptable issuers in the handshake; the gate verifies
      // the chain itself so every failure gets a contract error instead of a TLS alert.
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

/** Builds a gate from a validated config. */
export async function buildGate(config: GateConfig, deps: GateDeps = {}): Promise<Gate> {
  const now = deps.now ?? Date.now;
  const metrics = createMetrics();
  const { trust, tls, keys } = await loadMaterials(config, deps.warn ?? ((l) => process.stderr.write(l + '\n')));
  const logger: FastifyServerOptions['logger'] =
    deps.logger === false
      ? false
      : ({ level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' }, ...(deps.logger ?? {}), ...(deps.logStream ? { stream: deps.logStream } : {}) } as FastifyServerOptions['logger']);
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
  const forwarder = new Forwarder({ upstreamUrl: config.upstream.url!, timeoutMs: config.upstream.timeoutMs, maxBodyBytes: config.upstream.maxBodyBytes });
  const source: IdentitySource =
    config.mode === 'direct'
      ? ((resolver) => (request: FastifyRequest) => resolver.resolve(request.raw.socket))(new DirectIdentityResolver(trust, now))
      : ((verifier) => async (request: FastifyRequest) => {
          const agent = await verifier.verify(request);
          // Per-address limits use the client address nginx signed, never the proxy's.
          request.clientAddress = String(request.headers['x-gate-fwd-addr']);
          return agent;
        })(
          new ForwardedVerifier({
            keys: parseHmacKeys(config.forwarded.hmacKeys ?? ''),
            maxSkewS: config.forwarded.maxSkewS,
            trustedProxies: config.forwarded.trustedProxies,
            replayCheck: config.forwarded.replayCheck,
            pathPrefix: config.pathPrefix,
            store,
            trust,
            metrics,
            now,
          }),
        );
  let revocation: RevocationChecker;
  try {
    revocation = new RevocationChecker({
      ...config.revocation,
      metrics,
      now,
      log: (event) => publicApp.log.warn(event, String(event.event)),
    });
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_CRL_FILES', why: `cannot load a CRL: ${(err as Error).message}` }]);
  }
  let draining = false;
  // The trail opens before the app exists; its events reach the app's logger once it does.
  const logRef: { log?: FastifyInstance['log'] } = {};
  let audit: AuditLog | undefined;
  if (config.audit.file) {
    try {
      audit = await AuditLog.open({
        file: config.audit.file,
        keyFile: config.audit.keyFile!,
        // Checkpoints also go to the log, so truncating both trail files together is still seen.
        onCheckpoint: (cp) => logRef.log?.info({ event: 'audit_checkpoint', ...cp }, 'audit checkpoint'),
        onError: (err) => logRef.log?.error({ event: 'audit_error', err }, 'audit trail error'),
      });
    } catch (err) {
      if (err instanceof AuditSetupError) throw new StartupError([{ variable: err.variable, why: err.why }]);
      throw err;
    }
  }
  const sinks = { metrics, audit };
  let attestation: AttestationRegistry | undefined;
  try {
    attestation = config.attestation.registry ? AttestationRegistry.fromFile(config.attestation.registry) : undefined;
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_ATTESTATION_REGISTRY', why: (err as Error).message }]);
  }
  const shedder = new LoadShedder({ maxInflight: config.maxInflight, maxEventLoopDelayMs: config.maxEventLoopDelayMs, metrics });

  // Forwarded mode: a URL-encoded 16 KiB certificate header is about 24 KB (section 12).
  const maxHeaderSize = config.mode === 'forwarded' ? 32 * 1024 : 16 * 1024;
  const publicApp = Fastify({
    ...(tls ? { https: { ...tls, maxHeaderSize } } : { http: { maxHeaderSize } }),
    logger,
    // One access-log line per request is written by the gate itself (with agent and outcome).
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: () => randomBytes(8).toString('hex'),
    return503OnClosing: false,
    // Slow clients: whole request within 30 s, headers within 10 s, idle keep-alive 65 s.
    requestTimeout: 30_000,
    keepAliveTimeout: 65_000,
    routerOptions: { maxParamLength: 2048 },
    frameworkErrors: (err, request, reply) => {
      sendRefusal(request, reply, toGateError(err) ?? new GateError('request_malformed', { cause: err }), sinks);
    },
  } as FastifyServerOptions);
  publicApp.server.headersTimeout = 10_000;

  logRef.log = publicApp.log;
  publicApp.decorateRequest('agent', null);
  publicApp.decorateRequest('accessToken', null);
  publicApp.decorateRequest('receivedAt', 0);
  publicApp.decorateRequest('refusedWith', null);
  publicApp.decorateRequest('clientAddress', '');
  publicApp.decorateRequest('ipLoad', 0);
  publicApp.setErrorHandler(makeErrorHandler(sinks));

  const prefix = config.pathPrefix;
  const healthPaths = new Set([`${prefix}/healthz`, `${prefix}/readyz`]);

  // Global steps 1-2: shedding (draining for now) and the path policy, before routing matters.
  publicApp.addHook('onRequest', (request, reply, done) => {
    request.receivedAt = now();
    request.clientAddress = request.socket.remoteAddress ?? '';
    metrics.inflight.inc();
    shedder.inflight++;
    const started = process.hrtime.bigint();
    reply.raw.once('close', () => {
      metrics.inflight.dec();
      shedder.inflight--;
      const route = ((request.routeOptions.config as { route?: LabelOf<'route'> } | undefined)?.route ?? 'other') as LabelOf<'route'>;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.requestDuration.observe({ route }, seconds);
      request.log.info(
        { event: 'request', method: request.method, status: reply.statusCode, code: request.refusedWith ?? undefined, agent_id: request.agent?.agentId, thumbprint: request.agent?.thumbprint, ms: Math.round(seconds * 1e4) / 10 },
        'request',
      );
    });
    let path: string;
    try {
      path = decodeRequestPath(request.raw.url ?? '/');
    } catch (err) {
      // Step 1 before step 2: an overloaded gate does not even parse bad paths.
      return done(shedder.refusal() ?? (err as Error));
    }
    if (!healthPaths.has(path)) {
      const shed = shedder.refusal();
      if (shed) return done(shed);
    }
    if (draining && !healthPaths.has(path)) {
      reply.header('connection', 'close');
      return done(new GateError('overloaded', { detail: 'draining', headers: { 'retry-after': '5' } }));
    }
    // Routing and decoding agree (find-my-way decodes the same way), but never let a gate
    // path reach the upstream if they ever disagree.
    if (isGatePath(path, prefix) && (request.routeOptions.config as { route?: string } | undefined)?.route === 'proxy') {
      return done(new GateError('not_found'));
    }
    done();
  });

  // While draining, every response closes its connection, so keep-alive clients move on to
  // another instance and the listener can finish closing.
  publicApp.addHook('onSend', (_request, reply, payload, done) => {
    if (draining) reply.header('connection', 'close');
    done(null, payload);
  });

  const identify = identityHook(source, revocation.enabled ? [(agent) => revocation.check(agent)] : []);
  const limits = config.rateLimits.enabled
    ? new GateRateLimits({
        ...config.rateLimits,
        redis: store instanceof RedisStore ? store.redis : undefined,
        sink: (key, by, ttl) => store.incrementWindow(key, by, ttl),
        metrics,
      })
    : undefined;
  const readiness = async (): Promise<GateError | undefined> => {
    if (draining) return new GateError('overloaded', { detail: 'draining', headers: { 'retry-after': '5' } });
    try {
      await store.ping();
      return undefined;
    } catch (err) {
      return toGateError(err) ?? new GateError('store_unavailable', { cause: err, headers: { 'retry-after': '1' } });
    }
  };

  await publicApp.register(
    async (app) => {
      await app.register(challengeRoutes, {
        store,
        tokens,
        metrics,
        audience: config.audience,
        challengeTtlMs: config.challengeTtlMs,
        skewS: config.maxSkewS,
        identify,
        now,
        limits: limits && {
          challenge: (request, _reply, done) => {
            limits.challenge(request.clientAddress, request.agent!.thumbprint).then((ipLoad) => {
              request.ipLoad = ipLoad;
              done();
            }, done);
          },
          token: (request, _reply, done) => {
            limits.token(request.agent!.thumbprint).then(() => done(), done);
          },
        },
        powDifficulty: config.pow === 'off' ? undefined : (request) => powDifficulty(config.pow, Math.max(shedder.load, request.ipLoad)),
        onFailedProof: limits && ((agent) => void limits.failedProof(agent.thumbprint)),
        audit,
        attest:
          attestation || config.attestation.required !== undefined
            ? (evidence, ctx) => checkAttestation(attestation, config.attestation.required, evidence, ctx)
            : undefined,
      });
      registerInfoRoutes(app, { tokens, readiness, withJwks: true });
      const allowed: Record<string, string> = {
        '/v1/challenge': 'POST',
        '/v1/token': 'POST',
        '/jwks.json': 'GET, HEAD',
        '/healthz': 'GET, HEAD',
        '/readyz': 'GET, HEAD',
      };
      // Unknown paths under P are 404; known ones with the wrong method 405 (step 2).
      const unmatched = async (request: FastifyRequest) => {
        const path = decodeRequestPath(request.raw.url ?? '/').slice(prefix.length);
        const allow = allowed[path];
        if (allow) throw new GateError('method_not_allowed', { headers: { allow } });
        throw new GateError('not_found');
      };
      app.all('', unmatched);
      app.all('/*', unmatched);
    },
    { prefix },
  );

  const guards: onRequestHookHandler[] = [identify, tokenGuard(tokens)];
  // The proxy limit applies after the token check (section 12), and costs no store round trip.
  if (limits) {
    guards.push((request, _reply, done) => {
      try {
        limits.proxyRequest(request.agent!.thumbprint);
        done();
      } catch (err) {
        done(err as Error);
      }
    });
  }
  await publicApp.register(proxyRoutes, { forwarder, guards });

  const adminApp = Fastify({ logger, logController: new LogController({ disableRequestLogging: true }), return503OnClosing: false, ...adminHttps(config) });
  adminApp.decorateRequest('agent', null);
  adminApp.decorateRequest('refusedWith', null);
  adminApp.setErrorHandler(makeErrorHandler(sinks));
  adminApp.setNotFoundHandler(async () => {
    throw new GateError('not_found');
  });
  adminApp.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType).header('cache-control', 'no-store');
    return metrics.registry.metrics();
  });
  registerInfoRoutes(adminApp, { tokens, readiness, withJwks: false });

  // Each part closes once, whichever of drain() and close() gets there first.
  const once = <T>(fn: () => Promise<T>) => {
    let p: Promise<T> | undefined;
    return () => (p ??= fn());
  };
  const closePublic = once(() => publicApp.close());
  const close = once(async () => {
    await Promise.allSettled([closePublic(), adminApp.close()]);
    // After the listeners: every refusal answered so far is in the queue; close() drains it.
    await audit?.close().catch((err: unknown) => publicApp.log.error({ event: 'audit_error', err }, 'audit trail could not be closed'));
    shedder.close();
    await Promise.allSettled([forwarder.close(), store.close(), revocation.close()]);
  });

  return {
    config,
    metrics,
    store,
    tokens,
    publicApp,
    adminApp,
    async listen() {
      // Give the store a moment to connect so the first requests are not refused; a store that
      // is down does not stop the start (readiness reports it and the gate recovers by itself).
      await store.waitReady?.(Math.max(2000, config.store.timeoutMs));
      await publicApp.listen({ host: config.listen.host, port: config.listen.port });
      await adminApp.listen({ host: config.adminListen.host, port: config.adminListen.port });
      return { publicPort: portOf(publicApp), adminPort: portOf(adminApp) };
    },
    async drain() {
      draining = true;
      const timer = setTimeout(() => {
        // In-flight requests past the drain deadline are cut: the process must exit in time.
        publicApp.server.closeAllConnections();
      }, config.drainTimeoutMs);
      timer.unref();
      try {
        // The public listener stops accepting and waits for in-flight requests; meanwhile the
        // admin listener keeps answering, with /readyz at 503, so probes see the drain.
        await closePublic();
      } finally {
        clearTimeout(timer);
        await close();
      }
    },
    close,
  };
}

function adminHttps(config: GateConfig): Partial<FastifyServerOptions> {
  const { tlsCertFile, tlsKeyFile, clientCaFile } = config.admin;
  if (!tlsCertFile || !tlsKeyFile) return {};
  const https: HttpsServerOptions = {
    cert: readFileFor('GATE_ADMIN_TLS_CERT', tlsCertFile),
    key: readFileFor('GATE_ADMIN_TLS_KEY', tlsKeyFile),
  };
  // With a client CA, only holders of an admin certificate get past the handshake.
  if (clientCaFile) Object.assign(https, { ca: readFileFor('GATE_ADMIN_CLIENT_CA', clientCaFile), requestCert: true, rejectUnauthorized: true });
  return { https } as Partial<FastifyServerOptions>;
}

function registerInfoRoutes(app: FastifyInstance, opts: { tokens: TokenService; readiness: () => Promise<GateError | undefined>; withJwks: boolean }): void {
  const health = { config: { route: 'health' } };
  app.get('/healthz', health, async (_req, reply: FastifyReply) => {
    reply.header('cache-control', 'no-store');
    return { status: 'ok' };
  });
  app.get('/readyz', health, async (_req, reply: FastifyReply) => {
    const problem = await opts.readiness();
    if (problem) throw problem;
    reply.header('cache-control', 'no-store');
    return { status: 'ready' };
  });
  if (opts.withJwks) {
    app.get('/jwks.json', { config: { route: 'jwks' } }, async (_req, reply: FastifyReply) => {
      reply.header('cache-control', 'no-store');
      return opts.tokens.jwks();
    });
  }
}

function portOf(app: FastifyInstance): number {
  const a = app.server.address();
  return typeof a === 'object' && a ? a.port : 0;
}
