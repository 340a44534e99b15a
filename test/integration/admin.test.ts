/**
 * The admin API: credentials, refusal lookup by id, clearing a cooldown, a deny-list entry
 * reaching another gate through the store, and /openapi.json validating as OpenAPI 3.1.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { closeAll } from '../helpers/suite.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const SECRET = 'admin-secret-for-tests-0123456789';
let fx: Fixtures;
let up: RecordingUpstream;
let tokenFile: string;
let a: RunningGate;
let b: RunningGate;
const closers: (() => Promise<void>)[] = [];
let n = 0;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  tokenFile = join(fx.dir, 'admin.token');
  writeFileSync(tokenFile, SECRET + '\n', { mode: 0o600 });
  const env = testEnv(fx, { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: up.url, GATE_ADMIN_TOKEN_FILE: tokenFile, GATE_RATE_LIMITS: 'on', GATE_RATE_FAILED_PROOFS: '2/600' });
  a = await startGate(env);
  b = await startGate(env);
});
afterAll(async () => {
  await closeAll(closers.reverse());
  await a?.close();
  await b?.close();
  await up?.close();
});

const admin = (g: RunningGate, path: string, init: { method?: string; body?: unknown; secret?: string | null } = {}) =>
  fetch(`${g.adminUrl}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      ...(init.secret === null ? {} : { authorization: `Bearer ${init.secret ?? SECRET}` }),
      ...(init.body ? { 'content-type': 'application/json' } : {}),
    },
    body: init.body ? JSON.stringify(init.body) : undefined,
  });
async function agentCert(): Promise<KeyAndCert> {
  return issueAgentCert(fx.ca, `admin-${n++}`, { alg: 'ec-p256' });
}
function client(g: RunningGate, who: KeyAndCert): GateClient {
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetryAfterS: 0 });
  closers.push(() => c.close());
  return c;
}

describe('admin API', () => {
  it('refuses requests without the credential or with a wrong one; health and metrics stay open', async () => {
    const none = await admin(a, '/admin/v1/denylist', { secret: null });
    expect(none.status).toBe(401);
    expect(((await none.json()) as { code: string }).code).toBe('token_missing');
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="agent-gate"');
    const wrong = await admin(a, '/admin/v1/denylist', { secret: 'x'.repeat(33) });
    expect([wrong.status, ((await wrong.json()) as { code: string }).code]).toEqual([401, 'token_invalid']);
    expect((await admin(a, '/admin/v1/denylist')).status).toBe(200);
    for (const p of ['/metrics', '/healthz', '/readyz', '/openapi.json']) expect((await admin(a, p, { secret: null })).status, p).toBe(200);
  });

  it('a known path with another method is 405 with its Allow (as under P); an unknown path 404', async () => {
    for (const [method, path, allow] of [
      ['PUT', '/admin/v1/denylist', 'GET, HEAD, POST'],
      ['POST', '/metrics', 'GET, HEAD'],
      ['GET', `/admin/v1/denylist/${'a'.repeat(16)}`, 'DELETE'],
      ['PATCH', `/admin/v1/cooldowns/${'Z'.repeat(43)}`, 'DELETE'],
    ] as const) {
      const r = await admin(a, path, { method });
      expect([method, path, r.status, r.headers.get('allow'), r.headers.get('content-type'), ((await r.json()) as { code: string }).code]).toEqual([method, path, 405, allow, 'application/problem+json', 'method_not_allowed']);
    }
    const unknown = await admin(a, '/admin/v1/nope');
    const body = (await unknown.json()) as { code: string; instance: string };
    expect([unknown.status, body.code]).toEqual([404, 'not_found']);
    // The admin listener's refusals are not kept for lookup (nor do they spend the anonymous budget).
    expect((await admin(a, `/admin/v1/refusals/${body.instance.split(':').at(-1)!}`)).status).toBe(404);
  });

  it("a refusal's instance id can be looked up", async () => {
    const r = await call(tlsAgent(fx, fx.agents.foreign), `${a.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    const id = String(r.json().instance).split(':').at(-1)!;
    await waitFor(async () => (await admin(a, `/admin/v1/refusals/${id}`)).status === 200, 5000, 'refusal record');
    const rec = (await (await admin(b, `/admin/v1/refusals/${id}`)).json()) as Record<string, unknown>;
    expect(rec).toMatchObject({ refusal_id: id, code: 'client_cert_invalid', status: 403 });
    expect((await admin(a, '/admin/v1/refusals/doesnotexist')).status).toBe(404);
  });

  it('an admin clears a failed-proof cooldown and the agent completes the flow at once', async () => {
    const who = await agentCert();
    const c = client(a, who);
    for (let i = 0; i < 2; i++) {
      const ch = await c.challenge();
      expect((await c.submitProof({ challenge_id: ch.challenge_id, proof: await c.signProof(ch, { payload: { aud: 'x' } }) })).status).toBe(403);
    }
    expect((await c.request('/blocked').catch((e: { code: string }) => ({ status: e.code }))).status).toBe('rate_limited');
    const list = (await (await admin(a, '/admin/v1/cooldowns')).json()) as { cooldowns: { thumbprint: string }[] };
    expect(list.cooldowns.map((x) => x.thumbprint)).toContain(c.thumbprint);
    expect((await admin(a, `/admin/v1/cooldowns/${c.thumbprint}`, { method: 'DELETE' })).status).toBe(204);
    expect((await c.request('/unblocked')).status).toBe(200);
  });

  it('a deny-list entry made on one gate refuses the agent on another gate sharing the store', async () => {
    const who = await agentCert();
    const onB = client(b, who);
    expect((await onB.request('/before')).status).toBe(200);
    const res = await admin(a, '/admin/v1/denylist', { method: 'POST', body: { thumbprint: onB.thumbprint, reason: 'test: compromised key' } });
    expect(res.status).toBe(201);
    const entry = (await res.json()) as { id: string };
    const agentOnB = tlsAgent(fx, who);
    closers.push(() => agentOnB.close());
    await waitFor(async () => (await call(agentOnB, `${b.url}/.agent-gate/v1/challenge`, { method: 'POST' })).status === 403, 5000, 'deny entry to reach gate B');
    const r = await call(agentOnB, `${b.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect(r.json().code).toBe('agent_denied');
    expect((await admin(b, `/admin/v1/denylist/${entry.id}`, { method: 'DELETE' })).status).toBe(204);
    await waitFor(async () => (await call(agentOnB, `${a.url}/.agent-gate/v1/challenge`, { method: 'POST' })).status === 201, 5000, 'removal to reach gate A');
  });

  it('deny by agent id; malformed admin bodies are 400 request_malformed', async () => {
    const who = await agentCert();
    const id = `urn:agent:admin-${n - 1}`;
    expect((await admin(a, '/admin/v1/denylist', { method: 'POST', body: { agent_id: id, reason: 'test', ttl_s: 60 } })).status).toBe(201);
    const r = await call(tlsAgent(fx, who), `${a.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r.status, r.json().code]).toEqual([403, 'agent_denied']);
    for (const body of [{}, { reason: 'x' }, { thumbprint: 'short', reason: 'x' }, { thumbprint: 'A'.repeat(43), agent_id: 'x', reason: 'x' }]) {
      const bad = await admin(a, '/admin/v1/denylist', { method: 'POST', body });
      expect([bad.status, ((await bad.json()) as { code: string }).code], JSON.stringify(body)).toEqual([400, 'request_malformed']);
    }
  });

  it('/openapi.json is a valid OpenAPI 3.1 document covering the gate endpoints, the JWKS and the admin API', async () => {
    const doc = (await (await admin(a, '/openapi.json', { secret: null })).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe('3.1.0');
    const result = await new Validator().validate(doc as never);
    expect(JSON.stringify(result.errors ?? [], null, 1)).toBe('[]');
    expect(result.valid).toBe(true);
    for (const p of ['/.agent-gate/v1/challenge', '/.agent-gate/v1/token', '/.agent-gate/jwks.json', '/admin/v1/denylist', '/admin/v1/cooldowns/{thumbprint}', '/admin/v1/refusals/{id}']) {
      expect(Object.keys(doc.paths), p).toContain(p);
    }
  });
});
