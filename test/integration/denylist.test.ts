/**
 * Issue 13 class 2: an expired deny-list entry must never hide a live one. Several entries may
 * name the same agent (by thumbprint, by agent id, with and without expiry); any live one
 * refuses it with 403 agent_denied on the challenge, the token endpoint and gated requests, on
 * every gate sharing the store; the admin listing shows exactly the entries enforced; undeny
 * removes an entry everywhere. Real gates in direct mode (real TLS), real Redis, and the
 * memory store.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { closeAll } from '../helpers/suite.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import type { DenyEntry } from '../../src/operator/index.js';

const SECRET = 'admin-secret-for-denylist-tests-0123';
let fx: Fixtures;
let up: RecordingUpstream;
let env: Record<string, string>;
/** Two gates sharing the suite's Redis, and one on the memory store. */
let a: RunningGate;
let b: RunningGate;
let mem: RunningGate;
const closers: (() => Promise<void>)[] = [];
let n = 0;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  const tokenFile = join(fx.dir, 'admin-denylist.token');
  writeFileSync(tokenFile, SECRET + '\n', { mode: 0o600 });
  env = testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_ADMIN_TOKEN_FILE: tokenFile });
  a = await startGate({ ...env, GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl') });
  b = await startGate({ ...env, GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl') });
  mem = await startGate({ ...env, GATE_STORE: 'memory' });
});
afterAll(async () => {
  await closeAll(closers.reverse());
  for (const g of [a, b, mem]) await g?.close();
  await up?.close();
});

/** An entry as the admin API returns it: the operator capability's own type. */
type Entry = DenyEntry;

async function admin(g: RunningGate, path: string, init: { method?: string; body?: unknown } = {}): Promise<Response> {
  return fetch(`${g.adminUrl}${path}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${SECRET}`, ...(init.body ? { 'content-type': 'application/json' } : {}) },
    body: init.body ? JSON.stringify(init.body) : undefined,
  });
}
async function deny(g: RunningGate, body: { thumbprint?: string; agent_id?: string; reason: string; ttl_s?: number }): Promise<Entry> {
  const r = await admin(g, '/admin/v1/denylist', { method: 'POST', body });
  expect(r.status).toBe(201);
  return (await r.json()) as Entry;
}
async function listed(g: RunningGate): Promise<Entry[]> {
  const r = await admin(g, '/admin/v1/denylist');
  expect(r.status).toBe(200);
  return ((await r.json()) as { entries: Entry[] }).entries;
}

interface Agent {
  who: KeyAndCert;
  thumbprint: string;
  agentId: string;
}
async function newAgent(): Promise<Agent> {
  const name = `denylist-${process.pid}-${n++}`;
  const who = await issueAgentCert(fx.ca, name, { alg: 'ec-p256' });
  const thumbprint = createHash('sha256').update(new X509Certificate(who.certPem).raw).digest('base64url');
  return { who, thumbprint, agentId: `urn:agent:${name}` };
}

