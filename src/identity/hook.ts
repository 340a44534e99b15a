import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { AgentIdentity } from './certificate.js';

/** Where the certificate comes from: the TLS peer (direct) or signed headers (forwarded). */
export type IdentitySource = (request: FastifyRequest) => AgentIdentity | Promise<AgentIdentity>;

/**
 * A further identity check (revocation, deny list) that may refuse with a contract error:
 * synchronous when it can answer from memory, a promise when it must ask the network.
 */
export type IdentityCheck = (agent: AgentIdentity) => void | Promise<void>;

/**
 * Step 3 of section 4 as an onRequest hook: the certificate from `source`, then each further
 * check in order (revocation, deny list); sets `request.agent` or fails with the contract code.
 * Checks answered from memory run synchronously: a keep-alive agent costs no promise here.
 */
export function identityHook(source: IdentitySource, checks: IdentityCheck[] = []) {
  const runFrom = (agent: AgentIdentity, i: number, done: HookHandlerDoneFunction): void => {
    for (; i < checks.length; i++) {
      let r: void | Promise<void>;
      try {
        r = checks[i]!(agent);
      } catch (err) {
        return done(err as Error);
      }
      if (r instanceof Promise) {
        const next = i + 1;
        r.then(() => runFrom(agent, next, done), done);
        return;
      }
    }
    done();
  };
  return function identify(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    let got: AgentIdentity | Promise<AgentIdentity>;
    try {
      got = source(request);
    } catch (err) {
      return done(err as Error);
    }
    if (got instanceof Promise) {
      got.then((agent) => {
        request.agent = agent;
        runFrom(agent, 0, done);
      }, done);
      return;
    }
    request.agent = got;
    runFrom(got, 0, done);
  };
}
