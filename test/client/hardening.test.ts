/**
 * SDK hardening: certificate pinning, redirect refusal, retries with jitter on 429/503 where
 * they are safe, connection-error retries, and proactive token refresh without stalls.
 * Real HTTPS servers on 127.0.0.1 with throwaway certificates (see fixtures.ts).
 */
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BACKOFF_BASE_MS,
  GateClient,
  GateClientError,
  maxJitterMs,
  spkiPin,
  type GateClientOptions,
} from '../../src/client/index.js';
import { spkiFromCertificateDer } from '../../src/client/pin.js';
import { backoffDelayMs, isConnectionError, refusalDelayMs, retryAfterDelayMs } from '../../src/client/retry.js';
import {
  makeCert,
  makeChainPki,
  makeDecoyChain,
  makeTestPki,
  PREFIX,
  problem,
  TestGate,
  type CertPair,
  type ChainPki,
  type Reply,
} from './fixtures.js';

let pki: { server: CertPair; agent: CertPair; other: CertPair };
let chain: ChainPki;
const gates: TestGate[] = [];
const clients: GateClient[] = [];

beforeAll(() => {
  pki = makeTestPki();
  chain = makeChainPki();
});

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(gates.splice(0).map((g) => g.stop()));
});

async function startGate(server: CertPair = pki.server): Promise<TestGate> {
  const g = await new TestGate({ server, agent: pki.agent }).start();
  gates.push(g);
  return g;
}

function client(g: TestGate, extra: Partial<GateClientOptions> = {}): GateClient {
  const c = new GateClient({ baseUrl: g.url, cert: pki.agent.cert, key: pki.agent.key, ca: pki.server.cert, ...extra });
  clients.push(c);
  return c;
}

function caught(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

/** `p`, or a rejection after `ms` (a stalled caller fails fast instead of at the test timeout). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stalled for ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The HPKP recipe with openssl, independent of the code under test. */
function opensslPin(certPem: string): string {
  const pub = execFileSync('openssl', ['x509', '-pubkey', '-noout'], { input: certPem });
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
  return `sha256/${createHash('sha256').update(der).digest('base64')}`;
}

describe('spkiPin', () => {
  it.each(['p256', 'p384', 'ed25519', 'rsa2048'] as const)('equals the openssl HPKP recipe for %s', (kind) => {
    const c = makeCert(kind, `pin-${kind}`);
    const pin = spkiPin(c.cert);
    expect(pin).toBe(opensslPin(c.cert));
    expect(pin).toMatch(/^sha256\/[A-Za-z0-9+/]{43}=$/);
    expect(spkiPin(Buffer.from(c.cert))).toBe(pin);
    const x = new X509Certificate(c.cert);
    expect(spkiPin(x)).toBe(pin);
    expect(spkiPin(x.raw)).toBe(pin);
    expect(spkiFromCertificateDer(x.raw)).toEqual(x.publicKey.export({ type: 'spki', format: 'der' }));
  });

  it("is not the hash of Node's peer-certificate `pubkey`, which for EC keys is the bare point", async () => {
    const g = await startGate();
    const peer = await new Promise<DetailedPeerCertificate>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), ca: pki.server.cert, cert: pki.agent.cert, key: pki.agent.key }, () => {
        resolve(s.getPeerCertificate(true));
        s.end();
      });
      s.on('error', reject);
    });
    expect(peer.pubkey?.length).toBe(65); // 0x04 || x || y, no SPKI wrapping
    expect(`sha256/${createHash('sha256').update(peer.pubkey!).digest('base64')}`).not.toBe(spkiPin(pki.server.cert));
    expect(spkiPin(peer.raw)).toBe(spkiPin(pki.server.cert));
  });

  it('the pins option is validated', async () => {
    const g = await startGate();
    const good = spkiPin(pki.server.cert);
    for (const pins of [[], ['sha256/abc'], [good.replace('sha256/', 'sha1/')], [good.slice(0, -2) + '=='], [`${good} `], [42]]) {
      expect(() => client(g, { pins: pins as string[] })).toThrow(TypeError);
    }
    expect(() => client(g, { pins: [good] })).not.toThrow();
  });
});

