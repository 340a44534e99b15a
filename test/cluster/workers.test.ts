/**
 * `agent-gate serve` with GATE_WORKERS=2 as a real process tree (primary + two workers) on
 * Redis: the conformance flow, /metrics of the whole gate on the one admin listener, TLS
 * sessions resumed across workers, a killed worker restarted and counted, one audit trail that
 * verifies, SIGTERM draining every worker (also while a restarted one is still starting), and the
 * memory store refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { generateAuditKey, loadAuditKey, verifyAudit } from '../../src/audit/index.js';
import { GateClient } from '../../src/client/index.js';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { freePort, GiveUp, waitFor } from '../helpers/ports.js';
import { cliArgv } from '../helpers/serve.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let env: Record<string, string>;
let auditFile: string;
let keyFile: string;
let gate: { child: ChildProcess; port: number; adminPort: number; out: () => string; err: () => string; exited: Promise<number | null> };
const clients: GateClient[] = [];

function serve(extra: Record<string, string>) {
  const child = spawn(process.execPath, [...cliArgv(), 'serve'], { env: { ...process.env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out: () => out, err: () => err, exited };
}

/** The worker processes of the primary `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // Field 4 of /proc/<pid>/stat is the parent pid (after the parenthesised command name).
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      // Workers run the same command line; tsx's esbuild service is a child too, not a worker.
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes('serve')) kids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return kids.sort();
}

/** The gate's JSON log lines on stdout with `event`. */
function events(name: string): { pid: number; [k: string]: unknown }[] {
  return gate
    .out()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { pid: number; event?: string })
    .filter((l) => l.event === name) as { pid: number }[];
}

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`${name} not in /metrics`);
  return Number(line.split(' ')[1]);
}

function client(): GateClient {
  const c = new GateClient({ baseUrl: `https://127.0.0.1:${gate.port}`, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  [fx, up] = await Promise.all([makeFixtures(), startUpstream()]);
  auditFile = join(fx.dir, 'audit.log');
  keyFile = join(fx.dir, 'audit.key');
  writeFileSync(keyFile, generateAuditKey(), { mode: 0o600 });
  const [port, adminPort] = [await freePort(), await freePort()];
  env = testEnv(fx, {
    GATE_WORKERS: '2',
    GATE_STORE: 'redis',
    GATE_REDIS_URL: inject('redisUrl'),
    GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()),
    GATE_UPSTREAM_URL: up.url,
    GATE_LISTEN: `127.0.0.1:${port}`,
    GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    GATE_AUDIT_FILE: auditFile,
    GATE_AUDIT_KEY_FILE: keyFile,
    GATE_DRAIN_TIMEOUT_MS: '8000',
    GATE_LOG_LEVEL: 'info',
  });
  gate = { ...serve(env), port, adminPort };
  await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined))?.status === 200, 40_000, `cluster ready (stderr: ${gate.err()})`, 200);
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  if (gate?.child.exitCode === null) {
    for (const pid of childrenOf(gate.child.pid!)) process.kill(pid, 'SIGKILL');
    gate.child.kill('SIGKILL');
  }
  await up?.close();
});

it('runs two worker processes under one primary', () => {
  expect(childrenOf(gate.child.pid!)).toHaveLength(2);
});

it('conformance flow (challenge, token, gated request) on new connections dealt to both workers', async () => {
  const before = await (await fetch(`http://127.0.0.1:${gate.adminPort}/metrics`)).text();
  for (let i = 0; i < 4; i++) {
    // A fresh client per flow: a new connection, so round-robin sends them to alternate workers.
    const c = client();
    await c.getToken();
    const res = await c.request(`/hello-${i}`);
    expect(res.status).toBe(200);
  }
  expect(up.seen.filter((s) => s.url.startsWith('/hello-')).map((s) => s.url)).toEqual(['/hello-0', '/hello-1', '/hello-2', '/hello-3']);
  // Both workers served (the access log lines carry each worker's pid).
  const pids = new Set(events('request').map((e) => e.pid));
  expect(pids.size).toBe(2);
  // /metrics on the one admin listener counts every worker's tokens, whichever worker answers it.
  for (let i = 0; i < 3; i++) {
    const after = await (await fetch(`http://127.0.0.1:${gate.adminPort}/metrics`)).text();
    expect(metricValue(after, 'agent_gate_tokens_issued_total') - metricValue(before, 'agent_gate_tokens_issued_total')).toBe(4);
    expect(metricValue(after, 'agent_gate_worker_restarts_total')).toBe(0);
  }
});

/** One TLS connection, optionally resuming `session`, with one request; its session and the serving worker's pid. */
async function probe(i: number, session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined; pid: number }> {
  const seen = events('request').length;
  const socket: TLSSocket = connect({ host: '127.0.0.1', port: gate.port, servername: 'localhost', ca: fx.ca.certPem, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, session });
  let ticket: Buffer | undefined;
  socket.on('session', (s: Buffer) => (ticket = s));
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  const reused = socket.isSessionReused();
  socket.write(`GET /probe-${i} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`);
  await new Promise<void>((resolve) => socket.on('data', () => {}).once('close', () => resolve()));
  await waitFor(() => events('request').length > seen, 5000, 'access log line of the probe');
  return { reused, session: ticket, pid: events('request')[seen]!.pid };
}

