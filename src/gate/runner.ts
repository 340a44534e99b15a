/**
 * The one runner of a table of checks. It stays synchronous while the checks are (a cached
 * identity, a cached token, deny-list and revocation hits) and only waits when a check returns
 * a promise: the keep-alive gated request allocates no promise or closure here.
 * @module
 */
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify';
import type { Check } from './context.js';

/** Answers a refusal (anything thrown by a check) for `request`. */
export type Refuse = (request: FastifyRequest, reply: FastifyReply, err: unknown) => void;

/**
 * Runs `checks` from index `i` on `request`, then calls `done()`; the first check that throws or
 * rejects is answered by `refuse` and the rest do not run.
 */
export function runChecks(checks: readonly Check[], i: number, request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction, refuse: Refuse): void {
  for (; i < checks.length; i++) {
    let r: void | Promise<void>;
    try {
      r = checks[i]!(request);
    } catch (err) {
      return refuse(request, reply, err);
    }
    if (r !== undefined) {
      const next = i + 1;
      r.then(
        () => runChecks(checks, next, request, reply, done, refuse),
        (err: unknown) => refuse(request, reply, err),
      );
      return;
    }
  }
  done();
}

/** `checks` as one onRequest hook that answers refusals itself (a host app's error handler never sees one). */
export function checksHook(checks: readonly Check[], refuse: Refuse): onRequestHookHandler {
  return function gateChecks(request, reply, done) {
    runChecks(checks, 0, request, reply, done, refuse);
  };
}

/** Runs `checks` in order inside a handler; rejects with the first refusal. */
export async function runChecksAsync(checks: readonly Check[], request: FastifyRequest): Promise<void> {
  for (const check of checks) {
    const r = check(request);
    if (r !== undefined) await r;
  }
}
