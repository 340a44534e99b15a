/**
 * Retries (src/client/retry.ts and their use in GateClient): the delay arithmetic, and 429/503,
 * connection-error and 401 retries against the real gate: its own refusals produced by
 * configuration (rate limits, GATE_MAX_INFLIGHT, an unreachable Redis, its clock), the
 * upstream's answers passed through it, and connection drops by the TCP fault proxy.
 */
import { describe, expect, it, vi } from 'vitest';
import { decodeJwt } from 'jose';
import { BACKOFF_BASE_MS, GateClientError, maxJitterMs } from '../../src/client/index.js';
import { backoffDelayMs, isConnectionError, refusalDelayMs, retryAfterDelayMs } from '../../src/client/retry.js';
import type { UpstreamReply } from '../helpers/upstream.js';
import { caught, clientOf, clientSuite, denyViaAdmin, holdTheOnlySlot, startEmbeddedGate } from './harness.js';

/** The shared gate, behind the TCP fault proxy (memory store, limits off). */
const suite = clientSuite({ proxy: true });
const { client, gateWith } = suite;

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
  it('recovers from a 503 overloaded with Retry-After: 1, after 1 s plus at most the jitter', async () => {
    const h = await gateWith({ env: { GATE_MAX_INFLIGHT: '1' } });
    const c = client({}, h);
    await c.getToken(); // the measured window holds just the two exchanges
    const held = await holdTheOnlySlot(suite.fx, h);
    const before = h.calls.gated;
    // The slot is freed as soon as the gate has refused the first attempt.
    h.onArrival = (kind) => {
      if (kind === 'gated') setImmediate(held.release);
    };
    const started = performance.now();
    // A POST: the gate's own refusal (problem+json, contract code) was given before forwarding.
    const res = await c.request('/submit', { method: 'POST', body: 'payload' });
    const elapsed = performance.now() - started;
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ method: 'POST', body: 'payload' });
    expect(h.calls.gated - before).toBe(2);
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThan(1000 + maxJitterMs(1000) + 500);
    await held.done;
  });

  it('a 429 rate_limited from the gate is retried for a POST too', async () => {
    // One gated request per certificate a second: the second in the same window gets 429, Retry-After: 1.
    const h = await gateWith({ env: { GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '1/1' } });
    const c = client({}, h);
    await c.getToken();
    h.alignClock(1000);
    expect((await c.request('/warm')).status).toBe(200);
    const res = await c.request('/submit', { method: 'POST', body: 'b' });
    expect(res.status).toBe(200);
    expect(h.calls.gated).toBe(3); // /warm, /submit refused, /submit again
    expect(h.up.seen.map((s) => s.url)).toEqual(['/warm', '/submit']);
  });

  it.each<[string, UpstreamReply]>([
    ['a plain 503 with Retry-After (from a proxy in between)', { status: 503, headers: { 'content-type': 'text/html', 'retry-after': '0' }, body: '<h1>503</h1>' }],
    ['a plain 503 without Retry-After', { status: 503, body: 'busy' }],
    ['an upstream problem+json 503 that is not the gate\'s', {
      status: 503,
      headers: { 'content-type': 'application/problem+json', 'retry-after': '0' },
      body: JSON.stringify({ type: 'https://upstream.example/busy', title: 'busy', status: 503, code: 'overloaded' }),
    }],
    // The gate itself answers upstream failures 502/504, never 503 with a code given after
    // forwarding: this one is the upstream speaking the gate's format, which must not be trusted either.
    ['a gate problem whose code is not a pre-forwarding refusal', {
      status: 503,
      headers: { 'content-type': 'application/problem+json', 'retry-after': '0' },
      body: JSON.stringify({ type: 'urn:agent-gate:error:upstream_unavailable', title: 'x', status: 503, code: 'upstream_unavailable', instance: 'urn:agent-gate:refusal:x' }),
    }],
  ])('a POST answered with %s is not retried', async (_what, reply) => {
    suite.g.up.reply = () => reply;
    const res = await client().request('/submit', { method: 'POST', body: 'once' });
    expect(res.status).toBe(503);
    expect(suite.g.up.seen).toHaveLength(1);
  });

  it('a GET answered 503 without Retry-After is retried with backoff, maxRetries times', async () => {
    suite.g.up.reply = () => ({ status: 503, body: 'busy' });
    const c = client();
    await c.getToken();
    const started = performance.now();
    const res = await c.request('/busy');
    expect(res.status).toBe(503);
    expect(suite.g.up.seen).toHaveLength(3);
    expect(performance.now() - started).toBeLessThan(BACKOFF_BASE_MS * 3 + 500);
  });

  it('a GET that recovers after a bare 503 resolves 200', async () => {
    suite.g.up.reply = (_seen, n) => (n === 1 ? { status: 503, body: 'busy' } : undefined);
    expect((await client().request('/busy')).status).toBe(200);
    expect(suite.g.up.seen).toHaveLength(2);
  });

  it('maxRetries: 0 disables 429/503 retries', async () => {
    const h = await gateWith({ env: { GATE_MAX_INFLIGHT: '1' } });
    const c = client({ maxRetries: 0 }, h);
    await c.getToken();
    const held = await holdTheOnlySlot(suite.fx, h);
    const before = h.calls.gated;
    const res = await c.request('/x');
    expect(res.status).toBe(503);
    expect(res.json()).toMatchObject({ code: 'overloaded' });
    expect(h.calls.gated - before).toBe(1);
    expect(() => client({ maxRetries: 1.5 })).toThrow(TypeError);
    expect(() => client({ maxRetries: -1 })).toThrow(TypeError);
    held.release();
    await held.done;
  });

  it('the token flow retries a 503 without Retry-After with backoff (a new challenge each time)', async () => {
    // Every 503 of the gate carries Retry-After; a bare one comes from in front of it. Here:
    // the embedded gate on a host server whose own load shedding answers the first two challenges.
    let shed = 2;
    const host = await startEmbeddedGate(suite.fx, (url) => (url.endsWith('/v1/challenge') && shed-- > 0 ? { status: 503, body: 'busy' } : undefined));
    suite.closeAfter(host);
    expect(await client({}, host).getToken()).toEqual(expect.any(String));
    expect(host.calls.challenge).toBe(3);
  });

  it('the token flow gives up after maxRetries and throws the last refusal', async () => {
    // The gate's Redis becomes unreachable (the fault proxy resets every connection): 503 store_unavailable, Retry-After: 1.
    const h = await gateWith({ redisProxy: true });
    h.redis!.mode = 'reset';
    const err = await caught(client({ maxRetries: 1 }, h).getToken());
    expect(err).toMatchObject({ code: 'store_unavailable', status: 503, retryAfterS: 1 });
    expect(h.calls.challenge).toBe(2);
  });

  it('a connection dropped before the answer is retried once for a GET, never for a POST', async () => {
    // The fault proxy between client and gate resets the connection while the upstream has the request.
    const dropOn = new Set<number>();
    suite.g.up.reply = (_seen, n) => {
      if (dropOn.has(n) || dropOn.has(0)) {
        suite.g.proxy!.mode = 'reset';
        suite.g.proxy!.mode = 'pass';
      }
      return undefined;
    };
    const c = client();
    dropOn.add(1);
    expect((await c.request('/get')).status).toBe(200);
    expect(suite.g.up.seen).toHaveLength(2);

    dropOn.add(3);
    const err = await caught(c.request('/post', { method: 'POST', body: 'x' }));
    expect(isConnectionError(err)).toBe(true);
    expect((err as { code?: string }).code).toMatch(/^(UND_ERR_SOCKET|ECONNRESET)$/);
    expect(suite.g.up.seen).toHaveLength(3);

    dropOn.add(0);
    const err2 = await caught(c.request('/get'));
    expect((err2 as { code?: string }).code).toMatch(/^(UND_ERR_SOCKET|ECONNRESET)$/);
    expect(suite.g.up.seen).toHaveLength(5);
  });

  it('a 401 on a POST is retried with a new token only when it is the gate\'s token refusal', async () => {
    // The gate's clock passes the token's expiry (plus GATE_MAX_SKEW_S) as the first POST arrives: 401 token_expired.
    vi.useFakeTimers({ toFake: ['Date'] });
    const c = client();
    const t1 = await c.getToken();
    let jumped = false;
    suite.g.onArrival = (kind) => {
      if (kind === 'gated' && !jumped) {
        jumped = true;
        vi.setSystemTime(Date.now() + (300 + 30 + 1) * 1000);
      }
    };
    const ok = await c.request('/p', { method: 'POST', body: 'x' });
    expect(ok.status).toBe(200);
    const t2 = await c.getToken();
    expect(t2).not.toBe(t1);
    expect(ok.json()).toMatchObject({ token_id: decodeJwt(t2).jti });
    expect(suite.g.calls.gated).toBe(2);

    // A bare 401 may come from the upstream, which then has seen the POST.
    suite.g.up.reply = () => ({ status: 401, body: 'upstream says no' });
    expect((await c.request('/p', { method: 'POST', body: 'x' })).status).toBe(401);
    expect(suite.g.calls.gated).toBe(3);
    expect(suite.g.calls.token).toBe(2);
  });
});

describe('GateClientError.refusalOf', () => {
  it('turns a gate refusal returned by request() into the typed error, and nothing else', async () => {
    suite.g.up.reply = (seen) =>
      seen.url === '/upstream-404'
        ? { status: 404, headers: { 'content-type': 'application/problem+json' }, body: JSON.stringify({ type: 'about:blank', status: 404, code: 'nope' }) }
        : undefined;
    // An agent with a token is put on the deny list: its next request is refused by the gate.
    const denied = suite.closeAfter(clientOf(suite.fx, suite.g.url, {}, suite.fx.denied));
    await denied.getToken();
    await denyViaAdmin(suite.g.gate.adminUrl, suite.fx.deniedId);
    const res = await denied.request('/denied');
    expect(res.status).toBe(403);
    const err = GateClientError.refusalOf(res);
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ code: 'agent_denied', status: 403, instance: res.json<{ instance: string }>().instance });
    expect(err!.instance).toMatch(/^urn:agent-gate:refusal:\S+$/);
    const c = client();
    expect(GateClientError.refusalOf(await c.request('/upstream-404'))).toBeUndefined();
    expect(GateClientError.refusalOf(await c.request('/ok'))).toBeUndefined();
  });
});