describe('certificate pinning', () => {
  it('refuses a gate certificate that does not match the pin: pin_mismatch, nothing sent, no retry', async () => {
    const g = await startGate();
    const c = client(g, { pins: [spkiPin(pki.other.cert)] });
    const err = await caught(c.getToken());
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ name: 'GateClientError', code: 'pin_mismatch', status: 0 });
    expect((err as Error).message).toContain(spkiPin(pki.server.cert)); // names the pin it saw
    expect(g.tcp).toBe(1);
    // A GET, which is retried after connection errors, is not retried after a pin failure.
    const err2 = await caught(c.request('/x'));
    expect(err2).toMatchObject({ code: 'pin_mismatch' });
    expect(g.tcp).toBe(2);
    expect(g.calls).toEqual({ challenge: 0, token: 0, upstream: 0 });
  });

  it('accepts a matching leaf pin, among others (backup pins), and still resumes TLS sessions', async () => {
    const g = await startGate();
    g.onUpstream = (r) => (r.path === '/bye' ? { status: 200, headers: { connection: 'close' }, body: 'bye' } : undefined);
    const c = client(g, { pins: [spkiPin(pki.other.cert), spkiPin(pki.server.cert)] });
    expect((await c.request('/bye')).status).toBe(200);
    expect((await c.request('/after')).status).toBe(200);
    expect(g.tls).toEqual({ connections: 2, resumed: 1 });
  });

  it.each([
    ['intermediate', () => spkiPin(chain.intermediate.cert)],
    ['root (trust anchor)', () => spkiPin(chain.root.cert)],
    ['leaf', () => spkiPin(chain.leaf.cert)],
  ])('accepts a pin of the %s of a verified chain', async (_what, pin) => {
    const g = await startGate({ cert: chain.chain, key: chain.leaf.key });
    const c = client(g, { ca: chain.root.cert, pins: [pin()] });
    expect((await c.request('/chained')).status).toBe(200);
  });

  it('a wrong CA is still refused even with a matching pin (the pin adds to verification)', async () => {
    const g = await startGate();
    const c = client(g, { ca: pki.other.cert, pins: [spkiPin(pki.server.cert)] });
    const err = await caught(c.getToken());
    expect(err).not.toBeInstanceOf(GateClientError);
    expect((err as { code?: string }).code).toMatch(/CERT|SIGNATURE|ISSUER/);
    expect(g.calls.challenge).toBe(0);
  });

  it('the host name is still checked with a matching pin', async () => {
    const g = await startGate();
    const c = client(g, { servername: 'not-the-gate.example', pins: [spkiPin(pki.server.cert)] });
    const err = await caught(c.getToken());
    expect((err as { code?: string }).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(g.calls.challenge).toBe(0);
  });

  it('refuses a decoy "issuer" that carries the pinned key without having signed the leaf', async () => {
    // The attacker holds a certificate from a CA the agent trusts (rogue.ca) and appends a
    // made-up certificate with the pinned intermediate's public key to its chain.
    const rogue = makeDecoyChain(chain.intermediate);
    const g = await startGate({ cert: rogue.chain, key: rogue.leaf.key });
    const ca = chain.root.cert + rogue.ca.cert;
    // Precondition: TLS verification passes and Node's displayed chain shows the pinned key
    // right above the leaf, so a check that trusted that chain would be fooled.
    const peer = await new Promise<DetailedPeerCertificate>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), ca, cert: pki.agent.cert, key: pki.agent.key }, () => {
        expect(s.authorized).toBe(true);
        resolve(s.getPeerCertificate(true));
        s.end();
      });
      s.on('error', reject);
    });
    expect(spkiPin(peer.issuerCertificate.raw)).toBe(spkiPin(chain.intermediate.cert));

    const c = client(g, { ca, pins: [spkiPin(chain.intermediate.cert)] });
    expect(await caught(c.getToken())).toMatchObject({ code: 'pin_mismatch', status: 0 });
    expect(g.calls.challenge).toBe(0);
    // Without pins, the same client setup connects (the refusal is the pin's).
    expect((await client(g, { ca }).request('/x')).status).toBe(200);
  });
});

