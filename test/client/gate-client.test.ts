import { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerAgentCommands } from '../../src/cli/agent.js';
import {
  GateClient,
  GateClientError,
  ResponseTooLargeError,
  type GateClientOptions,
} from '../../src/client/index.js';
import { makeTestPki, problem, TestGate, type CertPair } from './fixtures.js';

let pki: { server: CertPair; agent: CertPair; other: CertPair };
let gate: TestGate;
const clients: GateClient[] = [];

beforeAll(() => {
  pki = makeTestPki();
});

beforeEach(async () => {
  gate = await new TestGate(pki).start();
});

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await gate.stop();
});

function client(extra: Partial<GateClientOptions> = {}): GateClient {
  const c = new GateClient({ baseUrl: gate.url, cert: pki.agent.cert, key: pki.agent.key, ca: pki.server.cert, ...extra });
  clients.push(c);
  return c;
}

describe('token flow', () => {
  it('runs challenge -> proof -> token and caches the token', async () => {
    const c = client();
    const t1 = await c.getToken();
    const t2 = await c.getToken();
    expect(t1).toBe('tok-1');
    expect(t2).toBe(t1);
    expect(gate.calls).toEqual({ challenge: 1, token: 1, upstream: 0 });
    expect(gate.proofs[0]!.header).toEqual({ alg: 'ES256', typ: 'agent-gate-proof+jwt' });
  });

  it('shares one in-flight flow between concurrent callers', async () => {
    const c = client();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => c.getToken()));
    expect(new Set(tokens)).toEqual(new Set(['tok-1']));
    expect(gate.calls.challenge).toBe(1);
    expect(gate.calls.token).toBe(1);
  });

  it('refreshes shortly before expiry (10% of a short lifetime), in the background', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    gate.tokenTtlS = 100; // margin min(30, 10) = 10 s
    const c = client();
    expect(await c.getToken()).toBe('tok-1');
    vi.setSystemTime(t0 + 89_000);
    expect(await c.getToken()).toBe('tok-1');
    expect(gate.calls.challenge).toBe(1);
    vi.setSystemTime(t0 + 91_000);
    // Still valid: handed out at once while the next one is fetched.
    expect(await c.getToken()).toBe('tok-1');
    await vi.waitFor(() => expect(gate.calls.token).toBe(2));
    await vi.waitFor(async () => expect(await c.getToken()).toBe('tok-2'));
    expect(gate.calls.challenge).toBe(2);
  });

  it('fetchToken forces a new flow and returns the full response', async () => {
    const c = client();
    await c.getToken();
    const res = await c.fetchToken();
    expect(res).toEqual({ access_token: 'tok-2', token_type: 'Bearer', expires_in: 300 });
    expect(await c.getToken()).toBe('tok-2');
  });

  it('turns a problem+json refusal into GateClientError', async () => {
    gate.onToken = () => problem(403, 'proof_invalid');
    const c = client();
    const err = await c.getToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'proof_invalid', status: 403, instance: 'urn:agent-gate:refusal:proofinvalid403' });
    // A failed flow is not cached: the next call runs a new one.
    gate.onToken = undefined;
    expect(await c.getToken()).toBe('tok-1');
  });

  it('reports an off-contract answer as unexpected_response', async () => {
    gate.onChallenge = () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>' });
    const err = await client().getToken().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'GateClientError', code: 'unexpected_response', status: 200 });
  });

  it('waits out a short Retry-After on the challenge and retries once', async () => {
    gate.onChallenge = (n) => (n === 1 ? problem(503, 'overloaded', { 'retry-after': '0' }) : undefined);
    const c = client();
    expect(await c.getToken()).toBe('tok-1');
    expect(gate.calls.challenge).toBe(2);
  });

  it('does not wait when Retry-After exceeds maxRetryAfterS', async () => {
    gate.onChallenge = () => problem(429, 'rate_limited', { 'retry-after': '60' });
    const err = await client({ maxRetryAfterS: 5 }).getToken().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'rate_limited', status: 429, retryAfterS: 60 });
    expect(gate.calls.challenge).toBe(1);
  });

  it('solves proof-of-work when the challenge asks for it', async () => {
    gate.pow = { alg: 'sha256', difficulty: 10 };
    expect(await client().getToken()).toBe('tok-1');
  });

  it('bounds the body read from a gate endpoint', async () => {
    gate.onChallenge = () => ({ status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(2 * 1024 * 1024 + 1, 0x20) });
    await expect(client().challenge()).rejects.toBeInstanceOf(ResponseTooLargeError);
  });

  it('refuses a gate certificate not issued by the configured CA', async () => {
    const c = client({ ca: pki.other.cert });
    await expect(c.getToken()).rejects.toThrow();
    expect(gate.calls.challenge).toBe(0);
  });
});

