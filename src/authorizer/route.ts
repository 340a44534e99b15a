/**
 * Authorizer mode (PROTOCOL.md section 13): nginx proxies gated requests to the upstream
 * itself and asks the gate `GET P/v1/authorize` first (auth_request). The gate runs the
 * guard of a gated request (identity from the signed headers, revocation, deny list, token,
 * binding, proxy limit) and answers 204 with the identity headers, or the refusal in carriers.
 * @module
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler, onSendHookHandler } from 'fastify';
import { GateError } from '../errors.js';
import type { GateMetrics } from '../metrics/index.js';
import type { GateServices } from '../services.js';
import { CARRIED_HEADERS, encodeRefusal } from './carriers.js';
import { authorizeRoute } from './paths.js';

/** Options of {@link authorizerRoutes}. */
export interface AuthorizerRoutesOptions {
  services: GateServices;
  /** The gate's guard (app.agentGate.guard): identity, revocation, deny list, token, binding, proxy limit. */
  guard: onRequestHookHandler;
}

/**
 * Seconds nginx may serve this allow from its cache: `GATE_AUTHZ_CACHE_S`, but never past
 * the token's `exp` (whole seconds left, rounded down).
 */
export function allowMaxAge(cacheS: number, tokenExpS: number, nowMs: number): number {
  return Math.max(0, Math.min(cacheS, Math.floor(tokenExpS - nowMs / 1000)));
}

/** Turns every problem+json answer of the route into the empty 401/403 with carriers. */
function carryRefusals(metrics: GateMetrics): onSendHookHandler {
  return function carryRefusal(_request, reply, payload, done) {
    const status = reply.statusCode;
    if (status < 400) return done(null, payload);
    metrics.authzDecisions.inc({ result: status >= 500 ? 'unavailable' : 'refuse' });
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : '');
    const carried = encodeRefusal(status, body, reply.getHeaders());
    for (const name of [...Object.keys(CARRIED_HEADERS), 'content-type', 'allow']) reply.removeHeader(name);
    reply.code(carried.status).headers(carried.headers);
    done(null, '');
  };
}

/**
 * Registers `GET P/v1/authorize` and, since the gate proxies nothing in this mode, a 404
 * `not_found` for every path outside `P`.
 */
export async function authorizerRoutes(app: FastifyInstance, opts: AuthorizerRoutesOptions): Promise<void> {
  const { config, metrics, now } = opts.services;
  const cacheS = config.authorizer.cacheS;
  app.get(
    authorizeRoute(config.pathPrefix),
    { onRequest: opts.guard, onSend: carryRefusals(metrics), config: { route: 'authorize' as const }, schema: { hide: true } },
    async (request: FastifyRequest, reply: FastifyReply) => {
      const agent = request.agent;
      const token = request.accessToken;
      // The guard sets both or answers a refusal itself.
      if (!agent || !token) throw new GateError('token_missing');
      const maxAge = allowMaxAge(cacheS, token.exp, now());
      metrics.authzDecisions.inc({ result: 'allow' });
      reply.code(204).headers({
        'x-agent-id': agent.agentId,
        'x-agent-thumbprint': agent.thumbprint,
        'x-agent-token-id': token.jti,
        // Not `private`: nginx caches nothing marked private.
        'cache-control': maxAge > 0 ? `max-age=${maxAge}` : 'no-store',
      });
      return reply.send();
    },
  );
  const notFound = async () => {
    throw new GateError('not_found', { detail: 'authorizer mode proxies nothing' });
  };
  app.all('/', { schema: { hide: true } }, notFound);
  app.all('/*', { schema: { hide: true } }, notFound);
}
