/**
 * Abuse resistance: each rate limit trips at its count with the contract headers and
 * recovers; limits hold with Redis down; one address's flood spares another; load shedding;
 * proof-of-work; slow clients do not starve others.
 */
import { connect } from 'node:tls';
import { describe, expect, inject, it } from 'vitest';
import { Agent } from 'undici';
import { GateClient } from '../../src/client/index.js';
import { issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent, type Res } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { gateSuite } from '../helpers/suite.js';
import { startUpstream } from '../helpers/upstream.js';

const suite = gateSuite();

async function gate(extra: Record<string, string>, redisUrl = inject('redisUrl')): Promise<RunningGate> {
  const g = await startGate(testEnv(suite.fx, { GATE_STORE: 'redis', GATE_REDIS_URL: redisUrl, GATE_UPSTREAM_URL: suite.up.url, GATE_RATE_LIMITS: 'on', ...extra }));
  suite.closers.push(() => g.close());
  return g;
}
function agent(who?: KeyAndCert, localAddress?: string): Agent {
  const a = localAddress
    ? new Agent({ localAddress, connect: { ca: suite.fx.ca.certPem, cert: who?.certPem, key: who?.keyPem, servername: 'localhost' } })
    : tlsAgent(suite.fx, who);
  suite.closers.push(() => a.close());
  return a;
}
let n = 0;
/** A fresh agent certificate: limits are shared through Redis across this file's gates. */
const fresh = () => issueAgentCert(suite.fx.ca, `abuse-${n++}`, { alg: 'ec-p256' });
/** A fresh loopback source address, for the same reason. */
let lastOctet = 10;
const freshAddress = () => `127.0.0.${lastOctet++}`;

function client(g: RunningGate, who: KeyAndCert): GateClient {
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: suite.fx.ca.certPem, servername: 'localhost', maxRetryAfterS: 0 });
  suite.closers.push(() => c.close());
  return c;
}
const challenge = (g: RunningGate, a: Agent) => call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
async function metric(g: RunningGate, re: RegExp): Promise<number> {
  return Number(re.exec(await (await fetch(`${g.adminUrl}/metrics`)).text())?.[1] ?? NaN);
}
function expect429(r: Res, limiter: string, spec: { q: number; w: number }): void {
  expect(r.status).toBe(429);
  expect(r.json().code).toBe('rate_limited');
  const retry = Number(r.headers['retry-after']);
  expect(Number.isInteger(retry) && retry >= 1 && retry <= spec.w).toBe(true);
  expect(r.headers['ratelimit-policy']).toBe(`"${limiter}";q=${spec.q};w=${spec.w}`);
  expect(r.headers.ratelimit).toBe(`"${limiter}";r=0;t=${retry}`);
}

