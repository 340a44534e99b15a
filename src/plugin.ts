/**
 * agent-gate as a fastify plugin: the gate endpoints under the path prefix and a `guard`
 * onRequest hook for protected routes, with the contract's checks, errors and metrics. The
 * standalone gate (app.ts) is this plugin plus the reverse proxy; an application can register
 * it on its own fastify server instead and skip the proxy hop.
 *
 * ```ts
 * import Fastify from 'fastify';
 * import { agentGate, loadConfig } from 'agent-gate';
 * const app = Fastify({ https: { key, cert, ca, requestCert: true, rejectUnauthorized: false } });
 * const { config, violations } = loadConfig(process.env, { embedded: true }); // refuse to start on violations
 * await app.register(agentGate, { config: config! });
 * app.get('/things', { onRequest: app.agentGate.guard }, async (req) => ({ agent: req.agent!.agentId }));
 * ```
 * The host server's `ca` must be the same trust bundle as `GATE_CLIENT_CA`: the gate takes
 * OpenSSL's handshake verdict (`socket.authorized`) as its first check and refuses (403
 * `client_cert_invalid`) whenever it is false; with a broader `ca` it also checks that the chain
 * ends at a `GATE_CLIENT_CA` certificate, verifying the chain's links itself.
 * @module
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import { challengeRoutes } from './challenge/index.js';
import { checkAttestation } from './attestation/index.js';
import type { GateConfig } from './config/index.js';
import { GateError, newRefusalId, problemFor } from './errors.js';
import { deferContinue } from './http/continue.js';
import { makeErrorHandler, sendRefusal, toGateError } from './http/errors.js';
import { decodeRequestPath, isGatePath } from './http/path.js';
import { powDifficulty } from './http/shedding.js';
import './http/types.js';
import { identityHook } from './identity/index.js';
import type { LabelOf } from './metrics/index.js';
import { createServices, type GateServices, type ServiceDeps } from './services.js';
import { tokenGuard } from './tokens/index.js';

/** What the plugin decorates the fastify instance with. */
export interface AgentGateDecoration {
  /** onRequest hook for protected routes: identity, token bound to the certificate, proxy limit. */
  guard: onRequestHookHandler;
  /** The gate's services (metrics registry, tokens, operator state...). */
  services: GateServices;
  /** Readiness of the gate: undefined when ready, else the refusal to answer. */
  readiness(): Promise<GateError | undefined>;
}

declare module 'fastify' {
  interface FastifyInstance {
    agentGate: AgentGateDecoration;
  }
}

/** Options of {@link agentGate}: ready services, or a config (and deps) to build them from. */
export type AgentGateOptions = ({ services: GateServices } | { config: GateConfig; deps?: ServiceDeps }) & {
  /**
   * Also install the edge steps on the whole server: load shedding, the path policy,
   * request metrics and the access log (the standalone gate does; default true).
   */
  edge?: boolean;
};

const ALLOWED: Record<string, string> = {
  '/v1/challenge': 'POST',
  '/v1/token': 'POST',
  '/jwks.json': 'GET, HEAD',
  '/healthz': 'GET, HEAD',
  '/readyz': 'GET, HEAD',
};

async function plugin(app: FastifyInstance, opts: AgentGateOptions): Promise<void> {
  const services = 'services' in opts ? opts.services : await createServices(opts.config, opts.deps);
  if (!('services' in opts)) app.addHook('onClose', () => services.close());
  const { config, metrics, store, tokens, shedder, limits, revocation, operator, sinks, state, now } = services;
  const prefix = config.pathPrefix;
  services.log.current ??= app.log;

  app.decorateRequest('agent', null);
  app.decorateRequest('accessToken', null);
  app.decorateRequest('receivedAt', 0);
  app.decorateRequest('refusedWith', null);
  app.decorateRequest('clientAddress', '');
  app.decorateRequest('ipLoad', 0);

  // Section 5: identity and token are checked before the body is read, and before the client
  // is told to send it (`100 Continue`), on the host's routes as well as the gate's.
  deferContinue(app.server);
  if (opts.edge !== false) installEdge(app, services);
  else {
    app.addHook('onRequest', (request, _reply, done) => {
      request.receivedAt = now();
      request.clientAddress = request.socket.remoteAddress ?? '';
      done();
    });
  }

  const identify = identityHook(services.identitySource, [
    ...(revocation.enabled ? [(agent: Parameters<typeof operator.check>[0]) => revocation.check(agent)] : []),
    (agent) => operator.check(agent),
  ]);

  const readiness = async (): Promise<GateError | undefined> => {
    if (state.draining) return new GateError('overloaded', { detail: 'draining', headers: { 'retry-after': '5' } });
    try {
      await store.ping();
      return undefined;
    } catch (err) {
      return toGateError(err) ?? new GateError('store_unavailable', { cause: err, headers: { 'retry-after': '1' } });
    }
  };

  await app.register(
    async (scope) => {
      scope.setErrorHandler(makeErrorHandler(sinks));
      await scope.register(challengeRoutes, {
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
        audit: services.audit,
        attest:
          services.attestation || config.attestation.required !== undefined
            ? (evidence, ctx) => checkAttestation(services.attestation, config.attestation.required, evidence, ctx)
            : undefined,
      });
      registerInfoRoutes(scope, services, readiness, true);
      // Unknown paths under P are 404; known ones with the wrong method 405 (step 2).
      const unmatched = async (request: FastifyRequest) => {
        const allow = ALLOWED[decodeRequestPath(request.raw.url ?? '/').slice(prefix.length)];
        if (allow) throw new GateError('method_not_allowed', { headers: { allow } });
        throw new GateError('not_found');
      };
      scope.all('', { schema: { hide: true } }, unmatched);
      scope.all('/*', { schema: { hide: true } }, unmatched);
    },
    { prefix },
  );

  const checkToken = tokenGuard(tokens);
  const steps: onRequestHookHandler[] = [identify, checkToken];
  // The proxy limit applies after the token check (section 12), and costs no store round trip.
  if (limits) {
    steps.push((request, _reply, done) => {
      try {
        limits.proxyRequest(request.agent!.thumbprint);
        done();
      } catch (err) {
        done(err as Error);
      }
    });
  }
  // One hook running the steps in order, answering refusals itself so the host app's own
  // error handler never sees (or reformats) a contract refusal.
  const guard: onRequestHookHandler = function guard(this: FastifyInstance, request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) {
    let i = 0;
    const next = (err?: Error) => {
      if (err) {
        const gateErr = toGateError(err) ?? new GateError('store_unavailable', { cause: err, headers: { 'retry-after': '1' } });
        sendRefusal(request, reply, gateErr, sinks);
        return;
      }
      const step = steps[i++];
      if (!step) return done();
      (step as (this: FastifyInstance, q: FastifyRequest, r: FastifyReply, d: HookHandlerDoneFunction) => void).call(this, request, reply, next as HookHandlerDoneFunction);
    };
    next();
  };
  app.decorate('agentGate', { guard, services, readiness });
}

