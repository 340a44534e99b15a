/**
 * The SDK's token flow, gated requests and agent CLI against the real gate (test/client/harness.ts):
 * real TLS and certificates, a real upstream, and the gate configured into each behaviour
 * (rate limits, proof-of-work, in-flight cap, clock, deny list, CRL).
 */
import { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerAgentCommands } from '../../src/cli/agent.js';
import { GateClientError, ResponseTooLargeError } from '../../src/client/index.js';
import { createCa } from '../../src/pki/index.js';
import { collectGarbage } from '../helpers/gc.js';
import { clientSuite, holdTheOnlySlot, P, startImpostor, type ClientGate } from './harness.js';

/** The shared gate (memory store, limits off); tests needing other settings start their own. */
const suite = clientSuite();
const { client } = suite;
const gateWith = (env: Record<string, string>): Promise<ClientGate> => suite.gateWith({ env });

const jti = (token: string) => decodeJwt(token).jti;
/** The token lifetime plus GATE_MAX_SKEW_S (default 30) and a second: the gate then answers token_expired. */
const PAST_EXPIRY_MS = (300 + 30 + 1) * 1000;

/** Fakes Date (both sides: the gate's clock is Date.now() + shift) and moves it past the token's expiry when the first gated request arrives. */
function expireTokensOnFirstGatedRequest(h: ClientGate): void {
  let jumped = false;
  h.onArrival = (kind) => {
    if (kind !== 'gated' || jumped) return;
    jumped = true;
    vi.setSystemTime(Date.now() + PAST_EXPIRY_MS);
  };
}

