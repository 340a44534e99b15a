/**
 * `/healthz`, `/readyz` and (public listener) `/jwks.json`.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { GateError } from '../../errors.js';

/** Registers the info routes on `app`; `jwks` only on the public listener. */
export function registerInfoRoutes(app: FastifyInstance, readiness: () => Promise<GateError | undefined>, jwks?: () => unknown): void {
  const health = { config: { route: 'health' as const } };
  app.get('/healthz', health, async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return { status: 'ok' };
  });
  app.get('/readyz', health, async (_req, reply) => {
    const problem = await readiness();
    if (problem) throw problem;
    reply.header('cache-control', 'no-store');
    return { status: 'ready' };
  });
  if (jwks) {
    app.get('/jwks.json', { config: { route: 'jwks' as const } }, async (_req, reply) => {
      reply.header('cache-control', 'no-store');
      return jwks();
    });
  }
}