/** Edge steps for the whole server: shedding (1), path policy (2), metrics, access log, drain. */
function installEdge(app: FastifyInstance, services: GateServices): void {
  const { metrics, shedder, state, now, config, sinks } = services;
  const prefix = config.pathPrefix;
  const healthPaths = new Set([`${prefix}/healthz`, `${prefix}/readyz`]);
  app.addHook('onRequest', (request, reply, done) => {
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
    const refusal = edgeRefusal(request, reply);
    // Refusals are answered here, not passed on: a host app's error handler must never see
    // (or reformat) a contract refusal.
    if (refusal) sendRefusal(request, reply, refusal, sinks);
    else done();
  });
  const edgeRefusal = (request: FastifyRequest, reply: FastifyReply): GateError | undefined => {
    let path: string;
    try {
      path = decodeRequestPath(request.raw.url ?? '/');
    } catch (err) {
      // Step 1 before step 2: an overloaded gate does not even parse bad paths.
      return shedder.refusal() ?? (err as GateError);
    }
    if (!healthPaths.has(path)) {
      const shed = shedder.refusal();
      if (shed) return shed;
      if (state.draining) {
        reply.header('connection', 'close');
        return new GateError('overloaded', { detail: 'draining', headers: { 'retry-after': '5' } });
      }
    }
    // Routing and decoding agree (find-my-way decodes the same way), but never let a gate
    // path reach a host route if they ever disagree.
    if (isGatePath(path, prefix) && !(request.routeOptions.url ?? '').startsWith(prefix)) return new GateError('not_found');
    return undefined;
  };
  // While draining, every response closes its connection, so keep-alive clients move on to
  // another instance and the listener can finish closing.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (state.draining) reply.header('connection', 'close');
    done(null, payload);
  });
}

/**
 * fastify's `frameworkErrors` option for a server that registers {@link agentGate}: router
 * errors (bad percent-encoding) become the contract's 400 problem+json.
 */
export function agentGateFrameworkErrors(err: Error, request: FastifyRequest, reply: FastifyReply): void {
  const sinks = request.server.hasDecorator('agentGate') ? request.server.agentGate.services.sinks : undefined;
  const gateErr = toGateError(err) ?? new GateError('request_malformed', { cause: err });
  if (sinks) sendRefusal(request, reply, gateErr, sinks);
  else void reply.code(gateErr.status).headers({ 'content-type': 'application/problem+json', 'cache-control': 'no-store' }).send(Buffer.from(JSON.stringify(problemFor(gateErr.code, gateErr.status, newRefusalId()))));
}

/** `/healthz`, `/readyz` and (public listener) `/jwks.json`. */
export function registerInfoRoutes(app: FastifyInstance, services: GateServices, readiness: () => Promise<GateError | undefined>, withJwks: boolean): void {
  const health = { config: { route: 'health' as const } };
  app.get('/healthz', health, async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return { status: 'ok' };
  });
  app.get('/readyz', health, async (_req, reply) => {
    const problem = await readiness();
    if (problem) throw problem;
    reply.header('cache-control', 'no-store');
    return { status: 'ready' };
  });
  if (withJwks) {
    app.get('/jwks.json', { config: { route: 'jwks' as const } }, async (_req, reply) => {
      reply.header('cache-control', 'no-store');
      return services.tokens.jwks();
    });
  }
}

/** The agent-gate fastify plugin (see module doc). */
export const agentGate = fp(plugin, { name: 'agent-gate', fastify: '5.x' });
