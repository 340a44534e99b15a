/**
 * Assembles one standalone gate from its configuration: the public listener (the agentGate
 * plugin's endpoints under the prefix, everything else proxied behind its guard) and the
 * admin listener. Nothing listens until {@link Gate.listen}, so tests can build and close freely.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { LoggerOptions } from 'pino';
import swagger from '@fastify/swagger';
import { buildAdminApp } from './admin/index.js';
import { OPENAPI_INFO } from './admin/openapi.js';
import type { GateConfig } from './config/index.js';
import { GateError } from './errors.js';
import { installConnectionLimits, maxHeaderLines, serverTimeoutOptions, type ConnectionGuard, type ConnectionLimits } from './http/connections.js';
import { makeClientErrorHandler, makeConnectHandler, makeErrorHandler, sendRefusal, toGateError } from './http/errors.js';
import { decodeRequestPath, isGatePath } from './http/path.js';
import type { GateMetrics } from './metrics/index.js';
import { agentGate, unmatchedGatePath } from './plugin.js';
import { authorizerRoutes } from './authorizer/index.js';
import { Forwarder, PROXIED_ALLOW, proxyRoutes } from './proxy/index.js';
import { createServices, type GateServices, type ServiceDeps } from './services.js';
import type { GateStore } from './store/index.js';
import type { TokenService } from './tokens/index.js';

export { StartupError, loadMaterials, openAuditTrail, DEV_CA_MARKER } from './services.js';

/** Things a caller may supply instead of the defaults derived from config (tests, embedding). */
export interface GateDeps extends ServiceDeps {
  /** pino options or `false` to silence; default: JSON to stdout at the configured level. */
  logger?: LoggerOptions | false;
  /** Where log lines go instead of stdout (tests collect them to check redaction). */
  logStream?: NodeJS.WritableStream;
  /** Wraps this process's readiness for the admin `/readyz` (a cluster worker answers for every worker). */
  readiness?: (local: () => Promise<GateError | undefined>) => () => Promise<GateError | undefined>;
}

/** A built gate. */
export interface Gate {
  config: GateConfig;
  services: GateServices;
  metrics: GateMetrics;
  store: GateStore;
  tokens: TokenService;
  publicApp: FastifyInstance;
  adminApp: FastifyInstance;
  /** Open connections of the public listener, as its connection caps count them. */
  connections: ConnectionGuard;
  /** Binds both listeners; returns the actual ports (0 in config means random). */
  listen(): Promise<{ publicPort: number; adminPort: number }>;
  /** SIGTERM behaviour: readiness 503, stop accepting, let in-flight requests finish (bounded). */
  drain(): Promise<void>;
  /** Closes listeners, store and upstream pool. */
  close(): Promise<void>;
}

/** Log fields that may carry secrets: censored whatever level logs them. */
const REDACT = [
  'req.headers.authorization',
  'req.headers["x-gate-fwd-sig"]',
  'req.headers["x-gate-fwd-cert"]',
  'headers.authorization',
  'proof',
  'access_token',
  'attestation',
];