describe('redirects are refused', () => {
  it('request() returns a 302 untouched and never follows it', async () => {
    const g = await startGate();
    let hits = 0;
    g.onUpstream = (r) => {
      if (r.path === '/target') hits++;
      return r.path === '/from' ? { status: 302, headers: { location: '/target' }, body: 'moved' } : undefined;
    };
    const c = client(g);
    const res = await c.request('/from');
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('/target');
    expect(res.body.toString()).toBe('moved');
    const resPost = await c.request('/from', { method: 'POST', body: 'x' });
    expect(resPost.status).toBe(302);
    expect(hits).toBe(0);
    expect(g.upstreamLog.map((r) => r.path)).toEqual(['/from', '/from']);
  });

  it('a redirect from a gate endpoint is an unexpected_response error, not retried', async () => {
    const g = await startGate();
    g.onChallenge = () => ({ status: 302, headers: { location: '/target' } });
    const c = client(g);
    const err = await caught(c.getToken());
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'unexpected_response', status: 302 });
    expect((err as Error).message).toMatch(/redirect.*not followed.*\/target/);
    expect(g.calls.challenge).toBe(1);

    // Even with a problem+json body, a 3xx from the token endpoint is refused as such.
    g.onChallenge = undefined;
    g.onToken = () => ({ ...problem(307, 'overloaded', { 'retry-after': '0' }), headers: { 'content-type': 'application/problem+json', location: `${PREFIX}/v1/token2` } });
    expect(await caught(c.getToken())).toMatchObject({ code: 'unexpected_response', status: 307 });
    expect(g.calls.token).toBe(1);
    expect(g.upstreamLog).toEqual([]);
  });
});

describe('GateClientError.refusalOf', () => {
  it('turns a gate refusal returned by request() into the typed error, and nothing else', async () => {
    const g = await startGate();
    g.onUpstream = (r) =>
      r.path === '/denied'
        ? problem(403, 'agent_denied')
        : r.path === '/upstream-404'
          ? { status: 404, headers: { 'content-type': 'application/problem+json' }, body: JSON.stringify({ type: 'about:blank', status: 404, code: 'nope' }) }
          : undefined;
    const c = client(g);
    const denied = await c.request('/denied');
    expect(denied.status).toBe(403);
    const err = GateClientError.refusalOf(denied);
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'agent_denied', status: 403, instance: 'urn:agent-gate:refusal:agentdenied403' });
    expect(GateClientError.refusalOf(await c.request('/upstream-404'))).toBeUndefined();
    expect(GateClientError.refusalOf(await c.request('/ok'))).toBeUndefined();
  });
});

