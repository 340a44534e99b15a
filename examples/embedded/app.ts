/**
 * Example: agent-gate embedded in an application's own fastify server, with no proxy hop.
 *
 * The application terminates TLS itself and asks for client certificates
 * (`requestCert: true, rejectUnauthorized: false`): the gate verifies them itself, so a
 * missing or untrusted certificate gets the contract's problem+json refusal instead of a TLS
 * alert. Agents get their token from the gate endpoints under the path prefix
 * (`/.agent-gate/v1/challenge`, `/.agent-gate/v1/token`) and present it on the protected
 * routes, which carry `{ onRequest: app.agentGate.guard }`.
 *
 * Run with the gate's `GATE_*` variables (GATE_TLS_CERT, GATE_TLS_KEY, GATE_CLIENT_CA,
 * GATE_STORE...; GATE_UPSTREAM_URL does not apply): `npx tsx examples/embedded/app.ts`.
 * @module
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify';
// In an application: `from 'agent-gate'`.
import { agentGate, agentGateFrameworkErrors, formatViolation, loadConfig, type ServiceDeps } from '../../src/index.js';

/** Options of {@link buildExampleApp} (tests inject a clock and a logger). */
export interface ExampleAppOptions {
  /** Passed to the gate's services: `now`, `store`, `warn`. */
  deps?: ServiceDeps;
  /** The app's own logger; default JSON to stdout at GATE_LOG_LEVEL. */
  logger?: FastifyServerOptions['logger'];
  /** Told of every error the app's own error handler formats (an error tracker; tests). */
  onAppError?: (err: unknown) => void;
}

/** A thing of the example API. */
export interface Thing {
  id: number;
  name: string;
  /** agent_id of the agent that created it. */
  owner: string;
}

/** The app's own error format, deliberately unlike problem+json. */
export interface AppErrorBody {
  ok: false;
  error: { status: number; message: string };
}

/** The content type of the app's own errors. */
export const APP_ERROR_TYPE = 'application/vnd.things.error+json';

/**
 * Builds the example app from the environment (the gate's `GATE_*` variables). Nothing
 * listens until `app.listen`; `app.close()` also closes the gate's store.
 */
export async function buildExampleApp(env: Record<string, string | undefined>, opts: ExampleAppOptions = {}): Promise<FastifyInstance> {
  // Embedded: the gate proxies nothing, so no GATE_UPSTREAM_URL is required.
  const { config, violations } = loadConfig(env, { embedded: true });
  if (!config || violations.length > 0) throw new Error(violations.map(formatViolation).join('\n'));
  if (config.mode !== 'direct' || !config.tls.certFile || !config.tls.keyFile || !config.tls.clientCaFile) {
    throw new Error('this example terminates TLS itself: GATE_MODE=direct with GATE_TLS_CERT, GATE_TLS_KEY and GATE_CLIENT_CA');
  }

  const app = Fastify({
    https: {
      key: readFileSync(config.tls.keyFile),
      cert: readFileSync(config.tls.certFile),
      // Only advertises acceptable issuers in the handshake: the gate verifies the chain itself.
      ca: readFileSync(config.tls.clientCaFile),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: config.tls.minVersion,
    },
    logger: opts.logger ?? { level: config.logLevel },
    // Router errors (bad percent-encoding) answered as the contract's problem+json.
    frameworkErrors: agentGateFrameworkErrors,
  });

  // The app's own error format. Gate refusals never reach it: the gate answers them itself,
  // as problem+json, on its endpoints and in the guard.
  app.setErrorHandler((err: FastifyError, request, reply) => {
    opts.onAppError?.(err);
    const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
    if (status >= 500) request.log.error({ err }, 'things: internal error');
    const body: AppErrorBody = { ok: false, error: { status, message: status >= 500 ? 'internal error' : err.message } };
    return reply.code(status).type(APP_ERROR_TYPE).send(Buffer.from(JSON.stringify(body)));
  });

  await app.register(agentGate, { config, deps: opts.deps });

  const things: Thing[] = [];
  const guarded = { onRequest: app.agentGate.guard };

  // Not protected: no certificate, no token.
  app.get('/public', async () => ({ ok: true, hello: 'world' }));

  app.get('/things', guarded, async (request) => {
    // The guard has run: request.agent and request.accessToken are set.
    const agent = request.agent!;
    return { ok: true, agent_id: agent.agentId, thumbprint: agent.thumbprint, token_id: request.accessToken!.jti, things: things.filter((t) => t.owner === agent.agentId) };
  });

  app.post<{ Body: { name: string } }>(
    '/things',
    {
      ...guarded,
      schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 100 } } } },
    },
    async (request, reply) => {
      const thing: Thing = { id: things.length + 1, name: request.body.name, owner: request.agent!.agentId };
      things.push(thing);
      return reply.code(201).send({ ok: true, thing });
    },
  );

  return app;
}

/** Builds the app from `process.env`, waits for the store and listens on GATE_LISTEN. */
async function main(): Promise<void> {
  const app = await buildExampleApp(process.env);
  const { config, store } = app.agentGate.services;
  await store.waitReady?.(Math.max(2000, config.store.timeoutMs));
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const stop = () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  });
}
