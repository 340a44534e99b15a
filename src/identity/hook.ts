import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { AgentIdentity } from './certificate.js';

/** Where the certificate comes from: the TLS peer (direct) or signed headers (forwarded). */
export type IdentitySource = (request: FastifyRequest) => AgentIdentity | Promise<AgentIdentity>;

/** A further identity check (revocation, deny list) that may refuse with a contract error. */
export type IdentityCheck = (agent: AgentIdentity) => Promise<void>;

/**
 * Step 3 of section 4 as an onRequest hook: the certificate from `source`, then each further
 * check in order (revocation, deny list); sets `request.agent` or fails with the contract code.
 * The synchronous path (direct mode, nothing else to check) allocates no promise.
 */
export function identityHook(source: IdentitySource, checks: IdentityCheck[] = []) {
  return function identify(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    let got: AgentIdentity | Promise<AgentIdentity>;
    try {
      got = source(request);
    } catch (err) {
      return done(err as Error);
    }
    if (!(got instanceof Promise) && checks.length === 0) {
      request.agent = got;
      return done();
    }
    Promise.resolve(got)
      .then(async (agent) => {
        request.agent = agent;
        for (const check of checks) await check(agent);
      })
      .then(() => done(), done);
  };
}