describe('token flow', () => {
  it('runs challenge -> proof -> token and caches the token', async () => {
    const c = client();
    const sign = vi.spyOn(c, 'signProof');
    const t1 = await c.getToken();
    const t2 = await c.getToken();
    expect(t2).toBe(t1);
    expect(decodeJwt(t1).cnf).toEqual({ 'x5t#S256': c.thumbprint });
    expect(suite.g.calls).toEqual({ challenge: 1, token: 1, gated: 0 });
    expect(decodeProtectedHeader(await sign.mock.results[0]!.value)).toEqual({ alg: 'ES256', typ: 'agent-gate-proof+jwt' });
  });

  it('shares one in-flight flow between concurrent callers', async () => {
    const c = client();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => c.getToken()));
    expect(new Set(tokens).size).toBe(1);
    expect(suite.g.calls.challenge).toBe(1);
    expect(suite.g.calls.token).toBe(1);
  });

  it('refreshes shortly before expiry (10% of a short lifetime), in the background', async () => {
    const h = await gateWith({ GATE_TOKEN_TTL_S: '100' }); // margin min(30, 10) = 10 s
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const c = client({}, h);
    const t1 = await c.getToken();
    vi.setSystemTime(t0 + 89_000);
    expect(await c.getToken()).toBe(t1);
    expect(h.calls.challenge).toBe(1);
    vi.setSystemTime(t0 + 91_000);
    // Still valid: handed out at once while the next one is fetched.
    expect(await c.getToken()).toBe(t1);
    await vi.waitFor(() => expect(h.calls.token).toBe(2));
    await vi.waitFor(async () => expect(await c.getToken()).not.toBe(t1));
    expect(h.calls.challenge).toBe(2);
  });

  it('fetchToken forces a new flow and returns the full response', async () => {
    const c = client();
    const t1 = await c.getToken();
    const res = await c.fetchToken();
    expect(res).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 300 });
    expect(res.access_token).not.toBe(t1);
    expect(await c.getToken()).toBe(res.access_token);
  });

  it('turns a problem+json refusal into GateClientError', async () => {
    // The agent's clock runs 10 minutes ahead of the gate's: its proof's iat is outside GATE_MAX_SKEW_S.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 600_000);
    suite.g.shiftMs = -600_000;
    const c = client();
    const err = await c.getToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'proof_invalid', status: 403, instance: expect.stringMatching(/^urn:agent-gate:refusal:\S+$/) });
    // A failed flow is not cached: the next call runs a new one.
    vi.useRealTimers();
    suite.g.shiftMs = 0;
    expect(await c.getToken()).toEqual(expect.any(String));
    expect(suite.g.calls.challenge).toBe(2);
  });

  it('reports an off-contract answer as unexpected_response', async () => {
    // Needs something that is not a gate at the gate's address (see startImpostor).
    const imp = await startImpostor(suite.fx, () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>' }));
    suite.closeAfter(imp);
    const err = await client({}, imp).getToken().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'GateClientError', code: 'unexpected_response', status: 200 });
  });

  it('waits out a short Retry-After on the challenge and retries once', async () => {
    // GATE_MAX_INFLIGHT=1 and one gated request held at the upstream: the next request is 503 overloaded, Retry-After: 1.
    const h = await gateWith({ GATE_MAX_INFLIGHT: '1' });
    const held = await holdTheOnlySlot(suite.fx, h);
    const before = h.calls.challenge;
    // The slot is freed as soon as the gate has refused the first challenge.
    h.onArrival = (kind) => {
      if (kind === 'challenge') setImmediate(held.release);
    };
    const c = client({}, h);
    expect(await c.getToken()).toEqual(expect.any(String));
    expect(h.calls.challenge - before).toBe(2);
    await held.done;
  });

  it('does not wait when Retry-After exceeds maxRetryAfterS', async () => {
    // One challenge per certificate a minute: the second gets 429 with Retry-After near 60.
    const h = await gateWith({ GATE_RATE_LIMITS: 'on', GATE_RATE_CHALLENGE_IDENTITY: '1/60' });
    await client({}, h).getToken();
    const err = await client({ maxRetryAfterS: 5 }, h).getToken().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'rate_limited', status: 429 });
    expect((err as GateClientError).retryAfterS).toBeGreaterThan(5);
    expect((err as GateClientError).retryAfterS).toBeLessThanOrEqual(60);
    expect(h.calls.challenge).toBe(2);
  });

  it('solves proof-of-work when the challenge asks for it', async () => {
    const h = await gateWith({ GATE_POW: 'on' });
    const c = client({}, h);
    const ch = vi.spyOn(c, 'challenge');
    expect(await c.getToken()).toEqual(expect.any(String));
    expect((await ch.mock.results[0]!.value).pow).toEqual({ alg: 'sha256', difficulty: 16 });
  });

  it('bounds the body read from a gate endpoint', async () => {
    const imp = await startImpostor(suite.fx, () => ({ status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(2 * 1024 * 1024 + 1, 0x20) }));
    suite.closeAfter(imp);
    await expect(client({}, imp).challenge()).rejects.toBeInstanceOf(ResponseTooLargeError);
  });

  it('refuses a ca without a certificate when constructed: Node would trust the system roots instead', () => {
    // Node's TLS skips what it cannot read in `ca`, and an empty one means the system roots.
    for (const ca of ['', Buffer.alloc(0), suite.fx.agents.p256.keyPem, 'not a PEM at all']) {
      expect(() => client({ ca })).toThrow('GateClient: ca holds no PEM certificate');
    }
    const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n';
    expect(() => client({ ca: `${suite.fx.ca.certPem}${broken}` })).toThrow('GateClient: ca holds a PEM block that is not a certificate');
  });

  it('refuses a cert chain whose certificates after the leaf cannot be loaded', () => {
    const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n';
    expect(() => client({ cert: `${suite.fx.agents.p256.certPem}${broken}` })).toThrow('GateClient: cert chain cannot be loaded for TLS');
  });

  it('refuses a gate certificate not issued by the configured CA', async () => {
    const other = await createCa({ commonName: 'some other CA' });
    const c = client({ ca: other.certPem });
    await expect(c.getToken()).rejects.toThrow();
    expect(suite.g.calls.challenge).toBe(0);
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
      // The gate accepted the client's token (not the spoofed one) and names it to the upstream.
      expect(res.json()).toEqual({ method: 'POST', path: `/api/thing?i=${i}`, token_id: jti(await c.getToken()), body: `b${i}`, xtest: 'yes' });
    }
    expect(suite.g.calls).toEqual({ challenge: 1, token: 1, gated: 5 });
    expect(suite.g.tls.connections).toBe(1);
  });

  it('resumes the TLS session when a new connection is needed, also after a garbage collection', async () => {
    // The fault proxy in front of the gate resets the connection after the first request.
    const h = await suite.gateWith({ proxy: true });
    const c = client({}, h);
    expect((await c.request('/bye')).status).toBe(200);
    h.proxy!.mode = 'reset';
    h.proxy!.mode = 'pass';
    await vi.waitFor(() => expect(h.proxy!.open).toBe(0));
    // undici's own session cache holds sessions weakly: the client keeps its newest one itself.
    await collectGarbage();
    expect((await c.request('/after')).status).toBe(200);
    expect(h.tls.connections).toBe(2);
    expect(h.tls.resumed).toBe(1);
  });

  it('refreshes the token and retries once on 401', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const c = client();
    const t1 = await c.getToken();
    expireTokensOnFirstGatedRequest(suite.g);
    const res = await c.request('/x');
    expect(res.status).toBe(200);
    const t2 = await c.getToken();
    expect(t2).not.toBe(t1);
    expect(res.json()).toMatchObject({ token_id: jti(t2) });
    expect(suite.g.calls).toEqual({ challenge: 2, token: 2, gated: 2 });
    expect(suite.g.up.seen).toHaveLength(1); // the first one was refused by the gate
  });

  it('retries a persistent 401 only once', async () => {
    // The upstream refuses every token (its own 401, not the gate's): one refresh, then the 401 is returned.
    suite.g.up.reply = () => ({ status: 401, headers: { 'www-authenticate': 'Bearer' }, body: 'no' });
    const res = await client().request('/x');
    expect(res.status).toBe(401);
    expect(suite.g.calls).toEqual({ challenge: 2, token: 2, gated: 2 });
  });

  it('concurrent 401s share one refresh', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const c = client();
    await c.getToken();
    expireTokensOnFirstGatedRequest(suite.g);
    const all = await Promise.all(Array.from({ length: 8 }, () => c.request('/x')));
    expect(all.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(suite.g.calls.token).toBe(2);
  });

  it('does not refresh on a 401 no token can cure', async () => {
    // The upstream is itself a gate (forwarded mode) that gets no signed identity headers:
    // its refusal is the gate's own 401 forwarded_signature_invalid, which no token cures.
    const inner = await suite.gateWith({
      env: { GATE_MODE: 'forwarded', GATE_TLS_CERT: '', GATE_TLS_KEY: '', GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32', GATE_FWD_HMAC_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` },
    });
    const h = await gateWith({ GATE_UPSTREAM_URL: inner.gate.url.replace('https:', 'http:') }); // plain HTTP in forwarded mode
    const res = await client({}, h).request('/x');
    expect(res.status).toBe(401);
    expect(res.json()).toMatchObject({ code: 'forwarded_signature_invalid', type: 'urn:agent-gate:error:forwarded_signature_invalid' });
    expect(h.calls).toEqual({ challenge: 1, token: 1, gated: 1 });
  });

  it('honours Retry-After on 429 and retries once', async () => {
    // One gated request per certificate a second: the second in the same window gets 429, Retry-After: 1.
    const h = await gateWith({ GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '1/1' });
    const c = client({}, h);
    await c.getToken();
    h.alignClock(1000);
    expect((await c.request('/warm')).status).toBe(200);
    const started = performance.now();
    const res = await c.request('/x');
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(res.status).toBe(200);
    expect(h.calls.gated).toBe(3); // /warm, /x refused, /x again
  });

  it('retries a 503 with Retry-After 0 maxRetries times (default 2), and returns the last 503', async () => {
    suite.g.up.reply = () => ({ status: 503, headers: { 'retry-after': '0' }, body: 'overloaded' });
    const res = await client().request('/x');
    expect(res.status).toBe(503);
    expect(suite.g.calls.gated).toBe(3);
  });

  it('does not wait for a Retry-After above maxRetryAfterS', async () => {
    // One gated request per certificate a minute (the gate's clock put at a window's start;
    // a generous GATE_MAX_SKEW_S keeps that shift harmless): Retry-After near 60.
    const h = await gateWith({ GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '1/60', GATE_MAX_SKEW_S: '120' });
    const c = client({}, h);
    await c.getToken();
    h.alignClock(60_000);
    expect((await c.request('/warm')).status).toBe(200);
    const res = await c.request('/x');
    expect(res.status).toBe(429);
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(10);
    expect(h.calls.gated).toBe(2);
  });

  it('does not follow redirects', async () => {
    suite.g.up.reply = (seen) => (seen.url === '/from' ? { status: 302, headers: { location: `${suite.g.url}/to` } } : undefined);
    const res = await client().request('/from');
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe(`${suite.g.url}/to`);
    expect(suite.g.up.seen.map((r) => r.url)).toEqual(['/from']);
  });

  it('refuses a relative path and a Host header', async () => {
    const c = client();
    await expect(c.request('x')).rejects.toBeInstanceOf(TypeError);
    await expect(c.request('/x', { headers: { Host: 'evil' } })).rejects.toBeInstanceOf(TypeError);
    expect(suite.g.calls.gated).toBe(0);
  });

  it('fails after close()', async () => {
    const c = client();
    await c.close();
    await expect(c.getToken()).rejects.toThrow(/closed/);
  });
});