describe('retry delays', () => {
  it('Retry-After plus a jitter of up to max(250 ms, 20%)', () => {
    expect(retryAfterDelayMs(1, () => 0)).toBe(1000);
    expect(retryAfterDelayMs(1, () => 0.999999)).toBeLessThan(1250);
    expect(retryAfterDelayMs(1, () => 0.999999)).toBeGreaterThan(1249);
    expect(maxJitterMs(10_000)).toBe(2000);
    expect(maxJitterMs(0)).toBe(250);
    const seen = Array.from({ length: 200 }, () => retryAfterDelayMs(2));
    expect(Math.min(...seen)).toBeGreaterThanOrEqual(2000);
    expect(Math.max(...seen)).toBeLessThan(2000 + maxJitterMs(2000));
    expect(new Set(seen).size).toBeGreaterThan(100); // actually random
  });

  it('503 without Retry-After: full-jitter exponential backoff; 429 without it or a long one: none', () => {
    expect(backoffDelayMs(0, () => 0.999999)).toBeLessThan(BACKOFF_BASE_MS);
    expect(backoffDelayMs(2, () => 0.5)).toBe(BACKOFF_BASE_MS * 2);
    expect(backoffDelayMs(20, () => 0.999999)).toBeLessThan(3200);
    expect(refusalDelayMs(503, undefined, 1, 10, () => 0.5)).toBe(BACKOFF_BASE_MS);
    expect(refusalDelayMs(429, undefined, 0, 10)).toBeUndefined();
    expect(refusalDelayMs(429, 11, 0, 10)).toBeUndefined();
    expect(refusalDelayMs(500, 1, 0, 10)).toBeUndefined();
    expect(refusalDelayMs(429, 10, 0, 10, () => 0)).toBe(10_000);
  });

  it('connection errors are recognised by code, TLS and pin failures are not', () => {
    expect(isConnectionError(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isConnectionError(Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET' }))).toBe(true);
    expect(isConnectionError(new GateClientError('pin_mismatch', 0))).toBe(false);
    expect(isConnectionError(Object.assign(new Error('x'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }))).toBe(false);
    expect(isConnectionError(undefined)).toBe(false);
  });
});

describe('retries', () => {
  let g: TestGate;
  beforeEach(async () => {
    g = await startGate();
  });

  it('recovers from a 503 overloaded with Retry-After: 1, after 1 s plus at most the jitter', async () => {
    g.onUpstream = (r) => (r.n === 1 ? problem(503, 'overloaded', { 'retry-after': '1' }) : undefined);
    const c = client(g);
    await c.getToken(); // the measured window holds just the two exchanges
    const started = performance.now();
    // A POST: the gate's own refusal (problem+json, contract code) was given before forwarding.
    const res = await c.request('/submit', { method: 'POST', body: 'payload' });
    const elapsed = performance.now() - started;
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ method: 'POST', body: 'payload' });
    expect(g.calls.upstream).toBe(2);
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThan(1000 + maxJitterMs(1000) + 500);
  });

  it('a 429 rate_limited from the gate is retried for a POST too', async () => {
    g.onUpstream = (r) => (r.n === 1 ? problem(429, 'rate_limited', { 'retry-after': '0' }) : undefined);
    const res = await client(g).request('/submit', { method: 'POST', body: 'b' });
    expect(res.status).toBe(200);
    expect(g.calls.upstream).toBe(2);
  });

  it.each<[string, Reply]>([
    ['a plain 503 with Retry-After (from a proxy in between)', { status: 503, headers: { 'content-type': 'text/html', 'retry-after': '0' }, body: '<h1>503</h1>' }],
    ['a plain 503 without Retry-After', { status: 503, body: 'busy' }],
    ['an upstream problem+json 503 that is not the gate\'s', {
      status: 503,
      headers: { 'content-type': 'application/problem+json', 'retry-after': '0' },
      body: JSON.stringify({ type: 'https://upstream.example/busy', title: 'busy', status: 503, code: 'overloaded' }),
    }],
    ['a gate problem whose code is not a pre-forwarding refusal', problem(503, 'upstream_unavailable', { 'retry-after': '0' })],
  ])('a POST answered with %s is not retried', async (_what, reply) => {
    g.onUpstream = () => reply;
    const res = await client(g).request('/submit', { method: 'POST', body: 'once' });
    expect(res.status).toBe(503);
    expect(g.calls.upstream).toBe(1);
  });

  it('a GET answered 503 without Retry-After is retried with backoff, maxRetries times', async () => {
    g.onUpstream = () => ({ status: 503, body: 'busy' });
    const c = client(g);
    await c.getToken();
    const started = performance.now();
    const res = await c.request('/busy');
    expect(res.status).toBe(503);
    expect(g.calls.upstream).toBe(3);
    expect(performance.now() - started).toBeLessThan(BACKOFF_BASE_MS * 3 + 500);
  });

  it('a GET that recovers after a bare 503 resolves 200', async () => {
    g.onUpstream = (r) => (r.n === 1 ? { status: 503, body: 'busy' } : undefined);
    expect((await client(g).request('/busy')).status).toBe(200);
    expect(g.calls.upstream).toBe(2);
  });

  it('maxRetries: 0 disables 429/503 retries', async () => {
    g.onUpstream = () => problem(503, 'overloaded', { 'retry-after': '0' });
    const res = await client(g, { maxRetries: 0 }).request('/x');
    expect(res.status).toBe(503);
    expect(g.calls.upstream).toBe(1);
    expect(() => client(g, { maxRetries: 1.5 })).toThrow(TypeError);
    expect(() => client(g, { maxRetries: -1 })).toThrow(TypeError);
  });

  it('the token flow retries a 503 without Retry-After with backoff (a new challenge each time)', async () => {
    g.onChallenge = (n) => (n <= 2 ? { status: 503, body: 'busy' } : undefined);
    expect(await client(g).getToken()).toBe('tok-1');
    expect(g.calls.challenge).toBe(3);
  });

  it('the token flow gives up after maxRetries and throws the last refusal', async () => {
    g.onChallenge = () => problem(503, 'store_unavailable', { 'retry-after': '0' });
    const err = await caught(client(g, { maxRetries: 1 }).getToken());
    expect(err).toMatchObject({ code: 'store_unavailable', status: 503, retryAfterS: 0 });
    expect(g.calls.challenge).toBe(2);
  });

  it('a connection dropped before the answer is retried once for a GET, never for a POST', async () => {
    g.onUpstream = (r) => (r.n === 1 ? { status: 0, destroy: true } : undefined);
    const c = client(g);
    expect((await c.request('/get')).status).toBe(200);
    expect(g.calls.upstream).toBe(2);

    g.onUpstream = (r) => (r.n === 3 ? { status: 0, destroy: true } : undefined);
    const err = await caught(c.request('/post', { method: 'POST', body: 'x' }));
    expect((err as { code?: string }).code).toBe('UND_ERR_SOCKET');
    expect(g.calls.upstream).toBe(3);

    g.onUpstream = () => ({ status: 0, destroy: true });
    expect((await caught(c.request('/get'))) as { code?: string }).toMatchObject({ code: 'UND_ERR_SOCKET' });
    expect(g.calls.upstream).toBe(5);
  });

  it('a 401 on a POST is retried with a new token only when it is the gate\'s token refusal', async () => {
    g.onUpstream = (r) => (r.n === 1 ? problem(401, 'token_expired') : undefined);
    const c = client(g);
    const ok = await c.request('/p', { method: 'POST', body: 'x' });
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ token: 'tok-2' });
    expect(g.calls.upstream).toBe(2);

    // A bare 401 may come from the upstream, which then has seen the POST.
    g.onUpstream = () => ({ status: 401, body: 'upstream says no' });
    expect((await c.request('/p', { method: 'POST', body: 'x' })).status).toBe(401);
    expect(g.calls.upstream).toBe(3);
    expect(g.calls.token).toBe(2);
  });
});

