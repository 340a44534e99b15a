import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { DirectIdentityResolver } from './direct.js';

/** Step 3 of section 4 as an onRequest hook: sets `request.agent` or fails with the contract code. */
export function identityHook(resolver: DirectIdentityResolver) {
  return function identify(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    try {
      request.agent = resolver.resolve(request.raw.socket);
      done();
    } catch (err) {
      done(err as Error);
    }
  };
}