describe('agent CLI', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'agc-cli-'));
    writeFileSync(join(dir, 'ca.crt'), suite.fx.ca.certPem);
    for (const [name, who] of [['agent', suite.fx.agents.p256], ['revoked', suite.fx.revoked]] as const) {
      writeFileSync(join(dir, `${name}.crt`), who.certPem);
      writeFileSync(join(dir, `${name}.key`), who.keyPem);
    }
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

  const tls = (who = 'agent') => ['--cert', join(dir, `${who}.crt`), '--key', join(dir, `${who}.key`), '--ca', join(dir, 'ca.crt')];

  it('an empty --ca file is an error, not the system roots', async () => {
    writeFileSync(join(dir, 'empty.crt'), '');
    const r = await run('token', '--cert', join(dir, 'agent.crt'), '--key', join(dir, 'agent.key'), '--ca', join(dir, 'empty.crt'), suite.g.url);
    expect(r.code).toBe(1);
    expect(r.err).toBe('error: GateClient: ca holds no PEM certificate\n');
    expect(r.out).toBe('');
  });

  it('token prints the token response', async () => {
    const r = await run('token', ...tls(), suite.g.url);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 300 });
  });

  it('call prints the upstream body and exits 0 on 2xx', async () => {
    const r = await run('call', ...tls(), '-X', 'PUT', '-H', 'X-Test: a', '-d', 'hello', `${suite.g.url}/some/path?q=1`);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ method: 'PUT', path: '/some/path?q=1', token_id: expect.any(String), body: 'hello', xtest: 'a' });
  });

  it('call prints a refusal line and exits 1', async () => {
    // The gate refuses the gated request itself (after a good token flow): one per certificate a minute, already used.
    const h = await gateWith({ GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '1/60', GATE_MAX_SKEW_S: '120' });
    h.alignClock(60_000);
    expect((await client({}, h).request('/warm')).status).toBe(200);
    const r = await run('call', ...tls(), `${h.url}/x`);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: rate_limited \(429\) instance=urn:agent-gate:refusal:\S+\n$/);
    expect(r.out).toBe('');
  });

  it('call exits 1 on a non-2xx upstream answer and prints its body', async () => {
    suite.g.up.reply = () => ({ status: 404, body: 'nope' });
    const r = await run('call', ...tls(), `${suite.g.url}/x`);
    expect(r.code).toBe(1);
    expect(r.out).toBe('nope');
  });

  it('token reports a refused flow on stderr', async () => {
    // The agent's certificate is on the gate's CRL (GATE_CRL_FILES).
    const r = await run('token', ...tls('revoked'), suite.g.url);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: client_cert_revoked \(403\) instance=urn:agent-gate:refusal:\S+\n$/);
  });
});

