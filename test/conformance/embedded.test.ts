/**
 * The embedded plugin (`agentGate` on the application's own fastify server, no proxy hop),
 * through the example app in examples/embedded over real TLS against a real redis-server: the
 * contract of test/conformance/contract.ts, then what embedding adds: the route sees
 * `request.agent`, unguarded routes need no certificate, the app's own error handler never
 * sees (or reformats) a gate refusal, and the gate's metrics move.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import pino from 'pino';
import { APP_ERROR_TYPE, buildExampleApp, type Thing } from '../../examples/embedded/app.js';
import { GateClient } from '../../src/client/index.js';
import { GateError } from '../../src/errors.js';
import { startGate, TEST_LOG_DIR, testEnv } from '../helpers/gate.js';
import { call } from '../helpers/http.js';
import { contractEnv, denyViaAdmin, describeGateContract, expectRefusal, P, type ContractFixtures } from './contract.js';

let app: FastifyInstance;
let clockOffsetMs = 0;
/** Requests that reached a guarded route's handler. */
let guardedHits = 0;
const clients: GateClient[] = [];
const apps: FastifyInstance[] = [];
/** Errors that reached the app's own error handler. */
const seenByAppHandler: unknown[] = [];

/** The app's log goes where the global teardown scans test logs for secrets. */
function testLogger(): FastifyServerOptions['logger'] {
  return { level: 'debug', stream: pino.destination({ dest: join(TEST_LOG_DIR, `embedded-${process.pid}.log`), sync: true, append: true, mkdir: true }) };
}

/** Builds and starts the example app; returns its base URL. */
async function start(fx: ContractFixtures, extra: Record<string, string>, now?: () => number): Promise<{ app: FastifyInstance; url: string }> {
  const a = await buildExampleApp(testEnv(fx, extra), {
    deps: { warn: () => {}, ...(now ? { now } : {}) },
    logger: testLogger(),
    onAppError: (err) => seenByAppHandler.push(err),
  });
  a.addHook('preHandler', async (request) => {
    if (request.routeOptions.url === '/things') guardedHits++;
  });
  apps.push(a);
  const { store, config } = a.agentGate.services;
  await store.waitReady?.(Math.max(2000, config.store.timeoutMs));
  await a.listen({ host: '127.0.0.1', port: 0 });
  const addr = a.server.address();
  return { app: a, url: `https://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}` };
}

const contract = describeGateContract('embedded', async (fx) => {
  const redis = { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl') };
  const started = await start(fx, { ...contractEnv(fx), ...redis }, () => Date.now() + clockOffsetMs);
  app = started.app;
  // The plugin has no admin listener: an operator denies through a gate sharing its store.
  const operator = await startGate(testEnv(fx, { ...contractEnv(fx), ...redis, GATE_UPSTREAM_URL: 'http://127.0.0.1:9' }));
  return {
    url: started.url,
    gatedPath: '/things',
    seen: (res) => {
      const b = res.json();
      return { agentId: b.agent_id, thumbprint: b.thumbprint, tokenId: b.token_id };
    },
    protectedHits: () => guardedHits,
    setClock: (ms) => (clockOffsetMs = ms),
    tokenTtlS: 300,
    deny: (id) => denyViaAdmin(operator.adminUrl, id),
    close: async () => {
      await operator.close();
    },
  };
});
const url = () => contract().gate.url;
const fx = () => contract().fx;

function client(baseUrl = url()): GateClient {
  const c = new GateClient({ baseUrl, cert: fx().agents.p256.certPem, key: fx().agents.p256.keyPem, ca: fx().ca.certPem, servername: 'localhost', maxRetries: 0 });
  clients.push(c);
  return c;
}

/** Value of one sample of the Prometheus text, 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
const metricsText = () => app.agentGate.services.metrics.registry.metrics();

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(apps.map((a) => a.close()));
});

describe('embedded: the route sees request.agent', () => {
  for (const kind of ['ed25519', 'p256', 'rsa'] as const) {
    it(`${kind} agent: POST and GET /things as itself`, async () => {
      const id = `urn:agent:${kind === 'p256' ? 'p256' : kind === 'rsa' ? 'rsa' : 'ed'}`;
      const c = contract().client(kind);
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
});

describe('embedded: the app around the gate', () => {
  it('an unguarded route of the app is reachable without a certificate or token', async () => {
    const res = await call(contract().agent('none'), `${url()}/public`);
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ ok: true, hello: 'world' });
  });

  it("the app's own errors keep the app's format (its error handler is in place)", async () => {
    const res = await client().request('/things', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":""}' });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe(APP_ERROR_TYPE);
    expect(res.json()).toMatchObject({ ok: false, error: { status: 400 } });
    expect(seenByAppHandler.at(-1)).toMatchObject({ code: 'FST_ERR_VALIDATION' });
  });

  it("the app's JSON parser is untouched by the gate's (the gate reads its bodies itself)", async () => {
    const res = await client().request('/things', { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body: '{"name":"parsed by the app"}' });
    expect(res.status).toBe(201);
  });
});

describe('metrics', () => {
  it('challenge, token, proof, error and duration metrics move on the app registry', async () => {
    const before = await metricsText();
    const c = client();
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(200);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(409);
    const unknown = await c.signProof(await c.challenge());
    expect((await c.submitProof({ challenge_id: 'C'.repeat(22), proof: unknown })).status).toBe(404);
    expect((await call(contract().agent('p256'), `${url()}/things`)).status).toBe(401);
    expect((await call(contract().agent('none'), `${url()}/public`)).status).toBe(200);
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
    const s = await start(fx(), { GATE_STORE: 'memory', GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '2/60' });
    const c = client(s.url);
    expect((await c.request('/things')).status).toBe(200);
    expect((await c.request('/things')).status).toBe(200);
    const r = await c.request('/things');
    expect(r.status).toBe(429);
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(r.json<{ code: string }>().code).toBe('rate_limited');
    expect(r.headers['retry-after']).toMatch(/^[0-9]+$/);
    // Unguarded routes and the gate's info endpoints are not counted by the proxy limit.
    expect((await call(contract().agent('none'), `${s.url}/public`)).status).toBe(200);
    const text = await s.app.agentGate.services.metrics.registry.metrics();
    expect(sample(text, 'agent_gate_rate_limited_total{limiter="proxy_identity"}')).toBe(1);
  });
});

describe('draining (edge: true puts the whole server behind the gate\'s edge steps)', () => {
  it('while draining, the gate and the app answer 503 overloaded as problem+json; readyz is 503, healthz 200', async () => {
    const s = await start(fx(), { GATE_STORE: 'memory' });
    s.app.agentGate.services.state.draining = true;
    const a = contract().agent('p256');
    expectRefusal(await call(a, `${s.url}${P}/readyz`), { status: 503, code: 'overloaded' });
    expect((await call(a, `${s.url}${P}/healthz`)).status).toBe(200);
    expectRefusal(await call(a, `${s.url}${P}/v1/challenge`, { method: 'POST' }), { status: 503, code: 'overloaded' });
    expectRefusal(await call(a, `${s.url}/things`), { status: 503, code: 'overloaded' });
    expectRefusal(await call(a, `${s.url}/public`), { status: 503, code: 'overloaded' });
  });
});

describe("the app's error handler", () => {
  it('never saw a gate refusal in this file', () => {
    const leaked = seenByAppHandler.filter((e) => e instanceof GateError).map((e) => (e as GateError).code);
    expect(leaked).toEqual([]);
  });
});
