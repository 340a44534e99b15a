/**
 * The admin API (PROTOCOL.md section 1): appeals and unblocking. Protected by a bearer secret
 * from `GATE_ADMIN_TOKEN_FILE` (compared in constant time) or an admin client certificate
 * (the listener's TLS with `GATE_ADMIN_CLIENT_CA` lets only those through the handshake).
 * Every action is audited.
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GateError } from '../errors.js';
import type { GateServices } from '../services.js';

/** Options of {@link adminRoutes}. */
export interface AdminRoutesOptions {
  services: GateServices;
  /** The bearer secret, when `GATE_ADMIN_TOKEN_FILE` is set. */
  token?: string;
  /** True when the listener verifies admin client certificates in the handshake. */
  clientCertificates: boolean;
}

const digest = (s: string) => createHash('sha256').update(s).digest();
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;

/** An answer without a body (what the DELETE operations send). */
const NO_CONTENT = { type: 'null', description: 'done' } as const;
const denyBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    thumbprint: { type: 'string', pattern: THUMBPRINT.source, description: 'x5t#S256 of the certificate to deny' },
    // As section 2 derives it: printable ASCII, at most 256 (anything else matches no certificate).
    agent_id: { type: 'string', pattern: '^[\\x20-\\x7e]{1,256}$', description: 'agent id to deny (all its certificates)' },
    reason: { type: 'string', minLength: 1, maxLength: 512 },
    ttl_s: { type: 'integer', minimum: 1, maximum: 31_536_000, description: 'expiry; absent means until removed' },
  },
  required: ['reason'],
} as const;
const denyEntry = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    thumbprint: { type: 'string' },
    agent_id: { type: 'string' },
    reason: { type: 'string' },
    created_at: { type: 'integer' },
    expires_at: { type: 'integer' },
  },
  required: ['id', 'reason', 'created_at'],
} as const;

/** Registers `/admin/v1/*`. */
export async function adminRoutes(app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const { services } = opts;
  const { denyList, cooldowns, refusals, audit, limits } = services;
  const tokenDigest = opts.token ? digest(opts.token) : undefined;

  app.addHook('onRequest', (request, _reply, done) => {
    if (opts.clientCertificates && (request.raw.socket as TLSSocket).authorized) return done();
    if (!tokenDigest) return done(new GateError('token_missing', { detail: 'admin API: no credential configured on this gate' }));
    const auth = request.headers.authorization;
    const m = typeof auth === 'string' ? /^bearer\s+(.+)$/i.exec(auth) : null;
    if (!m) return done(new GateError('token_missing', { detail: 'admin API needs a bearer secret or an admin certificate' }));
    // Digests first, so the comparison takes the same time whatever the presented length.
    if (!timingSafeEqual(digest(m[1]!.trim()), tokenDigest)) return done(new GateError('token_invalid', { detail: 'wrong admin secret' }));
    done();
  });

  const actor = (request: FastifyRequest) => ((request.raw.socket as TLSSocket).authorized ? 'admin-certificate' : 'admin-token');
  const audited = (request: FastifyRequest, action: string, fields: Record<string, unknown>) =>
    audit?.record({ event: `admin.${action}`, actor: actor(request), client_address: request.socket.remoteAddress, ...fields });

  app.get('/admin/v1/cooldowns', { schema: { summary: 'Certificates cooling down after repeated failed proofs', response: { 200: { type: 'object', properties: { cooldowns: { type: 'array', items: { type: 'object', properties: { thumbprint: { type: 'string' }, until: { type: 'integer' } } } } } } } } }, async () => ({
    cooldowns: await cooldowns.list(),
  }));

  app.delete<{ Params: { thumbprint: string } }>(
    '/admin/v1/cooldowns/:thumbprint',
    { schema: { summary: 'Clear a cooldown: the agent may try again at once', params: { type: 'object', properties: { thumbprint: { type: 'string', pattern: THUMBPRINT.source } }, required: ['thumbprint'] }, response: { 204: NO_CONTENT } } },
    async (request, reply) => {
      const { thumbprint } = request.params;
      await limits?.clearCooldown(thumbprint);
      const known = await cooldowns.forget(thumbprint);
      audited(request, 'cooldown_cleared', { thumbprint, known });
      return reply.code(204).send();
    },
  );

  app.get('/admin/v1/denylist', { schema: { summary: 'Live deny-list entries: exactly those the gates enforce (any live entry naming an agent denies it)', response: { 200: { type: 'object', properties: { entries: { type: 'array', items: denyEntry } } } } } }, async () => ({
    entries: await denyList.list(),
  }));

  app.post<{ Body: { thumbprint?: string; agent_id?: string; reason: string; ttl_s?: number } }>(
    '/admin/v1/denylist',
    { schema: { summary: 'Deny a certificate or an agent id on every gate sharing the store', body: denyBody, response: { 201: denyEntry } } },
    async (request, reply) => {
      const { thumbprint, agent_id, reason, ttl_s } = request.body;
      if (!thumbprint === !agent_id) throw new GateError('request_malformed', { detail: 'give exactly one of thumbprint and agent_id' });
      const entry = await denyList.deny({ thumbprint, agent_id, reason, expires_at: ttl_s ? services.now() + ttl_s * 1000 : undefined });
      audited(request, 'deny_added', { ...entry });
      return reply.code(201).send(entry);
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/admin/v1/denylist/:id',
    { schema: { summary: 'Remove a deny-list entry', params: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9a-f]{16}$' } }, required: ['id'] }, response: { 204: NO_CONTENT } } },
    async (request, reply) => {
      const removed = await denyList.undeny(request.params.id);
      audited(request, 'deny_removed', { id: request.params.id, removed });
      if (!removed) throw new GateError('not_found');
      return reply.code(204).send();
    },
  );

  app.get<{ Params: { id: string } }>(
    '/admin/v1/refusals/:id',
    {
      schema: {
        summary: 'Look up a refusal by the id in its problem+json instance (urn:agent-gate:refusal:<id>)',
        params: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Za-z0-9]{1,64}$' } }, required: ['id'] },
      },
    },
    async (request) => {
      const r = await refusals.get(request.params.id);
      audited(request, 'refusal_looked_up', { refusal_id: request.params.id, found: Boolean(r) });
      if (!r) throw new GateError('not_found');
      return r;
    },
  );
}
