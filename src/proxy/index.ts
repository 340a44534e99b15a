/**
 * The gated reverse proxy (PROTOCOL.md section 5) as a fastify plugin.
 * @module
 */
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { GateError } from '../errors.js';
import { Forwarder } from './forward.js';

export { Forwarder, type ForwarderOptions } from './forward.js';
export { isStrippedHeader, passHeaderProblem, STRIPPED_HEADERS, upstreamRawHeaders, upstreamRequestHeaders, type ForwardIdentity, type HeaderPolicy, type XffMode } from './headers.js';

/**
 * The methods a gated request may use (section 5): fastify's own set without TRACE, which a
 * front proxy answers itself (nginx refuses it too). Any other method is 405 with this `Allow`.
 */
export const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'QUERY'] as const;
/** The `Allow` value of a 405 on a gated path. */
export const PROXIED_ALLOW = PROXIED_METHODS.join(', ');

/** Options of {@link proxyRoutes}. */
export interface ProxyRoutesOptions {
  forwarder: Forwarder;
  /** The gate's guard: identity, token bound to the certificate, proxy limit. */
  guard: onRequestHookHandler;
}

/** Every path outside the gate prefix goes upstream once identity and token pass. */
export async function proxyRoutes(app: FastifyInstance, opts: ProxyRoutesOptions): Promise<void> {
  // Leave the body unread: it streams to the upstream only after the guards passed.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  // Synchronous: the forwarder answers from undici's callbacks, so no promise per request.
  const handler = (request: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply): void => {
    const agent = request.agent;
    const token = request.accessToken;
    if (!agent || !token) throw new GateError('token_missing');
    opts.forwarder.forward(request, reply, { agentId: agent.agentId, thumbprint: agent.thumbprint, tokenId: token.jti });
  };
  const route = { method: [...PROXIED_METHODS], onRequest: opts.guard, config: { route: 'proxy' as const }, schema: { hide: true }, handler };
  app.route({ ...route, url: '/' });
  app.route({ ...route, url: '/*' });
}