/** Builds a gate from a validated config. */
export async function buildGate(config: GateConfig, deps: GateDeps = {}): Promise<Gate> {
  const services = await createServices(config, deps);
  const logger: FastifyServerOptions['logger'] =
    deps.logger === false
      ? false
      : ({ level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' }, ...(deps.logger ?? {}), ...(deps.logStream ? { stream: deps.logStream } : {}) } as FastifyServerOptions['logger']);
  const { sinks, tls } = services;

  // Forwarded mode: a URL-encoded 16 KiB certificate header is about 24 KB (section 12).
  const maxHeaderSize = config.mode !== 'direct' ? 48 * 1024 : 16 * 1024;
  const limits: ConnectionLimits = {
    handshakeTimeoutMs: config.connections.handshakeTimeoutMs,
    headersTimeoutMs: config.connections.headersTimeoutMs,
    requestTimeoutMs: 30_000,
    idleTimeoutMs: config.connections.idleTimeoutMs,
    maxConnections: config.connections.max,
    // Behind nginx every connection comes from nginx: its own limit_conn caps each client address.
    maxConnectionsPerAddress: config.mode === 'direct' ? config.connections.maxPerAddress : 0,
  };
  const timeouts = serverTimeoutOptions(limits, Boolean(tls));
  const publicApp = Fastify({
    // requireHostHeader off: Node's own 400 for a missing Host is not problem+json; the edge refuses it.
    ...(tls ? { https: { ...tls, maxHeaderSize, requireHostHeader: false, ...timeouts } } : { http: { maxHeaderSize, requireHostHeader: false, ...timeouts } }),
    logger,
    // One access-log line per request is written by the gate itself (with agent and outcome).
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    // Request ids only correlate log lines; a random prefix and a counter cost no entropy per request.
    genReqId: ((prefix: string, n = 0) => () => `${prefix}${(n++).toString(36)}`)(randomBytes(4).toString('hex')),
    return503OnClosing: false,
    // fastify sets these on the server after creating it: the same values as above.
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    routerOptions: { maxParamLength: 2048 },
    clientErrorHandler: makeClientErrorHandler(sinks, () => services.log.current),
    frameworkErrors: (err, request, reply) => {
      sendRefusal(request, reply, toGateError(err) ?? new GateError('request_malformed', { cause: err }), sinks);
    },
  } as FastifyServerOptions);
  // One line over the cap, so that the edge sees a request with too many and refuses it.
  publicApp.server.maxHeadersCount = maxHeaderLines(config.mode) + 1;
  publicApp.server.on('connect', makeConnectHandler(sinks, () => services.log.current, PROXIED_ALLOW));
  const connections = installConnectionLimits(publicApp.server, limits, { metrics: services.metrics, log: () => services.log.current });
  services.log.current = publicApp.log;
  publicApp.setErrorHandler(makeErrorHandler(sinks));
  // Route schemas of the gate endpoints become the public half of /openapi.json (admin listener).
  await publicApp.register(swagger, { openapi: { openapi: '3.1.0', info: OPENAPI_INFO } });
  await publicApp.register(agentGate, { services });

  // Authorizer mode: nginx proxies; the gate only answers P/v1/authorize (section 13).
  const forwarder = config.mode === 'authorizer' ? undefined : new Forwarder({
    upstreamUrl: config.upstream.url!,
    timeoutMs: config.upstream.timeoutMs,
    maxBodyBytes: config.upstream.maxBodyBytes,
    headers: { pass: new Set(config.upstream.passHeaders), xff: config.upstream.xff },
  });
  if (forwarder) await publicApp.register(proxyRoutes, { forwarder, guard: publicApp.agentGate.guard });
  else await publicApp.register(authorizerRoutes, { services, guard: publicApp.agentGate.authorize });
  // A method no route takes (PROPFIND, TRACE...): 405 on a gated path (step 2, before
  // identity), the gate endpoints' own 404/405 under P; authorizer mode proxies nothing (404).
  publicApp.setNotFoundHandler(async (request) => {
    const path = decodeRequestPath(request.raw.url ?? '/');
    if (isGatePath(path, config.pathPrefix)) throw unmatchedGatePath(path, config.pathPrefix);
    if (!forwarder) throw new GateError('not_found', { detail: 'authorizer mode proxies nothing' });
    throw new GateError('method_not_allowed', { headers: { allow: PROXIED_ALLOW } });
  });

  const adminApp = await buildAdminApp(services, { logger, readiness: deps.readiness?.(publicApp.agentGate.readiness) ?? publicApp.agentGate.readiness, gateApp: publicApp });

  // Each part closes once, whichever of drain() and close() gets there first.
  const once = <T>(fn: () => Promise<T>) => {
    let p: Promise<T> | undefined;
    return () => (p ??= fn());
  };
  const closePublic = once(() => {
    const closing = publicApp.close();
    // Connections still in their TLS handshake carry no request to finish.
    connections.destroyPending();
    return closing;
  });
  const close = once(async () => {
    const closingAdmin = adminApp.close();
    // Nothing is left to report once the gate closes: a probe's kept-alive or half-open admin
    // connection must not hold the exit (it did, behind a cluster worker's shared admin listener).
    adminApp.server.closeAllConnections();
    await Promise.allSettled([closePublic(), closingAdmin]);
    await forwarder?.close().catch(() => undefined);
    await services.close();
  });

  return {
    config,
    services,
    metrics: services.metrics,
    store: services.store,
    tokens: services.tokens,
    publicApp,
    adminApp,
    connections,
    async listen() {
      // Give the store a moment to connect so the first requests are not refused; a store that
      // is down does not stop the start (readiness reports it and the gate recovers by itself).
      await services.store.waitReady?.(Math.max(2000, config.store.timeoutMs));
      // Until the deny list is read, identified requests are refused (503): read it first.
      await services.denyList.refresh();
      await publicApp.listen({ host: config.listen.host, port: config.listen.port });
      await adminApp.listen({ host: config.adminListen.host, port: config.adminListen.port });
      return { publicPort: portOf(publicApp), adminPort: portOf(adminApp) };
    },
    async drain() {
      services.state.draining = true;
      const timer = setTimeout(() => {
        // In-flight requests past the drain deadline are cut: the process must exit in time.
        publicApp.server.closeAllConnections();
        connections.destroyPending();
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

/** Server TLS options type, re-exported for embedders building their own listener. */
export type { HttpsServerOptions };

function portOf(app: FastifyInstance): number {
  const a = app.server.address();
  return typeof a === 'object' && a ? a.port : 0;
}