it('a TLS session from one worker resumes on the other (one ticket key shared by every worker)', async () => {
  const first = await probe(0);
  expect(first.reused).toBe(false);
  expect(first.session).toBeDefined();
  const resumed: { reused: boolean; pid: number }[] = [];
  for (let i = 1; i <= 4; i++) resumed.push(await probe(i, first.session));
  // Round-robin deals the next connections to the other worker too: every one resumed.
  expect(resumed.map((r) => r.reused)).toEqual([true, true, true, true]);
  expect(resumed.some((r) => r.pid !== first.pid)).toBe(true);
});

it('a killed worker is restarted and counted; readiness waits for it', async () => {
  const [victim, survivor] = childrenOf(gate.child.pid!);
  process.kill(victim!, 'SIGKILL');
  await waitFor(() => {
    const now = childrenOf(gate.child.pid!);
    return now.length === 2 && !now.includes(victim!) && now.includes(survivor!);
  }, 20_000, 'a replacement worker', 100);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${gate.adminPort}/readyz`)).status === 200, 20_000, 'ready again with both workers', 100);
  const text = await (await fetch(`http://127.0.0.1:${gate.adminPort}/metrics`)).text();
  expect(metricValue(text, 'agent_gate_worker_restarts_total')).toBe(1);
  const c = client();
  await c.getToken();
  expect((await c.request('/after-restart')).status).toBe(200);
});

it('SIGTERM drains every worker (in-flight request finishes, readyz 503), exits 0; the one audit trail verifies', async () => {
  const workers = childrenOf(gate.child.pid!);
  expect(workers).toHaveLength(2);
  const c = client();
  await c.getToken();
  up.delayMs = 1500;
  const inflight = c.request('/slow');
  await waitFor(() => up.seen.some((s) => s.url === '/slow'), 5000, 'request reached the upstream');
  const t0 = Date.now();
  gate.child.kill('SIGTERM');
  await waitFor(async () => (await fetch(`http://127.0.0.1:${gate.adminPort}/readyz`).catch(() => undefined))?.status === 503, 3000, 'readyz 503 while draining');
  const res = await inflight;
  expect(res.status).toBe(200);
  const code = await gate.exited;
  expect(code, `exit ${code}; primary and worker lines: ${gate.out().split('\n').filter((l) => /worker_exit|shutdown|audit_error|drain/.test(l)).join('\n')} stderr: ${gate.err()}`).toBe(0);
  expect(Date.now() - t0).toBeLessThan(8000);
  up.delayMs = 0;
  for (const pid of workers) expect(() => process.kill(pid, 0)).toThrow();
  // Tokens issued by both workers (and the killed one) are records of one chain, sealed at exit.
  const report = await verifyAudit(auditFile, loadAuditKey(keyFile));
  expect(report.ok).toBe(true);
  expect(report.unconfirmed).toBe(0);
  const tokenEvents = readFileSync(auditFile, 'utf8').split('\n').filter((l) => l.includes("\"event\":\"token_issued\""));
  expect(tokenEvents.length).toBeGreaterThanOrEqual(6);
});

// Section 12: "every worker drains that way, then the primary exits 0", also when a restarted
// worker is still starting (before its SIGTERM handler exists, even before its code loaded).
it('SIGTERM while a restarted worker is starting still exits 0', async () => {
  const [port, adminPort] = [await freePort(), await freePort()];
  const g = serve({ ...env, GATE_LISTEN: `127.0.0.1:${port}`, GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`, GATE_AUDIT_FILE: join(fx.dir, 'audit-restart.log'), GATE_DRAIN_TIMEOUT_MS: '3000' });
  try {
    await waitFor(
      async () => {
        // A primary that exits (a listener it could not bind, say) fails the test at once, with its words.
        if (g.child.exitCode !== null) throw new GiveUp(`primary exited with ${g.child.exitCode}; stderr: ${g.err()}; stdout tail: ${g.out().slice(-2000)}`);
        return (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined))?.status === 200;
      },
      40_000,
      'cluster ready',
      200,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${g.err()}; stdout tail: ${g.out().slice(-2000)}`);
    });
    const before = childrenOf(g.child.pid!);
    const victim = before[0]!;
    process.kill(victim, 'SIGKILL');
    // The replacement is forked 250 ms later; signal the primary while it is still starting.
    // A worker the primary did not have before is the replacement (not merely "two workers":
    // a dying one may still be listed, or be gone from /proc before the primary reaps it).
    let seen: number[] = [];
    await waitFor(() => (seen = childrenOf(g.child.pid!)).some((pid) => !before.includes(pid)), 10_000, 'replacement forked', 10);
    g.child.kill('SIGTERM');
    const code = await g.exited;
    const lines = (g.out() + g.err()).split('\n').filter((l) => /worker_exit|shutdown|worker died/.test(l));
    expect(code, `workers before ${before.join(',')}, killed ${victim}, then ${seen.join(',')}:\n${lines.join('\n')}`).toBe(0);
  } finally {
    if (g.child.exitCode === null) {
      for (const pid of childrenOf(g.child.pid!)) process.kill(pid, 'SIGKILL');
      g.child.kill('SIGKILL');
    }
  }
}, 90_000);

it('GATE_WORKERS=2 with the memory store is a config violation (exit 2)', async () => {
  const s = serve({ ...env, GATE_STORE: 'memory', GATE_LISTEN: '127.0.0.1:0', GATE_ADMIN_LISTEN: '127.0.0.1:0', GATE_AUDIT_FILE: '', GATE_AUDIT_KEY_FILE: '' });
  expect(await s.exited).toBe(2);
  expect(s.err()).toMatch(/^config violation: GATE_WORKERS: 2 workers cannot share the memory store/m);
});
