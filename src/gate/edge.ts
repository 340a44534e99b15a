/**
 * The edge of a server the gate owns: one onRequest hook for every request that starts the
 * request's bookkeeping (in-flight count, duration, access log) and runs the mode's `edge` rows
 * (shedding, draining, path policy); an onSend hook that closes connections while draining.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { LabelOf } from '../metrics/index.js';
import type { Check } from './context.js';
import type { GateDeps } from './deps.js';
import { runChecks, type Refuse } from './runner.js';

/** Installs the edge on `app` (the whole server, not one scope). */
export function installEdge(app: FastifyInstance, deps: GateDeps, edge: readonly Check[], refuse: Refuse): void {
  const { metrics, shedder, state, now } = deps;
  app.addHook('onRequest', (request, reply, done) => {
    request.receivedAt = now();
    request.clientAddress = request.socket.remoteAddress ?? '';
    metrics.inflight.inc();
    shedder.inflight++;
    const started = process.hrtime.bigint();
    reply.raw.once('close', () => {
      metrics.inflight.dec();
      shedder.inflight--;
      const route = ((request.routeOptions.config as { route?: LabelOf<'route'> } | undefined)?.route ?? 'other') as LabelOf<'route'>;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.requestDuration.observe({ route }, seconds);
      request.log.info(
        { event: 'request', method: request.method, status: reply.statusCode, code: request.refusedWith ?? undefined, agent_id: request.agent?.agentId, thumbprint: request.agent?.thumbprint, ms: Math.round(seconds * 1e4) / 10 },
        'request',
      );
    });
    runChecks(edge, 0, request, reply, done, refuse);
  });
  // While draining, every response closes its connection, so keep-alive clients move on to
  // another instance and the listener can finish closing.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (state.draining) reply.header('connection', 'close');
    done(null, payload);
  });
}

/** The bookkeeping of a server whose edge is the host's (embedded without edge). */
export function installMinimalEdge(app: FastifyInstance, now: () => number): void {
  app.addHook('onRequest', (request, _reply, done) => {
    request.receivedAt = now();
    request.clientAddress = request.socket.remoteAddress ?? '';
    done();
  });
}
