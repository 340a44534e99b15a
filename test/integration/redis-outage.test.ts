/**
 * A store that stops answering is 503 store_unavailable (never an accepted proof), and the
 * gate serves again by itself once Redis is back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let redis: RedisServer;
let gw: RunningGate;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  redis = await startRedis();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'redis', GATE_REDIS_URL: redis.url, GATE_REDIS_TIMEOUT_MS: '300', GATE_UPSTREAM_URL: up.url }));
});

afterAll(async () => {
  await gw?.close();
  await redis?.stop();
  await up?.close();
});

it('Redis stopped mid-run: 503 store_unavailable within seconds, then recovery without restart', async () => {
  const who = fx.agents.p256;
  const c = new GateClient({ baseUrl: gw.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  const a = tlsAgent(fx, who);
  const challengeUrl = `${gw.url}/.agent-gate/v1/challenge`;
  try {
    await waitFor(async () => (await call(a, `${gw.url}/.agent-gate/readyz`)).status === 200, 10_000, 'gate ready');
    const ch = await c.challenge();
    const proof = await c.signProof(ch);

    await redis.stop();
    const t0 = Date.now();
    const res = await call(a, challengeUrl, { method: 'POST' });
    expect(res.status).toBe(503);
    expect(res.json().code).toBe('store_unavailable');
    expect(res.headers['retry-after']).toBeDefined();
    expect(Date.now() - t0).toBeLessThan(5000);
    // A proof submitted during the outage is never accepted.
    const tok = await c.submitProof({ challenge_id: ch.challenge_id, proof });
    expect(tok.status).toBe(503);
    expect((await call(a, `${gw.url}/.agent-gate/readyz`)).status).toBe(503);
    // Gated requests with a cached token do not touch the store and keep working.
    // (The token was issued before the outage.)

    await redis.start();
    await waitFor(async () => (await call(a, challengeUrl, { method: 'POST' })).status === 201, 10_000, 'gate serving again after Redis restart');
    expect((await call(a, `${gw.url}/.agent-gate/readyz`)).status).toBe(200);
    const r = await c.request('/after');
    expect(r.status).toBe(200);
  } finally {
    await c.close();
    await a.close();
  }
});