describe('proactive refresh', () => {
  let g: TestGate;
  beforeEach(async () => {
    g = await startGate();
    g.tokenTtlS = 100; // default margin min(30, 10) = 10 s; stale in the last 5 s
  });

  function hold(): { release: () => void; held: Promise<void> } {
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    return { release, held };
  }

  it('does not stall callers: the cached token is used while the next one is fetched', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const c = client(g);
    expect(await c.getToken()).toBe('tok-1');
    const gateHold = hold();
    g.onToken = async () => {
      await gateHold.held;
      return undefined; // then the normal answer
    };
    try {
      vi.setSystemTime(t0 + 91_000);
      const started = performance.now();
      expect(await within(c.getToken(), 2000)).toBe('tok-1');
      await vi.waitFor(() => expect(g.calls.token).toBe(2)); // the refresh reached the gate and is held there
      const during = await within(Promise.all([c.request('/a'), c.request('/b'), c.getToken(), c.getToken()]), 2000);
      expect(during[0].json()).toMatchObject({ token: 'tok-1' });
      expect(during[1].json()).toMatchObject({ token: 'tok-1' });
      expect(during.slice(2)).toEqual(['tok-1', 'tok-1']);
      expect(performance.now() - started).toBeLessThan(2000);
      expect(g.calls.challenge).toBe(2); // one background flow, shared
    } finally {
      gateHold.release();
    }
    await vi.waitFor(async () => expect(await c.getToken()).toBe('tok-2'));
    expect((await c.request('/c')).json()).toMatchObject({ token: 'tok-2' });
    expect(g.calls.challenge).toBe(2);
  });

  it('in the last seconds of a token callers wait for the new one', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const c = client(g);
    expect(await c.getToken()).toBe('tok-1');
    vi.setSystemTime(t0 + 96_000);
    expect(await c.getToken()).toBe('tok-2');
  });

  it('a failed background refresh is reported, keeps the valid token, and pauses before the next attempt', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.now();
    const errors: unknown[] = [];
    const c = client(g, { onRefreshError: (e) => errors.push(e) });
    expect(await c.getToken()).toBe('tok-1');
    g.onToken = () => problem(403, 'proof_invalid');
    vi.setSystemTime(t0 + 91_000);
    expect(await c.getToken()).toBe('tok-1');
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: 'proof_invalid' });
    expect(await c.getToken()).toBe('tok-1');
    expect(g.calls.token).toBe(2); // within the pause: no new attempt
    vi.setSystemTime(t0 + 93_500);
    g.onToken = undefined;
    expect(await c.getToken()).toBe('tok-1');
    await vi.waitFor(async () => expect(await c.getToken()).toBe('tok-2'));
    expect(errors).toHaveLength(1);
  });
});
