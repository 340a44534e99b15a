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
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import type { GateConfig } from './config/index.js';
import { GateError, newRefusalId, problemFor } from './errors.js';
import { buildPipelines, challengeRoutes, installEdge, installMinimalEdge, modeOf, registerInfoRoutes } from './gate/index.js';
// The request fields the gate adds (agent, accessToken, ...), for library users' types too.
import './gate/context.js';
import { deferContinue } from './http/continue.js';
import { makeErrorHandler, sendRefusal, toGateError } from './http/errors.js';
import { decodeRequestPath } from './http/path.js';
import { powDifficulty } from './http/shedding.js';
import { createServices, type GateServices, type ServiceDeps } from './services.js';

/** What the plugin decorates the fastify instance with. */
export interface AgentGateDecoration {
  /** onRequest hook for protected routes: the `proxied` table (identity, token bound to the certificate, proxy limit). */
  guard: onRequestHookHandler;
  /** onRequest hook of `P/v1/authorize` (authorizer mode): the `authorize` table. */
  authorize: onRequestHookHandler;
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

/** The refusal for a request under `prefix` that no gate route takes: 405 with `Allow` on a gate endpoint, else 404. */
export function unmatchedGatePath(path: string, prefix: string): GateError {
  const allow = ALLOWED[path.slice(prefix.length)];
  return allow ? new GateError('method_not_allowed', { headers: { allow } }) : new GateError('not_found');
}

async function plugin(app: FastifyInstance, opts: AgentGateOptions): Promise<void> {
  const services = 'services' in opts ? opts.services : await createServices(opts.config, opts.deps);
  if (!('services' in opts)) app.addHook('onClose', () => services.close());
  const { config, metrics, store, tokens, shedder, limits, sinks, state, now } = services;
  const prefix = config.pathPrefix;
  services.log.current ??= app.log;

  app.decorateRequest('agent', null);
  app.decorateRequest('accessToken', null);
  app.decorateRequest('receivedAt', 0);
  app.decorateRequest('refusedWith', null);
  app.decorateRequest('clientAddress', '');
  app.decorateRequest('ipLoad', 0);
  app.decorateRequest('gatePath', null);
  app.decorateRequest('exchange', null);

  // The whole decision path, as the tables of src/gate/pipeline.ts for this gate's mode.
  const edge = opts.edge !== false;
  const pipelines = buildPipelines(modeOf(config.mode, edge), services, sinks);
  const { tables } = pipelines;

  // Section 5: identity and token are checked before the body is read, and before the client
  // is told to send it (`100 Continue`), on the host's routes as well as the gate's.
  deferContinue(app.server);
  if (edge) installEdge(app, services, pipelines.edge, pipelines.refuse);
  else installMinimalEdge(app, now);

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
        tables: { challenge: tables.challenge!, token: tables.token! },
        hook: pipelines.hook,
        now,
        powDifficulty: config.pow === 'off' ? undefined : (ipLoad) => powDifficulty(config.pow, Math.max(shedder.load, ipLoad)),
        // Not awaited (the refusal is already answered); a bug in it is logged, never unhandled.
        onFailedProof: limits && ((thumbprint) => void limits.failedProof(thumbprint).catch((err: unknown) => app.log.error({ err }, 'failed-proof count'))),
        audit: services.audit,
      });
      registerInfoRoutes(scope, readiness, () => tokens.jwks());
      // Unknown paths under P are 404; known ones with the wrong method 405 (step 2).
      const unmatched = async (request: FastifyRequest) => {
        throw unmatchedGatePath(decodeRequestPath(request.raw.url ?? '/'), prefix);
      };
      scope.all('', { schema: { hide: true } }, unmatched);
      scope.all('/*', { schema: { hide: true } }, unmatched);
    },
    { prefix },
  );

  // One hook per table, answering refusals itself so the host app's own error handler never
  // sees (or reformats) a contract refusal.
  const gated = tables.proxied ?? tables.authorize!;
  const guard = pipelines.hook(gated);
  const authorize = tables.authorize ? pipelines.hook(tables.authorize) : guard;
  app.decorate('agentGate', { guard, authorize, services, readiness });
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

/** The agent-gate fastify plugin (see module doc). */
export const agentGate = fp(plugin, { name: 'agent-gate', fastify: '5.x' });
