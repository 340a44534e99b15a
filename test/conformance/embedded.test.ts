/**
 * The embedded plugin (`agentGate` on the application's own fastify server, no proxy hop),
 * through the example app in examples/embedded: the same direct-mode flow and refusals as
 * flow.test.ts over real TLS against a real redis-server, plus what embedding adds: the route
 * sees `request.agent`, unguarded routes need no certificate, the app's own error handler
 * never sees (or reformats) a gate refusal, and the gate's metrics move.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import pino from 'pino';
import type { Agent } from 'undici';
import { APP_ERROR_TYPE, buildExampleApp, type Thing } from '../../examples/embedded/app.js';
import { GateClient, GateClientError, type Challenge } from '../../src/client/index.js';
import { GateError } from '../../src/errors.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { TEST_LOG_DIR, testEnv } from '../helpers/gate.js';
import { call, problemOf, rawRequest, tlsAgent, type Res } from '../helpers/http.js';

const P = '/.agent-gate';
let fx: Fixtures;
let app: FastifyInstance;
let url: string;
let clockOffsetMs = 0;
const clients: GateClient[] = [];
const agents: Agent[] = [];
const apps: FastifyInstance[] = [];
/** Errors that reached the app's own error handler. */
const seenByAppHandler: unknown[] = [];

/** The app's log goes where the global teardown scans test logs for secrets. */
function testLogger(): FastifyServerOptions['logger'] {
  return { level: 'debug', stream: pino.destination({ dest: join(TEST_LOG_DIR, `embedded-${process.pid}.log`), sync: true, append: true, mkdir: true }) };
}

/** Builds and starts the example app; returns its base URL. */
async function start(extra: Record<string, string>, now?: () => number): Promise<{ app: FastifyInstance; url: string }> {
  const a = await buildExampleApp(testEnv(fx, extra), {
    deps: { warn: () => {}, ...(now ? { now } : {}) },
    logger: testLogger(),
    onAppError: (err) => seenByAppHandler.push(err),
  });
  apps.push(a);
  const { store, config } = a.agentGate.services;
  await store.waitReady?.(Math.max(2000, config.store.timeoutMs));
  await a.listen({ host: '127.0.0.1', port: 0 });
  const addr = a.server.address();
  return { app: a, url: `https://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}` };
}

