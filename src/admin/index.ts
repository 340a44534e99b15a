/**
 * The admin listener (PROTOCOL.md section 1): `/metrics`, `/healthz`, `/readyz`,
 * `/openapi.json` and the admin API. HTTP on loopback; HTTPS (optionally with admin client
 * certificates) when configured.
 * @module
 */
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import swagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { GateConfig } from '../config/index.js';
import { GateError } from '../errors.js';
import { makeErrorHandler } from '../http/errors.js';
import { checkCaBundle } from '../lib/pem.js';
import { registerInfoRoutes } from '../gate/index.js';
import { readFileFor, StartupError, type GateServices } from '../services.js';
import { adminRoutes } from './routes.js';
import { mergeOpenApi, OPENAPI_INFO } from './openapi.js';

export { mergeOpenApi } from './openapi.js';

/** Options of {@link buildAdminApp}. */
export interface AdminAppOptions {
  logger: FastifyServerOptions['logger'];
  readiness: () => Promise<GateError | undefined>;
  /** The public app, whose route schemas document the gate endpoints in /openapi.json. */
  gateApp?: FastifyInstance;
}

function adminHttps(config: GateConfig): HttpsServerOptions | undefined {
  const { tlsCertFile, tlsKeyFile, clientCaFile } = config.admin;
  if (!tlsCertFile || !tlsKeyFile) return undefined;
  const https: HttpsServerOptions = { cert: readFileFor('GATE_ADMIN_TLS_CERT', tlsCertFile), key: readFileFor('GATE_ADMIN_TLS_KEY', tlsKeyFile) };
  // With a client CA, only holders of an admin certificate get past the handshake.
  if (clientCaFile) Object.assign(https, { ca: adminClientCa(clientCaFile), requestCert: true, rejectUnauthorized: true });
  return https;
}

/**
 * GATE_ADMIN_CLIENT_CA's bundle, refused unless it holds certificates only, and at least one.
 * Node trusts its root store for client certificates when `ca` is empty (an empty secret mount,
 * say): every publicly issued client certificate would then authorize the admin API.
 */
function adminClientCa(file: string): string {
  const pem = readFileFor('GATE_ADMIN_CLIENT_CA', file);
  try {
    checkCaBundle(pem);
  } catch (err) {
    throw new StartupError([{ variable: 'GATE_ADMIN_CLIENT_CA', why: `${file} ${(err as Error).message}` }]);
  }
  return pem;
}

/** Builds the admin app (not listening). */
export async function buildAdminApp(services: GateServices, opts: AdminAppOptions): Promise<FastifyInstance> {
  const { config, metrics, sinks } = services;
  const https = adminHttps(config);
  const token = config.admin.tokenFile ? readFileFor('GATE_ADMIN_TOKEN_FILE', config.admin.tokenFile).trim() : undefined;
  if (config.admin.tokenFile && (!token || token.length < 16)) {
    throw new StartupError([{ variable: 'GATE_ADMIN_TOKEN_FILE', why: `${config.admin.tokenFile} must hold a secret of at least 16 characters` }]);
  }
  const app = Fastify({
    logger: opts.logger,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
    // A body the schema does not describe is refused, never trimmed or converted: ajv's fastify
    // defaults dropped an unknown field (a mistyped `ttl` made a permanent deny entry) and read
    // `ttl_s: true` as 1 second.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    ...(https ? { https } : {}),
  } as FastifyServerOptions);
  app.decorateRequest('agent', null);
  app.decorateRequest('refusedWith', null);
  app.decorateRequest('clientAddress', '');
  // Refusals here are logged and counted but not kept for lookup: they are operators' tools'
  // (no agent quotes them), and they must not spend the per-second budget of anonymous records
  // that agents' refusals need (a client of this listener could otherwise use it up).
  app.setErrorHandler(makeErrorHandler({ ...sinks, refusals: undefined }));
  // A known path with another method is 405 with Allow, as under P; anything else 404.
  const routes = new Map<string, { re: RegExp; methods: Set<string> }>();
  app.addHook('onRoute', (r) => {
    const entry = routes.get(r.url) ?? { re: new RegExp(`^${r.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z_]+/g, '[^/]+')}$`), methods: new Set<string>() };
    for (const m of [r.method].flat()) entry.methods.add(m);
    routes.set(r.url, entry);
  });
  app.setNotFoundHandler(async (request) => {
    const path = (request.raw.url ?? '/').split('?', 1)[0]!;
    for (const { re, methods } of routes.values()) {
      if (re.test(path)) throw new GateError('method_not_allowed', { headers: { allow: [...methods].join(', ') } });
    }
    throw new GateError('not_found');
  });
  await app.register(swagger, { openapi: { openapi: '3.1.0', info: OPENAPI_INFO } });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType).header('cache-control', 'no-store');
    return metrics.registry.metrics();
  });
  registerInfoRoutes(app, opts.readiness);
  await app.register(adminRoutes, { services, token, clientCertificates: Boolean(https && config.admin.clientCaFile) });
  app.get('/openapi.json', { schema: { hide: true } }, async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return mergeOpenApi(app.swagger() as Record<string, unknown>, opts.gateApp?.hasDecorator('swagger') ? (opts.gateApp.swagger() as Record<string, unknown>) : undefined, config.pathPrefix);
  });
  return app;
}