describe('request', () => {
  it('sends the Bearer token and reuses one keep-alive TLS connection', async () => {
    const c = client();
    for (let i = 0; i < 5; i++) {
      const res = await c.request(`/api/thing?i=${i}`, {
        method: 'POST',
        headers: { 'X-Test': 'yes', Authorization: 'Bearer spoofed' },
        body: `b${i}`,
      });
      expect(res.status).toBe(200);
      expect(res.json()).toEqual({ method: 'POST', path: `/api/thing?i=${i}`, token: 'tok-1', body: `b${i}`, xtest: 'yes' });
    }
    expect(gate.calls).toEqual({ challenge: 1, token: 1, upstream: 5 });
    expect(gate.tls.connections).toBe(1);
  });

  it('resumes the TLS session when a new connection is needed', async () => {
    gate.onUpstream = (r) => (r.path === '/bye' ? { status: 200, headers: { connection: 'close' }, body: 'bye' } : undefined);
    const c = client();
    expect((await c.request('/bye')).status).toBe(200);
    expect((await c.request('/after')).status).toBe(200);
    expect(gate.tls.connections).toBe(2);
    expect(gate.tls.resumed).toBe(1);
  });

  it('refreshes the token and retries once on 401', async () => {
    gate.onUpstream = (r) => (r.n === 1 ? problem(401, 'token_expired') : undefined);
    const c = client();
    const res = await c.request('/x');
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ token: 'tok-2' });
    expect(gate.calls).toEqual({ challenge: 2, token: 2, upstream: 2 });
  });

  it('retries a persistent 401 only once', async () => {
    gate.onUpstream = () => problem(401, 'token_invalid');
    const res = await client().request('/x');
    expect(res.status).toBe(401);
    expect(gate.calls).toEqual({ challenge: 2, token: 2, upstream: 2 });
  });

  it('concurrent 401s share one refresh', async () => {
    gate.onUpstream = (r) => (r.headers.authorization === 'Bearer tok-1' ? problem(401, 'token_expired') : undefined);
    const c = client();
    await c.getToken();
    const all = await Promise.all(Array.from({ length: 8 }, () => c.request('/x')));
    expect(all.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(gate.calls.token).toBe(2);
  });

  it('does not refresh on a 401 no token can cure', async () => {
    gate.onUpstream = () => problem(401, 'client_cert_required');
    const res = await client().request('/x');
    expect(res.status).toBe(401);
    expect(gate.calls).toEqual({ challenge: 1, token: 1, upstream: 1 });
  });

  it('honours Retry-After on 429 and retries once', async () => {
    gate.onUpstream = (r) => (r.n === 1 ? problem(429, 'rate_limited', { 'retry-after': '1' }) : undefined);
    const c = client();
    await c.getToken();
    const started = performance.now();
    const res = await c.request('/x');
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(res.status).toBe(200);
    expect(gate.calls.upstream).toBe(2);
  });

  it('retries a 503 with Retry-After 0 maxRetries times (default 2), and returns the last 503', async () => {
    gate.onUpstream = () => problem(503, 'overloaded', { 'retry-after': '0' });
    const res = await client().request('/x');
    expect(res.status).toBe(503);
    expect(gate.calls.upstream).toBe(3);
  });

  it('does not wait for a Retry-After above maxRetryAfterS', async () => {
    gate.onUpstream = () => problem(429, 'rate_limited', { 'retry-after': '11' });
    const res = await client().request('/x');
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('11');
    expect(gate.calls.upstream).toBe(1);
  });

  it('does not follow redirects', async () => {
    gate.onUpstream = (r) =>
      r.path === '/from' ? { status: 302, headers: { location: `${gate.url}/to` }, body: '' } : undefined;
    const res = await client().request('/from');
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe(`${gate.url}/to`);
    expect(gate.upstreamLog.map((r) => r.path)).toEqual(['/from']);
  });

  it('refuses a relative path and a Host header', async () => {
    const c = client();
    await expect(c.request('x')).rejects.toBeInstanceOf(TypeError);
    await expect(c.request('/x', { headers: { Host: 'evil' } })).rejects.toBeInstanceOf(TypeError);
    expect(gate.calls.upstream).toBe(0);
  });

  it('fails after close()', async () => {
    const c = client();
    await c.close();
    await expect(c.getToken()).rejects.toThrow(/closed/);
  });
});

