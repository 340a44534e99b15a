/**
 * The gate's audit trail: every refusal's `instance` id is in it, issued tokens are, the file
 * verifies, and SIGTERM under load loses no refusal the agent was told about.
 */
import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { generateAuditKey, loadAuditKey, verifyAudit } from '../../src/audit/index.js';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { spawnServe } from '../helpers/serve.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let keyFile: string;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  keyFile = join(fx.dir, 'audit.key');
  writeFileSync(keyFile, generateAuditKey(), { mode: 0o600 });
});
afterAll(async () => {
  await up?.close();
});

const idOf = (instance: unknown) => String(instance).replace('urn:agent-gate:refusal:', '');

it('refusal ids and token issuance are in a trail that verifies', async () => {
  const file = join(fx.dir, 'trail-1.log');
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_AUDIT_FILE: file, GATE_AUDIT_KEY_FILE: keyFile }));
  const a = tlsAgent(fx);
  let instance = '';
  const c = new GateClient({ baseUrl: g.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  try {
    const refused = await call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect(refused.status).toBe(401);
    instance = idOf(refused.json().instance);
    await c.getToken();
  } finally {
    await c.close();
    await a.close();
    await g.close();
  }
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines.some((l) => l.event === 'token_issued' && l.agent_id === 'urn:agent:p256' && typeof l.jti === 'string')).toBe(true);
  expect(lines.some((l) => l.code === 'client_cert_required' && l.refusal_id === instance)).toBe(true);
  const report = await verifyAudit(file, loadAuditKey(keyFile));
  expect(report.ok).toBe(true);
  expect(report.unconfirmed).toBe(0);
});

it('a specific refusal id can be looked up in the trail', async () => {
  const file = join(fx.dir, 'trail-2.log');
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_AUDIT_FILE: file, GATE_AUDIT_KEY_FILE: keyFile }));
  const a = tlsAgent(fx, fx.agents.foreign);
  let instance = '';
  try {
    const r = await call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    instance = idOf(r.json().instance);
  } finally {
    await a.close();
    await g.close();
  }
  const hit = readFileSync(file, 'utf8').split('\n').find((l) => l.includes(`"refusal_id":"${instance}"`));
  expect(hit).toBeDefined();
  expect(JSON.parse(hit!)).toMatchObject({ event: 'refusal', code: 'client_cert_invalid', status: 403 });
});

it('SIGTERM during load: every refusal answered before the exit is in the trail, which verifies', async () => {
  const file = join(fx.dir, 'trail-3.log');
  const gate = await spawnServe(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_AUDIT_FILE: file, GATE_AUDIT_KEY_FILE: keyFile, GATE_LOG_LEVEL: 'warn' }));
  const acknowledged: string[] = [];
  const dispatcher = new Agent({ connections: 8, connect: { ca: fx.ca.certPem, servername: 'localhost' } });
  try {
    let stop = false;
    const workers = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        try {
          const r = await request(`${gate.url}/.agent-gate/v1/challenge`, { dispatcher, method: 'POST' });
          const body = (await r.body.json()) as { instance?: string };
          if (body.instance) acknowledged.push(idOf(body.instance));
        } catch {
          return; // the listener closed: this worker is done
        }
      }
    });
    await waitFor(() => acknowledged.length >= 300, 20_000, 'load under way');
    gate.child.kill('SIGTERM');
    expect((await gate.exited).code, gate.output()).toBe(0);
    stop = true;
    await Promise.all(workers);
  } finally {
    await dispatcher.close();
    if (gate.child.exitCode === null) gate.child.kill('SIGKILL');
  }
  const text = readFileSync(file, 'utf8');
  const inTrail = new Set([...text.matchAll(/"refusal_id":"([a-z0-9]+)"/g)].map((m) => m[1]));
  const missing = acknowledged.filter((id) => !inTrail.has(id));
  expect(acknowledged.length).toBeGreaterThanOrEqual(300);
  expect(missing).toEqual([]);
  const report = await verifyAudit(file, loadAuditKey(keyFile));
  expect(report.ok).toBe(true);
  expect(report.unconfirmed).toBe(0);
});

// A trail on a full disk (/dev/full behind a symlink: every write fails with ENOSPC): the gate
// keeps answering, and its metrics show the records it holds unwritten, for the alert to see.
it.runIf(existsSync('/dev/full'))('an unwritable trail shows in /metrics as a backlog; the gate keeps answering', async () => {
  const file = join(fx.dir, 'trail-full.log');
  symlinkSync('/dev/full', file);
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_AUDIT_FILE: file, GATE_AUDIT_KEY_FILE: keyFile }));
  const a = tlsAgent(fx);
  const metric = async (name: string) => Number(new RegExp(`^agent_gate_${name} (\\S+)$`, 'm').exec(await (await fetch(`${g.adminUrl}/metrics`)).text())?.[1]);
  try {
    expect(await metric('audit_pending_records')).toBe(0);
    for (let i = 0; i < 3; i++) expect((await call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' })).status).toBe(401);
    // Refusals are recorded before they are answered; several flush intervals (200 ms) pass
    // and nothing becomes durable.
    await new Promise((r) => setTimeout(r, 600));
    expect(await metric('audit_pending_records')).toBeGreaterThanOrEqual(3);
    expect(await metric('audit_dropped_total')).toBe(0);
  } finally {
    await a.close();
    await g.close().catch(() => undefined);
  }
});