describe('redirects are refused', () => {
  it('request() returns a 302 untouched and never follows it', async () => {
    suite.g.up.reply = (seen) => (seen.url === '/from' ? { status: 302, headers: { location: '/target' }, body: 'moved' } : undefined);
    const c = client();
    const res = await c.request('/from');
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('/target');
    expect(res.body.toString()).toBe('moved');
    const resPost = await c.request('/from', { method: 'POST', body: 'x' });
    expect(resPost.status).toBe(302);
    expect(suite.g.up.seen.map((r) => r.url)).toEqual(['/from', '/from']); // /target never hit
  });

  it('a redirect from a gate endpoint is an unexpected_response error, not retried', async () => {
    // The gate never redirects its own endpoints: only something else at its address does (see startImpostor).
    let challenge = (): { status: number; headers?: Record<string, string>; body?: string } => ({ status: 302, headers: { location: '/target' } });
    const imp = await startImpostor(suite.fx, (path) => (path.endsWith('/v1/challenge') ? challenge() : path.endsWith('/v1/token') ? {
      status: 307,
      headers: { 'content-type': 'application/problem+json', 'retry-after': '0', location: `${P}/v1/token2` },
      body: JSON.stringify({ type: 'urn:agent-gate:error:overloaded', title: 'overloaded', status: 307, code: 'overloaded' }),
    } : { status: 200, body: 'upstream' }));
    suite.closeAfter(imp);
    const c = client({}, imp);
    const err = await c.getToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'unexpected_response', status: 302 });
    expect((err as Error).message).toMatch(/redirect.*not followed.*\/target/);
    expect(imp.hits.get(`${P}/v1/challenge`)).toBe(1);

    // Even with a problem+json body, a 3xx from the token endpoint is refused as such.
    challenge = () => {
      const now = Date.now();
      return { status: 201, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ challenge_id: 'c1', nonce: 'n1', aud: 'a', issued_at: now, expires_at: now + 3000, algs: ['ES256'], pow: null }) };
    };
    expect(await c.getToken().catch((e: unknown) => e)).toMatchObject({ code: 'unexpected_response', status: 307 });
    expect(imp.hits.get(`${P}/v1/token`)).toBe(1);
    expect([...imp.hits.keys()].sort()).toEqual([`${P}/v1/challenge`, `${P}/v1/token`]);
  });
});