describe('agent CLI', () => {
  let dir: string;
  const files = { cert: '', key: '', ca: '' };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'agc-cli-'));
    files.cert = join(dir, 'agent.crt');
    files.key = join(dir, 'agent.key');
    files.ca = join(dir, 'ca.crt');
    writeFileSync(files.cert, pki.agent.cert);
    writeFileSync(files.key, pki.agent.key);
    writeFileSync(files.ca, pki.server.cert);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function run(...args: string[]): Promise<{ out: string; err: string; code: number }> {
    const out: string[] = [];
    const err: string[] = [];
    const capture = (sink: string[]) => (chunk: string | Uint8Array, ...rest: unknown[]) => {
      sink.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      const cb = rest.find((r) => typeof r === 'function') as ((e?: Error) => void) | undefined;
      cb?.();
      return true;
    };
    const so = vi.spyOn(process.stdout, 'write').mockImplementation(capture(out) as typeof process.stdout.write);
    const se = vi.spyOn(process.stderr, 'write').mockImplementation(capture(err) as typeof process.stderr.write);
    const saved = process.exitCode;
    process.exitCode = undefined;
    try {
      const program = new Command().exitOverride();
      registerAgentCommands(program);
      await program.parseAsync(['node', 'agent-gate', 'agent', ...args]);
      return { out: out.join(''), err: err.join(''), code: Number(process.exitCode ?? 0) };
    } finally {
      process.exitCode = saved;
      so.mockRestore();
      se.mockRestore();
    }
  }

  const tls = () => ['--cert', files.cert, '--key', files.key, '--ca', files.ca];

  it('token prints the token response', async () => {
    const r = await run('token', ...tls(), gate.url);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ access_token: 'tok-1', token_type: 'Bearer', expires_in: 300 });
  });

  it('call prints the upstream body and exits 0 on 2xx', async () => {
    const r = await run('call', ...tls(), '-X', 'PUT', '-H', 'X-Test: a', '-d', 'hello', `${gate.url}/some/path?q=1`);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ method: 'PUT', path: '/some/path?q=1', token: 'tok-1', body: 'hello', xtest: 'a' });
  });

  it('call prints a refusal line and exits 1', async () => {
    gate.onUpstream = () => problem(403, 'agent_denied');
    const r = await run('call', ...tls(), `${gate.url}/x`);
    expect(r.code).toBe(1);
    expect(r.err).toBe('error: agent_denied (403) instance=urn:agent-gate:refusal:agentdenied403\n');
    expect(r.out).toBe('');
  });

  it('call exits 1 on a non-2xx upstream answer and prints its body', async () => {
    gate.onUpstream = () => ({ status: 404, body: 'nope' });
    const r = await run('call', ...tls(), `${gate.url}/x`);
    expect(r.code).toBe(1);
    expect(r.out).toBe('nope');
  });

  it('token reports a refused flow on stderr', async () => {
    gate.onChallenge = () => problem(403, 'client_cert_revoked');
    const r = await run('token', ...tls(), gate.url);
    expect(r.code).toBe(1);
    expect(r.err).toBe('error: client_cert_revoked (403) instance=urn:agent-gate:refusal:clientcertrevoked403\n');
  });
});
