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
    let token: VerifiedToken;
    try {
      // A token seen before is a map lookup; a new one is verified on node:crypto. Both are
      // synchronous, so no promise or closure per request.
      token = tokens.verifySync(value);
    } catch (err) {
      return done(err as Error);
    }
    const agent = request.agent;
    if (!agent) return done(new GateError('client_cert_required'));
    // The binding is checked on every request, also for cached tokens (RFC 8705 section 3).
    if (token.thumbprint !== agent.thumbprint) return done(new GateError('token_binding_mismatch'));
    request.accessToken = token;
    done();
  };
}