describe('rate limits', () => {
  it('challenge_ip trips at its count, answers with the headers, and recovers after the window', async () => {
    const g = await gate({ GATE_RATE_CHALLENGE_IP: '3/2', GATE_RATE_CHALLENGE_IDENTITY: '100/60' });
    const a = agent(await fresh(), freshAddress());
    for (let i = 0; i < 3; i++) expect((await challenge(g, a)).status).toBe(201);
    expect429(await challenge(g, a), 'challenge_ip', { q: 3, w: 2 });
    expect(await metric(g, /^agent_gate_rate_limited_total\{limiter="challenge_ip"\} (\d+)/m)).toBe(1);
    await waitFor(async () => (await challenge(g, a)).status === 201, 5000, 'challenge_ip window to pass');
  });

  it('challenge_identity trips per certificate, not per address', async () => {
    const g = await gate({ GATE_RATE_CHALLENGE_IP: '100/60', GATE_RATE_CHALLENGE_IDENTITY: '2/60' });
    const address = freshAddress();
    const a = agent(await fresh(), address);
    for (let i = 0; i < 2; i++) expect((await challenge(g, a)).status).toBe(201);
    expect429(await challenge(g, a), 'challenge_identity', { q: 2, w: 60 });
    expect((await challenge(g, agent(await fresh(), address))).status).toBe(201);
  });

  it('token_identity trips at its count (malformed bodies count too: step 4 precedes step 7)', async () => {
    const g = await gate({ GATE_RATE_TOKEN_IDENTITY: '2/60' });
    const a = agent(await fresh());
    const tok = () => call(a, `${g.url}/.agent-gate/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect((await tok()).status).toBe(400);
    expect((await tok()).status).toBe(400);
    expect429(await tok(), 'token_identity', { q: 2, w: 60 });
  });

  it('proxy_identity limits gated requests after the token check, without a store round trip each', async () => {
    const g = await gate({ GATE_RATE_PROXY_IDENTITY: '5/2' });
    const who = await fresh();
    const c = client(g, who);
    const token = await c.getToken();
    const a = agent(who);
    // An invalid token is refused by the token step, and does not count against the limit.
    for (let i = 0; i < 10; i++) expect((await call(a, `${g.url}/x`, { headers: { authorization: 'Bearer bad' } })).status).toBe(401);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await call(a, `${g.url}/p/${i}`, { headers: { authorization: `Bearer ${token}` } })).status);
    const passed = statuses.filter((s) => s === 200).length;
    // A burst may straddle one window boundary: at most two windows' worth pass.
    expect(passed).toBeGreaterThanOrEqual(5);
    expect(passed).toBeLessThanOrEqual(10);
    const limited = await call(a, `${g.url}/p/x`, { headers: { authorization: `Bearer ${token}` } });
    if (limited.status === 429) expect429(limited, 'proxy_identity', { q: 5, w: 2 });
    await waitFor(async () => (await call(a, `${g.url}/p/again`, { headers: { authorization: `Bearer ${token}` } })).status === 200, 5000, 'proxy window to pass');
  });

  it('failed proofs: after N refusals at steps 9-11 the certificate cools down for S seconds, then recovers', async () => {
    const g = await gate({ GATE_RATE_FAILED_PROOFS: '3/2' });
    const who = await fresh();
    const c = client(g, who);
    for (let i = 0; i < 3; i++) {
      const ch = await c.challenge();
      const bad = await c.signProof(ch, { payload: { aud: 'wrong' } });
      expect((await c.submitProof({ challenge_id: ch.challenge_id, proof: bad })).status).toBe(403);
    }
    const r = await challenge(g, agent(who));
    expect429(r, 'failed_proof', { q: 3, w: 2 });
    // Another certificate is unaffected.
    expect((await challenge(g, agent(await fresh()))).status).toBe(201);
    await waitFor(async () => (await challenge(g, agent(who))).status === 201, 6000, 'cooldown to end');
    expect(await metric(g, /^agent_gate_rate_limited_total\{limiter="failed_proof"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
  });

  it('with Redis down the per-gate fallback counters still limit', async () => {
    const redis = await startRedis();
    suite.closers.push(() => redis.stop());
    const g = await gate({ GATE_RATE_CHALLENGE_IP: '3/60', GATE_REDIS_TIMEOUT_MS: '300' }, redis.url);
    await redis.stop();
    const a = agent(suite.fx.agents.p256);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await challenge(g, a)).status);
    // The first three pass the (fallback) limit and then meet the dead store; the rest are limited.
    expect(statuses).toEqual([503, 503, 503, 429, 429]);
  });

  it('a flood of challenges from one address does not stop an agent on another address', async () => {
    // A private Redis: the per-address counters of 127.0.0.1 are shared with this file's other
    // gates otherwise, and the well-behaved agent (which connects from 127.0.0.1) would inherit them.
    const redis = await startRedis();
    suite.closers.push(() => redis.stop());
    const g = await gate({ GATE_RATE_CHALLENGE_IP: '10/60', GATE_RATE_CHALLENGE_IDENTITY: '1000/60' }, redis.url);
    const flooder = agent(await fresh(), freshAddress());
    const results = await Promise.all(Array.from({ length: 60 }, () => challenge(g, flooder)));
    expect(results.map((r) => r.status).sort()).toEqual([...Array<number>(10).fill(201), ...Array<number>(50).fill(429)]);
    const good = client(g, await fresh());
    expect((await good.request('/still-served')).status).toBe(200);
  });
});

describe('load shedding', () => {
  it('GATE_MAX_INFLIGHT with a slow upstream: excess requests get 503 overloaded quickly, in-flight ones finish', async () => {
    const slow = await startUpstream();
    slow.delayMs = 1500;
    suite.closers.push(() => slow.close());
    const g = await startGate(testEnv(suite.fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: slow.url, GATE_MAX_INFLIGHT: '3' }));
    suite.closers.push(() => g.close());
    const c = client(g, suite.fx.agents.p256);
    const token = await c.getToken();
    const a = new Agent({ connections: 20, connect: { ca: suite.fx.ca.certPem, cert: suite.fx.agents.p256.certPem, key: suite.fx.agents.p256.keyPem, servername: 'localhost' } });
    suite.closers.push(() => a.close());
    const inflight = Array.from({ length: 3 }, (_, i) => call(a, `${g.url}/slow/${i}`, { headers: { authorization: `Bearer ${token}` } }));
    await waitFor(() => slow.seen.length >= 3, 5000, 'three requests in flight');
    const t0 = Date.now();
    const shed = await Promise.all(Array.from({ length: 5 }, () => call(a, `${g.url}/more`, { headers: { authorization: `Bearer ${token}` } })));
    expect(Date.now() - t0).toBeLessThan(1000);
    for (const r of shed) {
      expect([r.status, r.json().code]).toEqual([503, 'overloaded']);
      expect(r.headers['retry-after']).toBeDefined();
    }
    expect((await call(agent(), `${g.url}/.agent-gate/healthz`)).status).toBe(200);
    expect((await fetch(`${g.adminUrl}/metrics`)).status).toBe(200);
    expect((await Promise.all(inflight)).map((r) => r.status)).toEqual([200, 200, 200]);
    expect(await metric(g, /^agent_gate_load_shed_total\{reason="concurrency"\} (\d+)/m)).toBe(5);
  });
});

describe('proof-of-work', () => {
  it('GATE_POW=on: the challenge carries pow, the SDK solves it, missing or wrong work is 403 pow_invalid', async () => {
    const g = await gate({ GATE_POW: 'on' });
    const c = client(g, await fresh());
    const ch = await c.challenge();
    expect(ch.pow).toEqual({ alg: 'sha256', difficulty: 16 });
    const proof = await c.signProof(ch);
    const r1 = await c.submitProof({ challenge_id: ch.challenge_id, proof });
    expect([r1.status, (r1.json() as { code: string }).code]).toEqual([403, 'pow_invalid']);
    const ch2 = await c.challenge();
    const r2 = await c.submitProof({ challenge_id: ch2.challenge_id, proof: await c.signProof(ch2), work: 'nope' });
    expect([r2.status, (r2.json() as { code: string }).code]).toEqual([403, 'pow_invalid']);
    expect((await c.request('/pow')).status).toBe(200);
    expect(await metric(g, /^agent_gate_proofs_total\{result="pow_invalid"\} (\d+)/m)).toBe(2);
  });

  it('GATE_POW=adaptive: no work asked of an idle gate', async () => {
    const g = await gate({ GATE_POW: 'adaptive' });
    expect((await challenge(g, agent(await fresh(), freshAddress()))).json().pow).toBeNull();
  });
});

describe('slow clients', () => {
  it('slowloris: 100 connections dribbling headers do not stop an agent from completing the flow', async () => {
    const g = await startGate(testEnv(suite.fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: suite.up.url }));
    suite.closers.push(() => g.close());
    const port = Number(new URL(g.url).port);
    const sockets = await Promise.all(
      Array.from({ length: 100 }, () =>
        new Promise<import('node:tls').TLSSocket>((resolve, reject) => {
          const s = connect({ host: '127.0.0.1', port, ca: suite.fx.ca.certPem, cert: suite.fx.agents.other.certPem, key: suite.fx.agents.other.keyPem, servername: 'localhost' }, () => {
            s.write('GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
            resolve(s);
          });
          s.on('error', reject);
        }),
      ),
    );
    suite.closers.push(async () => sockets.forEach((s) => s.destroy()));
    const drip = setInterval(() => sockets.forEach((s) => s.writable && s.write('a')), 200);
    suite.closers.push(async () => clearInterval(drip));
    const c = client(g, suite.fx.agents.p256);
    const t0 = Date.now();
    expect((await c.request('/served')).status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
