/**
 * What an outside review of the operator surface and the SDK found, each against a real gate
 * (every test failed on the code at cc4c97b): the admin API refuses a deny-list body its schema
 * does not describe instead of trimming or converting it; /openapi.json describes the admin
 * operations as they answer; the gate's own refusals carry X-Agent-Gate-Refusal and the API's
 * answers never do, so the SDK re-sends a POST only after the gate's refusal; a malformed
 * Retry-After is no delay; one signing key under two kids is refused at start.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { generateSigningJwk } from '../../src/tokens/keys.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const SECRET = 'admin-secret-for-tests-0123456789';
let fx: Fixtures;
let up: RecordingUpstream;
let g: RunningGate;
const extra: RunningGate[] = [];

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  const tokenFile = join(fx.dir, 'admin.token');
  writeFileSync(tokenFile, SECRET + '\n', { mode: 0o600 });
  g = await startGate(testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_ADMIN_TOKEN_FILE: tokenFile }));
});
afterAll(async () => {
  for (const x of extra) await x.close();
  await g?.close();
  await up?.close();
});

const post = (body: string) =>
  fetch(`${g.adminUrl}/admin/v1/denylist`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' }, body });
const listed = async () => ((await (await fetch(`${g.adminUrl}/admin/v1/denylist`, { headers: { authorization: `Bearer ${SECRET}` } })).json()) as { entries: { thumbprint?: string; agent_id?: string }[] }).entries;

describe('admin API: POST /admin/v1/denylist refuses bad input (common rule: every bad input gets a precise problem+json error and leaves no state behind)', () => {
  it('an unknown field (OpenAPI body schema: additionalProperties false) is refused, not dropped: a typo "ttl" must not create a permanent entry', async () => {
    const tp = 'U'.repeat(43);
    const r = await post(JSON.stringify({ thumbprint: tp, reason: 'temporary block', ttl: 60 }));
    const body = (await r.json()) as { code?: string; expires_at?: number };
    expect([r.status, body.code], JSON.stringify(body)).toEqual([400, 'request_malformed']);
    expect((await listed()).some((e) => e.thumbprint === tp)).toBe(false);
  });

  it.each([
    ['ttl_s as a string', { ttl_s: '60' }],
    ['ttl_s as a boolean (became a 1 s expiry)', { ttl_s: true }],
    ['reason as a number', { reason: 123 }],
    ['reason as an array', { reason: ['x'] }],
  ])('a field of the wrong type (%s) is 400 request_malformed (OpenAPI: ttl_s integer, reason string), no entry made', async (_label, patch) => {
    const tp = Buffer.from(_label).toString('base64url').padEnd(43, 'x').slice(0, 43);
    const r = await post(JSON.stringify({ thumbprint: tp, reason: 'r', ...patch }));
    const body = (await r.json()) as { code?: string };
    expect([r.status, body.code], JSON.stringify(body)).toEqual([400, 'request_malformed']);
    expect((await listed()).some((e) => e.thumbprint === tp)).toBe(false);
  });

  it('an agent_id no certificate can have (protocol section 2: at most 256 printable ASCII characters) is refused', async () => {
    for (const agent_id of ['a\nb\u0000', 'caf\u00e9']) {
      const r = await post(JSON.stringify({ agent_id, reason: 'r' }));
      expect(r.status, JSON.stringify(agent_id)).toBe(400);
    }
  });
});

describe('/openapi.json describes the admin API as it is (protocol section 1: "The admin API ... is the gate\'s own, described by GET /openapi.json")', () => {
  it('each /admin/v1 operation names its credential, its real success status and its problem+json refusals', async () => {
    const doc = (await (await fetch(`${g.adminUrl}/openapi.json`)).json()) as { security?: unknown; paths: Record<string, Record<string, { security?: Record<string, unknown>[]; responses?: Record<string, unknown> }>> };
    const wrong: string[] = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      if (!path.startsWith('/admin/v1/')) continue;
      for (const [method, op] of Object.entries(item)) {
        const where = `${method.toUpperCase()} ${path}`;
        const sec = op.security ?? (doc.security as Record<string, unknown>[] | undefined);
        if (!sec?.some((s) => 'adminBearer' in s)) wrong.push(`${where}: no security requirement (adminBearer is defined but unused)`);
        const codes = Object.keys(op.responses ?? {});
        if (method === 'delete' && !codes.includes('204')) wrong.push(`${where}: documents ${codes.join(',')}, answers 204`);
        if (!codes.some((c) => c === '4XX' || c === '401')) wrong.push(`${where}: no problem+json refusal documented (401/4XX)`);
      }
    }
    const del = await fetch(`${g.adminUrl}/admin/v1/cooldowns/${'Z'.repeat(43)}`, { method: 'DELETE', headers: { authorization: `Bearer ${SECRET}` } });
    expect(del.status).toBe(204);
    expect(wrong).toEqual([]);
  });
});

describe('SDK retries (docs/guides/agent-sdk.md, Retries: "429 without Retry-After ... none: returned")', () => {
  it('a 429 whose Retry-After is not a delay-seconds or HTTP-date value counts as none: the GET is returned, not retried at once', async () => {
    up.seen.length = 0;
    up.reply = (seen) => (seen.url === '/busy' ? { status: 429, headers: { 'retry-after': '-1', 'content-type': 'text/plain' }, body: 'slow down' } : undefined);
    const c = new GateClient({ baseUrl: g.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    try {
      const res = await c.request('/busy');
      expect(res.status).toBe(429);
      expect(up.seen.filter((s) => s.url === '/busy').length).toBe(1);
    } finally {
      up.reply = undefined;
      await c.close();
    }
  });
});

describe('SDK retries of a non-idempotent request (agent-sdk.md: "Any other method ... is retried only when the gate itself refused it before forwarding anything to the API")', () => {
  it('a POST that reached the upstream is not sent again because the upstream answered with a gate-looking 503 problem', async () => {
    up.seen.length = 0;
    const problem = JSON.stringify({ type: 'urn:agent-gate:error:overloaded', title: 'Overloaded', status: 503, code: 'overloaded', instance: 'urn:agent-gate:refusal:abc' });
    up.reply = (seen) => (seen.url === '/pay' ? { status: 503, headers: { 'content-type': 'application/problem+json', 'retry-after': '0' }, body: problem } : undefined);
    const c = new GateClient({ baseUrl: g.url, cert: fx.agents.ed25519.certPem, key: fx.agents.ed25519.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    try {
      const res = await c.request('/pay', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"amount":1}' });
      expect(res.status).toBe(503);
      expect(up.seen.filter((s) => s.url === '/pay').length, 'times the upstream executed the POST').toBe(1);
    } finally {
      up.reply = undefined;
      await c.close();
    }
  });
});

describe('the gate\'s refusal header (protocol section 9)', () => {
  it('a refusal carries X-Agent-Gate-Refusal with its refusal id; an upstream answer never does', async () => {
    const c = new GateClient({ baseUrl: g.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetries: 0 });
    up.reply = (seen) => (seen.url === '/forged' ? { status: 503, headers: { 'x-agent-gate-refusal': 'forged', 'content-type': 'text/plain' }, body: 'busy' } : undefined);
    try {
      const own = await c.request(`/${'%2e%2e'}/x`);
      const instance = (JSON.parse(own.body.toString()) as { instance: string }).instance;
      expect([own.status, own.headers['x-agent-gate-refusal']]).toEqual([400, instance.replace('urn:agent-gate:refusal:', '')]);
      const passed = await c.request('/forged');
      expect([passed.status, passed.headers['x-agent-gate-refusal']]).toEqual([503, undefined]);
    } finally {
      up.reply = undefined;
      await c.close();
    }
  });
});

describe('signing keys (HARDENING.md, Signing keys: "mismatched or duplicate keys refused")', () => {
  it('the same Ed25519 key under two kids is refused at start', async () => {
    const k = await generateSigningJwk();
    const { d: _d, ...pub } = k;
    const set = { keys: [k, { ...pub, kid: 'same-key-other-kid' }] };
    let started: RunningGate | undefined;
    let err: unknown;
    try {
      started = await startGate(testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_SIGNING_JWK: JSON.stringify(set) }));
      extra.push(started);
    } catch (e) {
      err = e;
    }
    expect(started, 'gate started with one key published under two kids').toBeUndefined();
    expect(String(err)).toMatch(/GATE_SIGNING_JWK/);
  });
});