function client(who: KeyAndCert, baseUrl = url): GateClient {
  const c = new GateClient({ baseUrl, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c;
}
function agent(who?: KeyAndCert): Agent {
  const a = tlsAgent(fx, who);
  agents.push(a);
  return a;
}
const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** A contract refusal: problem+json with the code, whatever the app's own error format is. */
function expectProblem(res: Res, status: number, code: string): void {
  expect(problemOf(res)).toMatchObject({ status, code, type: `urn:agent-gate:error:${code}`, contentType: 'application/problem+json' });
  expect(res.json().instance).toMatch(/^urn:agent-gate:refusal:[A-Za-z0-9]{1,64}$/);
  expect(res.headers['cache-control']).toBe('no-store');
}

/** Value of one sample of the Prometheus text, 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
const metricsText = () => app.agentGate.services.metrics.registry.metrics();

beforeAll(async () => {
  fx = await makeFixtures();
  ({ app, url } = await start({ GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl') }, () => Date.now() + clockOffsetMs));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(agents.map((a) => a.close()));
  await Promise.all(apps.map((a) => a.close()));
});

describe('happy path: the route sees request.agent', () => {
  for (const kind of ['ed25519', 'p256', 'rsa'] as const) {
    it(`${kind} agent: challenge -> proof -> token -> POST and GET /things as itself`, async () => {
      const id = `urn:agent:${kind === 'p256' ? 'p256' : kind === 'rsa' ? 'rsa' : 'ed'}`;
      const c = client(fx.agents[kind]);
      const created = await c.request('/things', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `made by ${kind}` }) });
      expect(created.status).toBe(201);
      expect(created.json<{ thing: Thing }>().thing).toMatchObject({ name: `made by ${kind}`, owner: id });
      const listed = await c.request('/things?q=1');
      expect(listed.status).toBe(200);
      const body = listed.json<{ agent_id: string; thumbprint: string; token_id: string; things: Thing[] }>();
      expect(body.agent_id).toBe(id);
      expect(body.thumbprint).toBe(c.thumbprint);
      expect(body.token_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(body.things.map((t) => t.name)).toEqual([`made by ${kind}`]);
    });
  }

  it('challenge answer has the contract shape and no-store', async () => {
    const res = await call(agent(fx.agents.p256), `${url}${P}/v1/challenge`, { method: 'POST' });
    expect(res.status).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    const ch = res.json();
    expect(ch.challenge_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(ch.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(ch.aud).toBe('agent-gate');
    expect((ch.expires_at as number) - (ch.issued_at as number)).toBe(3000);
    expect(ch.algs).toEqual(['EdDSA', 'ES256', 'ES384', 'PS256']);
    expect(ch.pow).toBeNull();
  });

  it('token has the contract claims and verifies against the JWKS', async () => {
    const c = client(fx.agents.ed25519);
    const t = await c.fetchToken();
    expect(t.token_type).toBe('Bearer');
    expect(t.expires_in).toBe(300);
    const [h, p] = t.access_token.split('.').slice(0, 2).map((s) => JSON.parse(Buffer.from(s, 'base64url').toString()) as Record<string, unknown>);
    const jwks = (await call(agent(), `${url}${P}/jwks.json`)).json() as { keys: { kid: string }[] };
    expect(h).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    expect(jwks.keys.map((k) => k.kid)).toContain(h!.kid);
    expect(p).toMatchObject({ iss: 'agent-gate', aud: 'agent-gate', sub: 'urn:agent:ed', cnf: { 'x5t#S256': c.thumbprint } });
    expect((p!.exp as number) - (p!.iat as number)).toBe(300);
  });
});

describe('the app around the gate', () => {
  it('an unguarded route of the app is reachable without a certificate or token', async () => {
    const res = await call(agent(), `${url}/public`);
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ ok: true, hello: 'world' });
  });

  it("the app's own errors keep the app's format (its error handler is in place)", async () => {
    const c = client(fx.agents.p256);
    const res = await c.request('/things', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":""}' });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe(APP_ERROR_TYPE);
    expect(res.json()).toMatchObject({ ok: false, error: { status: 400 } });
    expect(seenByAppHandler.at(-1)).toMatchObject({ code: 'FST_ERR_VALIDATION' });
  });

  it('a guarded route refuses before the body is read: no token and a bad body is 401 token_missing', async () => {
    const res = await call(agent(fx.agents.p256), `${url}/things`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    expectProblem(res, 401, 'token_missing');
  });
});

describe('identity refusals', () => {
  it('no client certificate: 401 client_cert_required with WWW-Authenticate', async () => {
    const res = await call(agent(), `${url}${P}/v1/challenge`, { method: 'POST' });
    expectProblem(res, 401, 'client_cert_required');
    expect(res.headers['www-authenticate']).toBe('Bearer realm="agent-gate"');
  });

  it('no client certificate on a guarded route: 401 client_cert_required', async () => {
    const res = await call(agent(), `${url}/things`, { headers: { authorization: 'Bearer x' } });
    expectProblem(res, 401, 'client_cert_required');
  });

  it('certificate from an unknown CA: 403 client_cert_invalid, on the gate and on a guarded route', async () => {
    expectProblem(await call(agent(fx.agents.foreign), `${url}${P}/v1/challenge`, { method: 'POST' }), 403, 'client_cert_invalid');
    expectProblem(await call(agent(fx.agents.foreign), `${url}/things`, { headers: { authorization: 'Bearer x' } }), 403, 'client_cert_invalid');
  });

  it('expired certificate: 403 client_cert_invalid', async () => {
    expectProblem(await call(agent(fx.agents.expired), `${url}${P}/v1/challenge`, { method: 'POST' }), 403, 'client_cert_invalid');
  });
});

describe('proof refusals', () => {
  async function submit(c: GateClient, body: Record<string, unknown>) {
    const res = await c.submitProof(body);
    expect(res.headers['content-type']).toBe('application/problem+json');
    return { status: res.status, code: res.json<{ code?: string }>().code };
  }

  it('a second use of the same proof: 409 challenge_replayed', async () => {
    const c = client(fx.agents.p256);
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(200);
    expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 409, code: 'challenge_replayed' });
  });

  it('a proof received after expires_at: 408 challenge_expired', async () => {
    const c = client(fx.agents.p256);
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    clockOffsetMs = 3001; // the gate's clock now reads past expires_at
    try {
      expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 408, code: 'challenge_expired' });
    } finally {
      clockOffsetMs = 0;
    }
  });

  it('a proof from another certificate than the one that asked: 403 challenge_binding_mismatch', async () => {
    const asker = client(fx.agents.p256);
    const other = client(fx.agents.other);
    const ch = await asker.challenge();
    const proof = await other.signProof(ch);
    expect(await submit(other, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 403, code: 'challenge_binding_mismatch' });
  });

  it('an unknown challenge: 404 challenge_unknown', async () => {
    const c = client(fx.agents.p256);
    const proof = await c.signProof(await c.challenge());
    expect(await submit(c, { challenge_id: 'A'.repeat(22), proof })).toEqual({ status: 404, code: 'challenge_unknown' });
  });

  const bad: [string, (c: GateClient, ch: Challenge) => Promise<string>][] = [
    ['wrong nonce', (c, ch) => c.signProof(ch, { payload: { nonce: 'x'.repeat(43) } })],
    ['wrong aud', (c, ch) => c.signProof(ch, { payload: { aud: 'someone-else' } })],
    ['wrong cid', (c, ch) => c.signProof(ch, { payload: { cid: 'B'.repeat(22) } })],
    ['wrong typ', (c, ch) => c.signProof(ch, { header: { typ: 'JWT' } })],
    ['stale iat', (c, ch) => c.signProof(ch, { payload: { iat: Math.floor(Date.now() / 1000) - 120 } })],
    ['future iat', (c, ch) => c.signProof(ch, { payload: { iat: Math.floor(Date.now() / 1000) + 120 } })],
    ['crit header', (c, ch) => c.signProof(ch, { header: { crit: ['exp'], exp: 1 } })],
    ['alg none', async (_c, ch) => `${b64url({ alg: 'none', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(Date.now() / 1000) })}.`],
    [
      'HS256 with the public certificate as secret',
      async (_c, ch) => {
        const { createHmac } = await import('node:crypto');
        const input = `${b64url({ alg: 'HS256', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(Date.now() / 1000) })}`;
        return `${input}.${createHmac('sha256', fx.agents.p256.certPem).update(input).digest('base64url')}`;
      },
    ],
    ['signature by another key', async (_c, ch) => client(fx.agents.other).signProof(ch)],
    ['not a JWS', async () => 'not.a.jws'],
  ];
  for (const [name, make] of bad) {
    it(`${name}: 403 proof_invalid, and the challenge is spent`, async () => {
      const c = client(fx.agents.p256);
      const ch = await c.challenge();
      const proof = await make(c, ch);
      expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 403, code: 'proof_invalid' });
      expect(await submit(c, { challenge_id: ch.challenge_id, proof: await c.signProof(ch) })).toEqual({ status: 409, code: 'challenge_replayed' });
    });
  }

  it('an attestation with no issuers configured: 403 attestation_invalid', async () => {
    const c = client(fx.agents.p256);
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    expect(await submit(c, { challenge_id: ch.challenge_id, proof, attestation: 'a.b.c' })).toEqual({ status: 403, code: 'attestation_invalid' });
  });
});

describe('request shape refusals', () => {
  const tokenUrl = () => `${url}${P}/v1/token`;
  it('token body with another or no content type: 415; over 16 KiB: 413; bad JSON: 400', async () => {
    const a = agent(fx.agents.p256);
    expectProblem(await call(a, tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' }), 415, 'unsupported_media_type');
    expectProblem(await call(a, tokenUrl(), { method: 'POST', body: '{}' }), 415, 'unsupported_media_type');
    expectProblem(await call(a, tokenUrl(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(16 * 1024 + 1) }), 413, 'body_too_large');
    expectProblem(await call(a, tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(20_000) }), 415, 'unsupported_media_type');
    for (const body of ['{', '[]', '"x"', '{"challenge_id":"abc","proof":"a.b.c"}', '{"challenge_id":"' + 'A'.repeat(22) + '"}']) {
      expectProblem(await call(a, tokenUrl(), { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' }, body }), 400, 'request_malformed');
    }
  });

  it("the app's JSON parser is untouched by the gate's (the gate reads its bodies itself)", async () => {
    const c = client(fx.agents.p256);
    const res = await c.request('/things', { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body: '{"name":"parsed by the app"}' });
    expect(res.status).toBe(201);
  });

  it('identity is checked before the body: no cert and a bad body is 401', async () => {
    expectProblem(await call(agent(), tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' }), 401, 'client_cert_required');
  });

  it('challenge accepts an empty body of any type and a JSON object, and refuses other non-empty bodies', async () => {
    const a = agent(fx.agents.p256);
    const u = `${url}${P}/v1/challenge`;
    expect((await call(a, u, { method: 'POST', headers: { 'content-type': 'text/plain' } })).status).toBe(201);
    expect((await call(a, u, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"x":1}' })).status).toBe(201);
    expectProblem(await call(a, u, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }), 415, 'unsupported_media_type');
    expectProblem(await call(a, u, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[1]' }), 400, 'request_malformed');
  });

  it('unknown path under the prefix: 404 not_found; wrong method: 405 with Allow', async () => {
    const a = agent(fx.agents.p256);
    expectProblem(await call(a, `${url}${P}/v2/nothing`), 404, 'not_found');
    expectProblem(await call(a, `${url}${P}`), 404, 'not_found');
    expectProblem(await call(agent(), `${url}${P}/things`), 404, 'not_found');
    const r = await call(a, `${url}${P}/v1/challenge`);
    expectProblem(r, 405, 'method_not_allowed');
    expect(r.headers.allow).toBe('POST');
    const r2 = await call(a, `${url}${P}/jwks.json`, { method: 'POST' });
    expectProblem(r2, 405, 'method_not_allowed');
    expect(r2.headers.allow).toBe('GET, HEAD');
  });

  it('percent-encoded gate paths are the gate', async () => {
    const r = await call(agent(fx.agents.p256), `${url}/%2Eagent-gate/v1/%63hallenge`, { method: 'POST' });
    expect(r.status).toBe(201);
  });

  it('dot segments, encoded slash and NUL: 400 request_malformed, under the prefix and on the app', async () => {
    const paths = ['/a/../.agent-gate/healthz', '/a/%2e%2e/b', '/a/./b', '/a%2fb', '/a%2Fb', '/a%00b', '/.agent-gate/%2e/healthz', '/.agent-gate/..', '/things/../public', '/public/%2e', '/public/%2F', '/public%zz', '/.agent-gate/v1/%zz'];
    const got: Record<string, string> = {};
    for (const path of paths) {
      // Raw bytes on the wire: URL parsers in clients would normalise these paths away.
      const res = await rawRequest(url, fx, fx.agents.p256, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      const type = /^content-type: *([^;\r\n]*)/im.exec(res.head)?.[1];
      let code: unknown;
      try {
        code = (JSON.parse(res.body) as { code?: unknown }).code;
      } catch {
        code = undefined;
      }
      got[path] = `${res.status} ${String(type)} ${String(code)}`;
    }
    expect(got).toEqual(Object.fromEntries(paths.map((p) => [p, '400 application/problem+json request_malformed'])));
  });

  it('healthz, readyz and jwks need no certificate, answer HEAD, and are no-store', async () => {
    const a = agent();
    for (const p of ['healthz', 'readyz', 'jwks.json']) {
      const r = await call(a, `${url}${P}/${p}`);
      expect(r.status, p).toBe(200);
      expect(r.headers['cache-control']).toBe('no-store');
      expect((await call(a, `${url}${P}/${p}`, { method: 'HEAD' })).status).toBe(200);
    }
  });
});

describe('guarded routes', () => {
  it('no Authorization: 401 token_missing; other scheme: token_missing; empty or bad bearer: token_invalid', async () => {
    const a = agent(fx.agents.p256);
    const r1 = await call(a, `${url}/things`);
    expectProblem(r1, 401, 'token_missing');
    expect(r1.headers['www-authenticate']).toBe('Bearer realm="agent-gate"');
    expectProblem(await call(a, `${url}/things`, { headers: { authorization: 'Basic dXNlcjpwdw==' } }), 401, 'token_missing');
    const r3 = await call(a, `${url}/things`, { headers: { authorization: 'Bearer ' } });
    expectProblem(r3, 401, 'token_invalid');
    expect(r3.headers['www-authenticate']).toBe('Bearer realm="agent-gate", error="invalid_token"');
    expectProblem(await call(a, `${url}/things`, { method: 'POST', headers: { authorization: 'Bearer abc.def.ghi' } }), 401, 'token_invalid');
  });

  it('scheme is case-insensitive', async () => {
    const token = await client(fx.agents.p256).getToken();
    const r = await call(agent(fx.agents.p256), `${url}/things`, { headers: { authorization: `bEaReR ${token}` } });
    expect(r.status).toBe(200);
    expect(r.json().agent_id).toBe('urn:agent:p256');
  });

  it('token presented with another certificate: 403 token_binding_mismatch', async () => {
    const token = await client(fx.agents.p256).getToken();
    expectProblem(await call(agent(fx.agents.other), `${url}/things`, { headers: { authorization: `Bearer ${token}` } }), 403, 'token_binding_mismatch');
  });

  it('an expired token: 401 token_expired', async () => {
    const token = await client(fx.agents.p256).getToken();
    clockOffsetMs = 400_000;
    try {
      expectProblem(await call(agent(fx.agents.p256), `${url}/things`, { headers: { authorization: `Bearer ${token}` } }), 401, 'token_expired');
    } finally {
      clockOffsetMs = 0;
    }
  });

  it('a token signed by a foreign key: 401 token_invalid', async () => {
    const token = await client(fx.agents.p256).getToken();
    const [h, p] = token.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}`;
    expectProblem(await call(agent(fx.agents.p256), `${url}/things`, { headers: { authorization: `Bearer ${forged}` } }), 401, 'token_invalid');
  });

  it('the client SDK surfaces refusals as GateClientError with the code', async () => {
    const err = await client(fx.agents.foreign)
      .getToken()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GateClientError);
    expect((err as GateClientError).code).toBe('client_cert_invalid');
    expect((err as GateClientError).status).toBe(403);
  });
});

describe('metrics', () => {
  it('challenge, token, proof, error and duration metrics move on the app registry', async () => {
    const before = await metricsText();
    const c = client(fx.agents.p256);
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(200);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(409);
    const unknown = await c.signProof(await c.challenge());
    expect((await c.submitProof({ challenge_id: 'C'.repeat(22), proof: unknown })).status).toBe(404);
    expect((await call(agent(fx.agents.p256), `${url}/things`)).status).toBe(401);
    expect((await call(agent(), `${url}/public`)).status).toBe(200);
    const after = await metricsText();
    const moved = (series: string) => sample(after, series) - sample(before, series);
    expect(moved('agent_gate_challenges_issued_total')).toBe(2);
    expect(moved('agent_gate_tokens_issued_total')).toBe(1);
    expect(moved('agent_gate_proofs_total{result="accepted"}')).toBe(1);
    expect(moved('agent_gate_proofs_total{result="replayed"}')).toBe(1);
    expect(moved('agent_gate_proofs_total{result="unknown"}')).toBe(1);
    expect(moved('agent_gate_replays_detected_total{kind="challenge"}')).toBe(1);
    expect(moved('agent_gate_errors_total{code="challenge_replayed"}')).toBe(1);
    expect(moved('agent_gate_errors_total{code="challenge_unknown"}')).toBe(1);
    expect(moved('agent_gate_errors_total{code="token_missing"}')).toBe(1);
    expect(moved('agent_gate_request_duration_seconds_count{route="challenge"}')).toBe(2);
    expect(moved('agent_gate_request_duration_seconds_count{route="token"}')).toBe(3);
    // The app's own routes are observed too (route "other"): edge metrics cover the whole server.
    expect(moved('agent_gate_request_duration_seconds_count{route="other"}')).toBeGreaterThanOrEqual(2);
    expect(sample(after, 'agent_gate_inflight_requests')).toBeGreaterThanOrEqual(0);
  });
});

describe('plugin options', () => {
  it('the proxy limit applies on guarded routes after the token check (429 rate_limited), with a memory store', async () => {
    const s = await start({ GATE_STORE: 'memory', GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '2/60' });
    const c = new GateClient({ baseUrl: s.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetries: 0 });
    clients.push(c);
    expect((await c.request('/things')).status).toBe(200);
    expect((await c.request('/things')).status).toBe(200);
    const r = await c.request('/things');
    expect(r.status).toBe(429);
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(r.json<{ code: string }>().code).toBe('rate_limited');
    expect(r.headers['retry-after']).toMatch(/^[0-9]+$/);
    // Unguarded routes and the gate's info endpoints are not counted by the proxy limit.
    expect((await call(agent(), `${s.url}/public`)).status).toBe(200);
    const text = await s.app.agentGate.services.metrics.registry.metrics();
    expect(sample(text, 'agent_gate_rate_limited_total{limiter="proxy_identity"}')).toBe(1);
  });
});

describe('draining (edge: true puts the whole server behind the gate\'s edge steps)', () => {
  it('while draining, the gate and the app answer 503 overloaded as problem+json; readyz is 503, healthz 200', async () => {
    const s = await start({ GATE_STORE: 'memory' });
    s.app.agentGate.services.state.draining = true;
    const a = agent(fx.agents.p256);
    expectProblem(await call(a, `${s.url}${P}/readyz`), 503, 'overloaded');
    expect((await call(a, `${s.url}${P}/healthz`)).status).toBe(200);
    expectProblem(await call(a, `${s.url}${P}/v1/challenge`, { method: 'POST' }), 503, 'overloaded');
    expectProblem(await call(a, `${s.url}/things`), 503, 'overloaded');
    expectProblem(await call(a, `${s.url}/public`), 503, 'overloaded');
  });
});

describe("the app's error handler", () => {
  it('never saw a gate refusal in this file', () => {
    const leaked = seenByAppHandler.filter((e) => e instanceof GateError).map((e) => (e as GateError).code);
    expect(leaked).toEqual([]);
  });
});
