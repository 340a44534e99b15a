/**
 * Metrics of PROTOCOL.md section 10 on the admin listener, after a scripted sequence of
 * token flows and refusals against a real gate (memory store) and a recording upstream.
 */
import { randomBytes } from 'node:crypto';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';
let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
const clients: GateClient[] = [];
const agents: Agent[] = [];
const plain = new Agent();

/** One sample of the Prometheus text format. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample `name{labels}` (labels matched exactly), or undefined. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  const hits = samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
  if (hits.length > 1) throw new Error(`more than one sample ${name} ${want}`);
  return hits[0]?.value;
}

async function scrape(): Promise<{ samples: Sample[]; text: string; contentType: unknown }> {
  const res = await call(plain, `${gw.adminUrl}/metrics`);
  expect(res.status).toBe(200);
  return { samples: parseMetrics(res.text), text: res.text, contentType: res.headers['content-type'] };
}

function client(who = fx.agents.ed25519): GateClient {
  const c = new GateClient({ baseUrl: gw.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url }));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(agents.map((a) => a.close()));
  await plain.close();
  await gw?.close();
  await up?.close();
});

describe('admin /metrics after a scripted sequence', () => {
  it('counts exactly what happened', async () => {
    const before = await scrape();
    // A fresh gate: everything at zero, all label values of section 10 present.
    expect(valueOf(before.samples, 'agent_gate_challenges_issued_total')).toBe(0);
    expect(valueOf(before.samples, 'agent_gate_tokens_issued_total')).toBe(0);
    for (const result of ['accepted', 'invalid', 'expired', 'replayed', 'unknown', 'binding_mismatch', 'pow_invalid', 'attestation_invalid']) {
      expect(valueOf(before.samples, 'agent_gate_proofs_total', { result }), result).toBe(0);
    }
    expect(valueOf(before.samples, 'agent_gate_replays_detected_total', { kind: 'challenge' })).toBe(0);
    expect(valueOf(before.samples, 'agent_gate_errors_total', { code: 'client_cert_required' })).toBe(0);
    const tokenCountBefore = valueOf(before.samples, 'agent_gate_request_duration_seconds_count', { route: 'token' }) ?? 0;

    // 1. A successful token flow and one gated request (GateClient.request does the flow).
    const a = client(fx.agents.ed25519);
    const res = await a.request('/api/hello');
    expect(res.status).toBe(200);
    expect(up.seen).toHaveLength(1);

    // 2. A second successful token flow, by hand, and 3. its proof submitted again: replayed.
    const b = client(fx.agents.p256);
    const ch = await b.challenge();
    const body = { challenge_id: ch.challenge_id, proof: await b.signProof(ch) };
    expect((await b.submitProof(body)).status).toBe(200);
    const replay = await b.submitProof(body);
    expect(replay.status).toBe(409);
    expect(replay.json()).toMatchObject({ code: 'challenge_replayed' });

    // 4. A proof for a challenge that was never issued: unknown.
    const unknown = await b.submitProof({ challenge_id: randomBytes(16).toString('base64url'), proof: body.proof });
    expect(unknown.status).toBe(404);
    expect(unknown.json()).toMatchObject({ code: 'challenge_unknown' });

    // 5. A request without a client certificate.
    const noCert = tlsAgent(fx);
    agents.push(noCert);
    const refused = await call(noCert, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(refused.status).toBe(401);
    expect(refused.json()).toMatchObject({ code: 'client_cert_required' });

    // Durations are observed when the response closes, which can trail the client by a tick.
    await waitFor(
      async () => (valueOf((await scrape()).samples, 'agent_gate_request_duration_seconds_count', { route: 'token' }) ?? 0) >= tokenCountBefore + 4,
      5000,
      'token route durations',
    );

    const { samples, text, contentType } = await scrape();
    expect(String(contentType)).toMatch(/^text\/plain/);
    expect(valueOf(samples, 'agent_gate_challenges_issued_total')).toBe(2);
    expect(valueOf(samples, 'agent_gate_tokens_issued_total')).toBe(2);
    expect(valueOf(samples, 'agent_gate_proofs_total', { result: 'accepted' })).toBe(2);
    expect(valueOf(samples, 'agent_gate_proofs_total', { result: 'replayed' })).toBe(1);
    expect(valueOf(samples, 'agent_gate_proofs_total', { result: 'unknown' })).toBe(1);
    for (const result of ['invalid', 'expired', 'binding_mismatch', 'pow_invalid', 'attestation_invalid']) {
      expect(valueOf(samples, 'agent_gate_proofs_total', { result }), result).toBe(0);
    }
    expect(valueOf(samples, 'agent_gate_replays_detected_total', { kind: 'challenge' })).toBe(1);
    expect(valueOf(samples, 'agent_gate_replays_detected_total', { kind: 'forwarded' })).toBe(0);
    expect(valueOf(samples, 'agent_gate_errors_total', { code: 'client_cert_required' })).toBe(1);
    expect(valueOf(samples, 'agent_gate_errors_total', { code: 'challenge_replayed' })).toBe(1);
    expect(valueOf(samples, 'agent_gate_errors_total', { code: 'challenge_unknown' })).toBe(1);
    expect(valueOf(samples, 'agent_gate_errors_total', { code: 'proof_invalid' })).toBe(0);
    // Two accepted, one replayed, one unknown: four requests on the token route.
    expect(valueOf(samples, 'agent_gate_request_duration_seconds_count', { route: 'token' })).toBe(tokenCountBefore + 4);
    expect(valueOf(samples, 'agent_gate_request_duration_seconds_count', { route: 'challenge' })).toBeGreaterThanOrEqual(2);
    expect(valueOf(samples, 'agent_gate_request_duration_seconds_count', { route: 'proxy' })).toBeGreaterThanOrEqual(1);
    // One signature verified per accepted proof (both replayed and unknown stop before step 10).
    const sigCount = ['EdDSA', 'ES256', 'ES384', 'PS256'].reduce(
      (n, alg) => n + (valueOf(samples, 'agent_gate_signature_verification_seconds_count', { alg }) ?? 0),
      0,
    );
    expect(sigCount).toBe(2);

    // Default process metrics, unprefixed.
    expect(valueOf(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(text).not.toMatch(/^agent_gate_process_/m);
    // Every other metric carries the prefix.
    const ours = new Set(samples.map((s) => s.name).filter((n) => n.startsWith('agent_gate_')));
    for (const n of ['agent_gate_store_errors_total', 'agent_gate_inflight_requests', 'agent_gate_load_shed_total', 'agent_gate_rate_limited_total']) {
      expect(ours.has(n), n).toBe(true);
    }
  });
});

describe('admin listener', () => {
  it('/healthz and /readyz answer 200', async () => {
    const h = await call(plain, `${gw.adminUrl}/healthz`);
    expect(h.status).toBe(200);
    expect(h.json()).toEqual({ status: 'ok' });
    const r = await call(plain, `${gw.adminUrl}/readyz`);
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ status: 'ready' });
  });

  it('an unknown admin path is 404 problem+json not_found', async () => {
    const res = await call(plain, `${gw.adminUrl}/nope`);
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json()).toMatchObject({ type: 'urn:agent-gate:error:not_found', code: 'not_found', status: 404 });
    expect(res.json().instance).toMatch(/^urn:agent-gate:refusal:[A-Za-z0-9]{1,64}$/);
  });

  it('/metrics is not served on the public listener (it belongs to the upstream there)', async () => {
    const noCert = tlsAgent(fx);
    agents.push(noCert);
    const res = await call(noCert, `${gw.url}/metrics`);
    expect(res.status).toBe(401);
    expect(res.text).not.toContain('agent_gate_');
  });
});
