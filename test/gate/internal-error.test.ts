/**
 * A fault inside the gate (anything thrown that is not a contract refusal) is 500
 * `internal_error` with the catalog's problem document, logged with its stack under the refusal
 * id and counted, on a gated request and on a gate endpoint alike. Before the pipeline runner,
 * the guard answered such a fault 503 `store_unavailable` (a wrong reason to retry) and the
 * gate endpoints a 500 outside the catalog (no `code`).
 */
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let client: GateClient;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  const logStream = new PassThrough();
  logStream.on('data', (chunk: Buffer) => {
    for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  gw = await startGate(testEnv(fx, { GATE_UPSTREAM_URL: up.url }), { logStream });
  client = new GateClient({ baseUrl: gw.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
});

afterAll(async () => {
  await client?.close();
  await gw?.close();
  await up?.close();
});

async function internalErrorsCounted(): Promise<number> {
  const res = await fetch(`${gw.adminUrl}/metrics`);
  const m = /agent_gate_errors_total\{code="internal_error"\} (\d+)/.exec(await res.text());
  return Number(m?.[1] ?? NaN);
}

function expectInternalError(res: { status: number; headers: Record<string, string | string[] | undefined> }, body: Record<string, unknown>): void {
  expect(res.status).toBe(500);
  expect(res.headers['content-type']).toBe('application/problem+json');
  expect(body).toMatchObject({ type: 'urn:agent-gate:error:internal_error', title: 'Internal error', status: 500, code: 'internal_error' });
  const id = /^urn:agent-gate:refusal:([a-z0-9]{26})$/.exec(String(body.instance))?.[1];
  expect(id).toBeDefined();
  // Logged once, at error level, with the stack, under the id the client got; never echoed.
  const line = lines.find((l) => l.refusal_id === id);
  expect(line).toMatchObject({ event: 'refusal', code: 'internal_error', status: 500, level: 50 });
  expect(String((line!.err as { stack?: string }).stack)).toContain('TypeError: injected fault');
  expect(JSON.stringify(body)).not.toContain('injected');
}

describe('internal faults are 500 internal_error', () => {
  it('a gated request whose token check hits a TypeError', async () => {
    const token = await client.getToken();
    const before = await internalErrorsCounted();
    const tokens = gw.gate.services.tokens;
    const verifySync = tokens.verifySync.bind(tokens);
    tokens.verifySync = () => {
      throw new TypeError('injected fault');
    };
    try {
      const res = await client.request('/api/x', { headers: { authorization: `Bearer ${token}` } });
      expectInternalError({ status: res.status, headers: res.headers }, JSON.parse(res.body.toString()) as Record<string, unknown>);
    } finally {
      tokens.verifySync = verifySync;
    }
    expect(await internalErrorsCounted()).toBe(before + 1);
    expect(up.seen.length).toBe(0);
    // The gate serves on: the fault was one request's.
    expect((await client.request('/api/x')).status).toBe(200);
  });

  it('a token request whose store consume hits a TypeError', async () => {
    const store = gw.gate.services.store;
    const consume = store.consumeChallenge.bind(store);
    store.consumeChallenge = async () => {
      throw new TypeError('injected fault');
    };
    try {
      const err = await new GateClient({ baseUrl: gw.url, cert: fx.agents.ed25519.certPem, key: fx.agents.ed25519.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetries: 0 })
        .getToken()
        .catch((e: unknown) => e as { status?: number; code?: string; instance?: string });
      expect(err).toMatchObject({ status: 500, code: 'internal_error' });
      expect(lines.find((l) => `urn:agent-gate:refusal:${String(l.refusal_id)}` === (err as { instance?: string }).instance)).toMatchObject({ code: 'internal_error', level: 50 });
    } finally {
      store.consumeChallenge = consume;
    }
  });
});
