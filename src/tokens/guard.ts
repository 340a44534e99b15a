import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { GateError } from '../errors.js';
import type { TokenService, VerifiedToken } from './access-token.js';

/**
 * The token step of section 5 as an onRequest hook: `Authorization: Bearer` (scheme
 * case-insensitive), verified (cached), and bound to the presented certificate.
 * Runs after the identity hook, so `request.agent` is set.
 */
export function tokenGuard(tokens: TokenService) {
  return function checkAccessToken(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const auth = request.headers.authorization;
    if (typeof auth !== 'string') return done(new GateError('token_missing'));
    const sp = auth.indexOf(' ');
    const scheme = sp === -1 ? auth : auth.slice(0, sp);
    if (scheme.toLowerCase() !== 'bearer') return done(new GateError('token_missing', { detail: 'not a Bearer scheme' }));
    const value = sp === -1 ? '' : auth.slice(sp + 1).trim();
    if (value === '') return done(new GateError('token_invalid', { detail: 'empty bearer value' }));
    const bind = (token: VerifiedToken) => {
      const agent = request.agent;
      if (!agent) return done(new GateError('client_cert_required'));
      // The binding is checked on every request, also for cached tokens (RFC 8705 section 3).
      if (token.thumbprint !== agent.thumbprint) return done(new GateError('token_binding_mismatch'));
      request.accessToken = token;
      done();
    };
    let hit: VerifiedToken | undefined;
    try {
      hit = tokens.cached(value);
    } catch (err) {
      return done(err as Error);
    }
    // A token seen before is answered synchronously; a new one is verified (about 100 µs).
    if (hit) return bind(hit);
    tokens.verify(value).then(bind, (err: unknown) => done(err as Error));
  };
}