/** What the gate answers the agent on each of the three entry points, as [status, code]. */
async function answers(g: RunningGate, who: KeyAndCert): Promise<[number, unknown][]> {
  const d = tlsAgent(fx, who);
  closers.push(() => d.close());
  const out: [number, unknown][] = [];
  const challenge = await call(d, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
  out.push([challenge.status, challenge.status === 201 ? 'ok' : challenge.json().code]);
  const token = await call(d, `${g.url}/.agent-gate/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  out.push([token.status, token.json().code]);
  const gated = await call(d, `${g.url}/denylist-probe`);
  out.push([gated.status, gated.json().code]);
  return out;
}
const DENIED: [number, unknown][] = [
  [403, 'agent_denied'],
  [403, 'agent_denied'],
  [403, 'agent_denied'],
];
/** What an agent that is not denied gets with no token: a challenge, then the token step's own refusals. */
const ADMITTED: [number, unknown][] = [
  [201, 'ok'],
  [400, 'request_malformed'],
  [401, 'token_missing'],
];

/** Waits until `e` has expired by the gate's clock (the test shares it) with some margin. */
async function expired(e: Entry): Promise<void> {
  await waitFor(() => Date.now() > e.expires_at! + 100, 5000, `deny entry ${e.id} to expire`);
}

/**
 * Several short-lived entries for one agent: Redis returns a hash's fields in an order of its
 * own, so with one slot per key the permanent entry is hidden unless it happens to come last.
 */
async function shortLived(g: RunningGate, who: { thumbprint?: string; agent_id?: string }): Promise<Entry[]> {
  const out: Entry[] = [];
  for (let i = 0; i < 5; i++) out.push(await deny(g, { ...who, reason: `test: short-lived ${i}`, ttl_s: 1 }));
  return out;
}

describe('deny list: an expired entry never hides a live one', () => {
  it('permanent entry, then a short-lived one for the same certificate: still denied on every entry point of both gates after it expires', async () => {
    const ag = await newAgent();
    expect(await answers(a, ag.who)).toEqual(ADMITTED);
    const permanent = await deny(a, { thumbprint: ag.thumbprint, reason: 'test: permanent' });
    const shorts = await shortLived(a, { thumbprint: ag.thumbprint });
    await waitFor(async () => (await answers(b, ag.who))[0]![0] === 403, 5000, 'entries to reach gate B');
    for (const e of shorts) await expired(e);
    const seen = up.seen.length;
    for (const g of [a, b]) expect(await answers(g, ag.who)).toEqual(DENIED);
    expect(up.seen.length).toBe(seen);
    // What the admin API lists is what is enforced: the live entry, not the expired one.
    for (const g of [a, b]) expect((await listed(g)).filter((e) => e.thumbprint === ag.thumbprint).map((e) => e.id)).toEqual([permanent.id]);
  });

  it('the reverse order: short-lived entry first, then the permanent one', async () => {
    const ag = await newAgent();
    const shorts = await shortLived(b, { thumbprint: ag.thumbprint });
    const permanent = await deny(b, { thumbprint: ag.thumbprint, reason: 'test: permanent' });
    for (const e of shorts) await expired(e);
    for (const g of [a, b]) expect(await answers(g, ag.who)).toEqual(DENIED);
    expect((await listed(a)).filter((e) => e.thumbprint === ag.thumbprint).map((e) => e.id)).toEqual([permanent.id]);
  });

  it('a permanent agent_id entry is honoured although an expired thumbprint entry names the same certificate (and the reverse)', async () => {
    const x = await newAgent();
    await deny(a, { agent_id: x.agentId, reason: 'test: the agent, permanently' });
    const shortT = await deny(a, { thumbprint: x.thumbprint, reason: 'test: this key, briefly', ttl_s: 1 });
    const y = await newAgent();
    await deny(a, { thumbprint: y.thumbprint, reason: 'test: this key, permanently' });
    const shortA = await deny(a, { agent_id: y.agentId, reason: 'test: the agent, briefly', ttl_s: 1 });
    await expired(shortT);
    await expired(shortA);
    for (const g of [a, b]) {
      expect(await answers(g, x.who)).toEqual(DENIED);
      expect(await answers(g, y.who)).toEqual(DENIED);
    }
  });

  it('undeny removes one entry everywhere; the agent stays denied while another live entry names it, and is admitted on both gates once none does', async () => {
    const ag = await newAgent();
    const byT = await deny(a, { thumbprint: ag.thumbprint, reason: 'test: key' });
    const byA = await deny(a, { agent_id: ag.agentId, reason: 'test: agent', ttl_s: 3600 });
    const mine = (l: Entry[]) => l.filter((e) => e.thumbprint === ag.thumbprint || e.agent_id === ag.agentId).map((e) => e.id);
    expect(mine(await listed(b))).toEqual([byT.id, byA.id]);
    expect((await admin(b, `/admin/v1/denylist/${byT.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(mine(await listed(a))).toEqual([byA.id]);
    for (const g of [a, b]) expect(await answers(g, ag.who)).toEqual(DENIED);
    expect((await admin(a, `/admin/v1/denylist/${byA.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(mine(await listed(b))).toEqual([]);
    // Gate A removed it itself; gate B learns of it through the store within one refresh.
    expect(await answers(a, ag.who)).toEqual(ADMITTED);
    await waitFor(async () => (await answers(b, ag.who))[0]![0] === 201, 5000, 'removal to reach gate B');
    expect(await answers(b, ag.who)).toEqual(ADMITTED);
  });

  it('a gate started after the entry was made refuses the agent from its first request', async () => {
    const ag = await newAgent();
    await deny(a, { thumbprint: ag.thumbprint, reason: 'test: before the new gate started' });
    const fresh = await startGate({ ...env, GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl') });
    closers.push(() => fresh.close());
    expect(await answers(fresh, ag.who)).toEqual(DENIED);
  });

  it('memory store: the same rule (permanent, then short-lived, which expires)', async () => {
    const ag = await newAgent();
    const permanent = await deny(mem, { agent_id: ag.agentId, reason: 'test: permanent' });
    const short = await deny(mem, { agent_id: ag.agentId, reason: 'test: short-lived', ttl_s: 1 });
    await expired(short);
    expect(await answers(mem, ag.who)).toEqual(DENIED);
    expect((await listed(mem)).map((e) => e.id)).toEqual([permanent.id]);
  });
});
