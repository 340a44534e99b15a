import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { AgentIdentity } from './certificate.js';
import type { DirectIdentityResolver } from './direct.js';

/** A further identity check (revocation, deny list) that may refuse with a contract error. */
export type IdentityCheck = (agent: AgentIdentity) => Promise<void>;

/**
 * Step 3 of section 4 as an onRequest hook: the certificate, then each further check in order
 * (revocation, deny list); sets `request.agent` or fails with the contract code.
 */
export function identityHook(resolver: DirectIdentityResolver, checks: IdentityCheck[] = []) {
  return function identify(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    let agent: AgentIdentity;
    try {
      agent = resolver.resolve(request.raw.socket);
    } catch (err) {
      return done(err as Error);
    }
    request.agent = agent;
    if (checks.length === 0) return done();
    runChecks(agent, checks).then(() => done(), done);
  };
}

async function runChecks(agent: AgentIdentity, checks: IdentityCheck[]): Promise<void> {
  for (const check of checks) await check(agent);
}
