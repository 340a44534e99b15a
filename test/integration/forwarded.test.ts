/**
 * Forwarded mode (section 6) straight against the gate, signing headers the way nginx does:
 * the flow works, and every forgery, replay and certificate problem gets its contract answer.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { request } from 'undici';
import { canonicalString, signCanonical, thumbprintOf } from '../../src/identity/index.js';
import { X509Certificate } from 'node:crypto';
import { createCa, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { forwardedTestEnv, startGate, type RunningGate } from '../helpers/gate.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const K1 = randomBytes(32);
const K2 = randomBytes(32);
let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let clock = 0;
const closers: (() => Promise<void>)[] = [];

interface Fwd {
  method?: string;
  path: string;
  who?: KeyAndCert;
  verify?: string;
  kid?: string;
  secret?: Buffer;
  ts?: number;
  id?: string;
  host?: string;
  signedHost?: string;
  signedMethod?: string;
  signedPath?: string;
  headers?: Record<string, string>;
  body?: string;
  omit?: string;
  duplicate?: string;
  cert?: string;
  /** The signed client address (default 127.0.0.1). */
  addr?: string;
}

/** Builds the eight headers nginx would send (with the deviations a test asks for). */
function fwdHeaders(o: Fwd): Record<string, string> {
  const kid = o.kid ?? 'k1';
  const ts = String(o.ts ?? Math.floor(Date.now() / 1000));
  const id = o.id ?? randomBytes(16).toString('hex');
  const host = o.signedHost ?? 'gate.test';
  const certHeader = o.cert ?? (o.who ? encodeURIComponent(o.who.certPem) : '-');
  const verify = o.verify ?? (o.who ? 'SUCCESS' : 'NONE');
  const thumbprint = o.who ? thumbprintOf(new X509Certificate(o.who.certPem).raw) : '-';
  const canonical = canonicalString({ kid, ts, id, method: o.signedMethod ?? o.method ?? 'GET', requestUri: o.signedPath ?? o.path, host, addr: o.addr ?? '127.0.0.1', verify, thumbprint });
  const h: Record<string, string> = {
    host: o.host ?? 'gate.test',
    'x-gate-fwd-kid': kid,
    'x-gate-fwd-ts': ts,
    'x-gate-fwd-id': id,
    'x-gate-fwd-host': host,
    'x-gate-fwd-addr': o.addr ?? '127.0.0.1',
    'x-gate-fwd-verify': verify,
    'x-gate-fwd-cert': certHeader,
    'x-gate-fwd-sig': signCanonical(o.secret ?? K1, canonical),
    ...o.headers,
  };
  if (o.omit) delete h[o.omit];
  return h;
}

async function send(g: RunningGate, o: Fwd): Promise<{ status: number; code?: string; json: Record<string, unknown> }> {
  const headers = fwdHeaders(o);
  const list: string[] = [];
  for (const [k, v] of Object.entries(headers)) list.push(k, v);
  if (o.duplicate) list.push(o.duplicate, headers[o.duplicate] ?? 'x');
  const r = await request(`${g.url}${o.path}`, { method: (o.method ?? 'GET') as 'GET', headers: list, body: o.body });
  const text = await r.body.text();
  const json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  return { status: r.statusCode, code: json.code as string | undefined, json };
}

async function gate(extra: Record<string, string> = {}): Promise<RunningGate> {
  const g = await startGate(
    forwardedTestEnv(fx, up.url, inject('redisUrl'), {
      GATE_FWD_HMAC_KEYS: `k1:${K1.toString('base64')},k2:${K2.toString('base64')}`,
      GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32,::1',
      ...extra,
    }),
    { now: () => Date.now() + clock },
  );
  g.url = g.url.replace('https://', 'http://');
  closers.push(() => g.close());
  return g;
}

