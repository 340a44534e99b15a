/**
 * SIGTERM on a real `agent-gate serve` process: readiness turns 503, in-flight requests
 * finish, the process exits 0 within the drain timeout.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { freePort, waitFor } from '../helpers/ports.js';
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
  const [port, adminPort] = [await freePort(), await freePort()];
  const env = testEnv(fx, {
    GATE_STORE: 'memory',
    GATE_UPSTREAM_URL: up.url,
    GATE_LISTEN: `127.0.0.1:${port}`,
    GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    GATE_DRAIN_TIMEOUT_MS: '8000',
    GATE_LOG_LEVEL: 'warn',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.once('exit', (code) => resolve({ code, at: Date.now() })));
  const c = new GateClient({ baseUrl: `https://127.0.0.1:${port}`, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, 20_000, `gate process ready (stderr: ${stderr})`, 100);
    await c.getToken();
    up.delayMs = 1500;
    const inflight = c.request('/slow');
    await waitFor(() => up.seen.some((s) => s.url === '/slow'), 5000, 'request reached the upstream');
    const t0 = Date.now();
    child.kill('SIGTERM');
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503, 3000, 'readyz 503 while draining');
    const res = await inflight;
    expect(res.status).toBe(200);
    const { code, at } = await exited;
    expect(code).toBe(0);
    expect(at - t0).toBeLessThan(8000);
  } finally {
    up.delayMs = 0;
    await c.close();
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
