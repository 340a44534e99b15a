/**
 * SIGTERM on a real `agent-gate serve` process: readiness turns 503, in-flight requests
 * finish, the process exits 0 within the drain timeout.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { waitFor } from '../helpers/ports.js';
import { spawnServe } from '../helpers/serve.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
});
afterAll(async () => {
  await up?.close();
});

it('SIGTERM: readyz 503, in-flight request finishes, exit 0 within the drain timeout', async () => {
  const gate = await spawnServe(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_DRAIN_TIMEOUT_MS: '8000', GATE_LOG_LEVEL: 'warn' }));
  const c = new GateClient({ baseUrl: gate.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  try {
    await c.getToken();
    up.delayMs = 1500;
    const inflight = c.request('/slow');
    await waitFor(() => up.seen.some((s) => s.url === '/slow'), 5000, 'request reached the upstream');
    const t0 = Date.now();
    gate.child.kill('SIGTERM');
    await waitFor(async () => (await fetch(`${gate.adminUrl}/readyz`)).status === 503, 3000, 'readyz 503 while draining');
    const res = await inflight;
    expect(res.status).toBe(200);
    const { code, at } = await gate.exited;
    expect(code, gate.output()).toBe(0);
    expect(at - t0).toBeLessThan(8000);
  } finally {
    up.delayMs = 0;
    await c.close();
    if (gate.child.exitCode === null) gate.child.kill('SIGKILL');
  }
});