/** The full flow through signed headers: challenge, proof (signed with the agent key), token, call. */
async function flow(g: RunningGate, who: KeyAndCert, kid = 'k1', secret = K1): Promise<number> {
  const ch = await send(g, { method: 'POST', path: '/.agent-gate/v1/challenge', who, kid, secret });
  if (ch.status !== 201) return ch.status;
  const signer = new GateClient({ baseUrl: 'https://unused.invalid', cert: who.certPem, key: who.keyPem });
  closers.push(() => signer.close());
  const proof = await signer.signProof(ch.json as never);
  const tok = await send(g, { method: 'POST', path: '/.agent-gate/v1/token', who, kid, secret, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ challenge_id: ch.json.challenge_id, proof }) });
  if (tok.status !== 200) return tok.status;
  const res = await send(g, { path: '/api/fwd', who, kid, secret, headers: { authorization: `Bearer ${tok.json.access_token as string}` } });
  return res.status;
}

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  gw = await gate();
});
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await up?.close();
});

describe('forwarded mode', () => {
  it('the whole flow works with headers signed by either kid (rotation)', async () => {
    expect(await flow(gw, fx.agents.p256, 'k1', K1)).toBe(200);
    expect(await flow(gw, fx.agents.ed25519, 'k2', K2)).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.headers['x-agent-id']).toBe('urn:agent:ed');
    expect(Object.keys(seen.headers).filter((h) => h.startsWith('x-gate-fwd'))).toEqual([]);
  });

  it('health, readiness and JWKS need no forwarded headers', async () => {
    for (const p of ['healthz', 'readyz', 'jwks.json']) expect((await request(`${gw.url}/.agent-gate/${p}`)).statusCode).toBe(200);
  });

  it('no headers at all: 401 forwarded_signature_invalid', async () => {
    const r = await request(`${gw.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    const body = (await r.body.json()) as { code: string };
    expect([r.statusCode, body.code]).toEqual([401, 'forwarded_signature_invalid']);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="agent-gate"');
  });

  it('a missing or repeated header: 401', async () => {
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, omit: 'x-gate-fwd-addr' })).toMatchObject({ status: 401, code: 'forwarded_signature_invalid' });
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, duplicate: 'x-gate-fwd-kid' })).toMatchObject({ status: 401, code: 'forwarded_signature_invalid' });
  });

  const forged: [string, Fwd][] = [
    ['wrong secret', { method: 'POST', path: '/.agent-gate/v1/challenge', secret: randomBytes(32) }],
    ['unknown kid', { method: 'POST', path: '/.agent-gate/v1/challenge', kid: 'k9' }],
    ['another method than signed', { method: 'POST', signedMethod: 'GET', path: '/.agent-gate/v1/challenge' }],
    ['another path than signed', { method: 'POST', path: '/.agent-gate/v1/challenge', signedPath: '/.agent-gate/v1/challenge?x=1' }],
    ['another host than signed', { method: 'POST', path: '/.agent-gate/v1/challenge', host: 'other.test' }],
    ['tampered certificate header', { method: 'POST', path: '/.agent-gate/v1/challenge', cert: encodeURIComponent(fx?.agents.other.certPem ?? '') }],
    ['garbage certificate header', { method: 'POST', path: '/.agent-gate/v1/challenge', cert: 'not-a-cert' }],
    ['ts not digits', { method: 'POST', path: '/.agent-gate/v1/challenge', headers: { 'x-gate-fwd-ts': '12a' } }],
    ['id not 32 hex', { method: 'POST', path: '/.agent-gate/v1/challenge', id: 'abc' }],
    ['stale ts beyond the skew window', { method: 'POST', path: '/.agent-gate/v1/challenge', ts: Math.floor(Date.now() / 1000) - 31 }],
  ];
  for (const [name, o] of forged) {
    it(`${name}: 403 forwarded_signature_invalid`, async () => {
      const opts = name === 'tampered certificate header' ? { ...o, cert: encodeURIComponent(fx.agents.other.certPem) } : o;
      expect(await send(gw, { who: fx.agents.p256, ...opts })).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    });
  }

  it('the same signed headers twice: the second is a replay (403), counted', async () => {
    const h = { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, id: randomBytes(16).toString('hex'), ts: Math.floor(Date.now() / 1000) };
    expect((await send(gw, h)).status).toBe(201);
    expect(await send(gw, h)).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(text).toMatch(/^agent_gate_replays_detected_total\{kind="forwarded"\} [1-9]/m);
    expect(text).toMatch(/^agent_gate_forwarded_verifications_total\{result="replayed"\} [1-9]/m);
  });

  it('valid headers replayed after the skew window: 403 (stale), even with a fresh id', async () => {
    const ts = Math.floor(Date.now() / 1000);
    clock = 31_000;
    try {
      expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, ts })).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    } finally {
      clock = 0;
    }
  });

  it('verify NONE: 401 client_cert_required; FAILED: 403 client_cert_invalid (signature good)', async () => {
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge' })).toMatchObject({ status: 401, code: 'client_cert_required' });
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, verify: 'FAILED:certificate has expired' })).toMatchObject({ status: 403, code: 'client_cert_invalid' });
  });

  it('a certificate the gate does not trust, though nginx signed it: 403 client_cert_invalid', async () => {
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.foreign })).toMatchObject({ status: 403, code: 'client_cert_invalid' });
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.expired })).toMatchObject({ status: 403, code: 'client_cert_invalid' });
  });

  it('a peer outside GATE_FWD_TRUSTED_PROXIES: 403, whatever it signs', async () => {
    const g = await gate({ GATE_FWD_TRUSTED_PROXIES: '10.0.0.0/8' });
    expect(await send(g, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256 })).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
    expect(text).toMatch(/^agent_gate_forwarded_verifications_total\{result="untrusted_proxy"\} 1$/m);
  });

  it('GATE_FWD_REPLAY_CHECK=v1 skips the replay check outside P/v1/*', async () => {
    const g = await gate({ GATE_FWD_REPLAY_CHECK: 'v1' });
    const h = { path: '/api/x', who: fx.agents.p256, id: randomBytes(16).toString('hex'), ts: Math.floor(Date.now() / 1000) };
    // No token: both answers come from the token step, i.e. the replayed headers passed.
    expect(await send(g, h)).toMatchObject({ status: 401, code: 'token_missing' });
    expect(await send(g, h)).toMatchObject({ status: 401, code: 'token_missing' });
  });

  it('unsigned headers with many distinct large certificates: nothing parsed, nothing cached (class 8)', async () => {
    const verifier = gw.gate.services.identity.forwarded!;
    // Each certificate is made larger with SANs, as an attacker filling memory would.
    const sans = Array.from({ length: 30 }, (_, i) => `n${i}-${'x'.repeat(40)}.test`);
    const certs = await Promise.all(Array.from({ length: 40 }, (_, i) => issueAgentCert(fx.ca, `flood-${i}`, { alg: 'ec-p256', sanDns: sans })));
    const before = { cached: verifier.cachedCertificates, headers: verifier.cachedCertificateHeaders, parsed: verifier.validator.validations };
    for (const c of certs) {
      // Good certificate header, signature made with a key the gate does not hold.
      expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: c, secret: randomBytes(32) })).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    }
    expect({ cached: verifier.cachedCertificates, headers: verifier.cachedCertificateHeaders, parsed: verifier.validator.validations }).toEqual(before);
    // The same certificates signed properly are parsed and cached: the counters do count.
    expect((await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: certs[0]! })).status).toBe(201);
    expect(verifier.validator.validations).toBe(before.parsed + 1);
    expect(verifier.cachedCertificates).toBe(before.cached + 1);
    expect(verifier.cachedCertificateHeaders).toBe(before.headers + 1);
    // A decoded header in memory spares only the decoding: the signature is checked as before.
    expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: certs[0]!, secret: randomBytes(32) })).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
  });

  it('signed headers of certificates the gate refuses leave no decoded header behind (class 8)', async () => {
    const verifier = gw.gate.services.identity.forwarded!;
    const before = verifier.cachedCertificateHeaders;
    const hour = 3600_000;
    const foreignCa = await createCa({ alg: 'ec-p256', commonName: 'foreign CA' });
    // Fresh certificates, so that no earlier test has put them there.
    const refused = [
      await issueAgentCert(foreignCa, 'foreign-signed', { alg: 'ec-p256' }),
      await issueAgentCert(fx.ca, 'expired-signed', { alg: 'ec-p256', notBefore: new Date(Date.now() - 48 * hour), notAfter: new Date(Date.now() - hour) }),
    ];
    for (const who of refused) {
      expect(await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who })).toMatchObject({ status: 403, code: 'client_cert_invalid' });
    }
    expect(verifier.cachedCertificateHeaders).toBe(before);
  });

  it('decoded headers: a hit gives the same identity, and 1,001 texts of one certificate keep 1,000 (class 8)', async () => {
    const verifier = gw.gate.services.identity.forwarded!;
    const who = fx.agents.p256;
    expect((await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who })).status).toBe(201);
    expect((await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who })).status).toBe(201);
    // Distinct header texts of one certificate: each %XX escape in upper or lower case.
    const escaped = encodeURIComponent(who.certPem);
    expect([...escaped.matchAll(/%[0-9A-F]{2}/g)].length).toBeGreaterThan(10);
    for (let n = 0; n <= 1000; n++) {
      let i = 0;
      const text = escaped.replace(/%([0-9A-F]{2})/g, (m, x: string) => ((n >> i++ % 11) & 1 ? '%' + x.toLowerCase() : m));
      expect((await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who, cert: text })).status).toBe(201);
    }
    expect(verifier.cachedCertificateHeaders).toBe(1000);
  });

  it('trailing data after the PEM block, or two blocks, is refused even when signed (class 8)', async () => {
    const pem = fx.agents.p256.certPem;
    for (const tail of ['garbage', '\n', pem, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n']) {
      // The signed thumbprint is the first block's, so only the header's shape can refuse it.
      const r = await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256, cert: encodeURIComponent(pem + tail) });
      expect(r, JSON.stringify(tail.slice(0, 12))).toMatchObject({ status: 403, code: 'forwarded_signature_invalid' });
    }
    expect((await send(gw, { method: 'POST', path: '/.agent-gate/v1/challenge', who: fx.agents.p256 })).status).toBe(201);
  });

  it('the challenge limit per client address counts an IPv6 client per /64 (one host holds all of it), an IPv4 client per address', async () => {
    const g = await gate({ GATE_RATE_LIMITS: 'on', GATE_RATE_CHALLENGE_IP: '1/60', GATE_RATE_CHALLENGE_IDENTITY: '100/60' });
    const who = await issueAgentCert(fx.ca, 'fwd-v6', { alg: 'ec-p256' });
    const tag = randomBytes(2).toString('hex'); // this file's gates share Redis: a /64 of its own
    const ch = (addr: string) => send(g, { method: 'POST', path: '/.agent-gate/v1/challenge', who, addr });
    expect((await ch(`2001:db8:${tag}:1::a`)).status).toBe(201);
    const second = await ch(`2001:db8:${tag}:1:ffff:ffff:ffff:ffff`);
    expect([second.status, second.code]).toEqual([429, 'rate_limited']);
    expect((await ch(`2001:db8:${tag}:2::a`)).status).toBe(201);
    const v4 = `198.51.${parseInt(tag.slice(0, 2), 16)}.${parseInt(tag.slice(2), 16)}`;
    expect((await ch(v4)).status).toBe(201);
    expect((await ch(`::ffff:${v4}`)).status).toBe(429);
  });

  it('direct-mode agents cannot talk to a forwarded gate: no headers means no identity, never the peer', async () => {
    const r = await request(`${gw.url}/api/x`, { headers: { 'x-agent-id': 'urn:agent:admin' } });
    expect(r.statusCode).toBe(401);
    await r.body.dump();
  });
});