describe('proactive refresh', () => {
  // Default margin min(30, 10% of 100) = 10 s; stale in the last 5 s.
  const TTL = { GATE_TOKEN_TTL_S: '100' };

  /** `p`, or a rejection after `ms` (a stalled caller fails fast instead of at the test timeout). */
  function within<T>(p: Promise<T>, ms: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stalled for ${ms} ms`)), ms);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  it('does not stall callers: the cached token is used while the next one is fetched', async () => {
    // The refresh's token request is held by a stalled Redis (the fault proxy holds its bytes);
    // gated requests with the cached token need no store round trip and go through meanwhile.
    const h = await suite.gateWith({ env: { ...TTL, GATE_REDIS_TIMEOUT_MS: '30000' }, redisProxy: true });
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const c = client({}, h);
    const t1 = await c.getToken();
    h.onArrival = (kind) => {
      if (kind === 'token') h.redis!.mode = 'drop';
    };
    try {
      vi.setSystemTime(t0 + 91_000);
      const started = performance.now();
      expect(await within(c.getToken(), 2000)).toBe(t1);
      await vi.waitFor(() => expect(h.calls.token).toBe(2)); // the refresh reached the gate and is held there
      const during = await within(Promise.all([c.request('/a'), c.request('/b'), c.getToken(), c.getToken()]), 2000);
      expect(during[0].json()).toMatchObject({ token_id: jti(t1) });
      expect(during[1].json()).toMatchObject({ token_id: jti(t1) });
      expect(during.slice(2)).toEqual([t1, t1]);
      expect(performance.now() - started).toBeLessThan(2000);
      expect(h.calls.challenge).toBe(2); // one background flow, shared
    } finally {
      h.onArrival = undefined;
      h.redis!.mode = 'pass';
    }
    await vi.waitFor(async () => expect(await c.getToken()).not.toBe(t1), { timeout: 10_000 });
    const t2 = await c.getToken();
    expect((await c.request('/c')).json()).toMatchObject({ token_id: jti(t2) });
    expect(h.calls.challenge).toBe(2);
  });

  it('in the last seconds of a token callers wait for the new one', async () => {
    const h = await gateWith(TTL);
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const c = client({}, h);
    const t1 = await c.getToken();
    vi.setSystemTime(t0 + 96_000);
    const t2 = await c.getToken();
    expect(t2).not.toBe(t1);
    expect(h.calls.token).toBe(2);
  });

  it('a failed background refresh is reported, keeps the valid token, and pauses before the next attempt', async () => {
    const h = await gateWith(TTL);
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const errors: unknown[] = [];
    const c = client({ onRefreshError: (e) => errors.push(e) }, h);
    const t1 = await c.getToken();
    // The agent's clock runs 91 s ahead of the gate's (beyond GATE_MAX_SKEW_S): its proofs are refused.
    vi.setSystemTime(t0 + 91_000);
    h.shiftMs = -91_000;
    expect(await c.getToken()).toBe(t1);
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: 'proof_invalid' });
    expect(await c.getToken()).toBe(t1);
    expect(h.calls.token).toBe(2); // within the pause: no new attempt
    vi.setSystemTime(t0 + 93_500);
    h.shiftMs = 0; // the clocks agree again
    expect(await c.getToken()).toBe(t1);
    await vi.waitFor(async () => expect(await c.getToken()).not.toBe(t1));
    expect(errors).toHaveLength(1);
  });
});

