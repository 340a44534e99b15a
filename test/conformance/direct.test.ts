/**
 * The whole direct-mode flow over real TLS against a real redis-server: happy paths per key
 * type and every refusal of sections 2-5.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Agent } from 'undici';
import { GateClient, GateClientError, type Challenge } from '../../src/client/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, problemOf, rawRequest, tlsAgent } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';
let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let clockOffsetMs = 0;
const clients: GateClient[] = [];
const agents: Agent[] = [];

function client(who: KeyAndCert): GateClient {
  const c = new GateClient({ baseUrl: gw.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c;
}
function agent(who?: KeyAndCert): Agent {
  const a = tlsAgent(fx, who);
  agents.push(a);
  return a;
}
const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: up.url }), {
    now: () => Date.now() + clockOffsetMs,
  });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(agents.map((a) => a.close()));
  await gw?.close();
  await up?.close();
});

describe('happy path', () => {
  for (const kind of ['ed25519', 'p256', 'rsa'] as const) {
    it(`${kind} agent: challenge -> proof -> token -> upstream sees x-agent-id`, async () => {
      const who = fx.agents[kind];
      const c = client(who);
      const res = await c.request('/api/things?q=1', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
      expect(res.status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.method).toBe('POST');
      expect(seen.url).toBe('/api/things?q=1');
      expect(seen.body.toString()).toBe('hello');
      expect(seen.headers['x-agent-id']).toBe(`urn:agent:${kind === 'p256' ? 'p256' : kind === 'rsa' ? 'rsa' : 'ed'}`);
      expect(seen.headers['x-agent-thumbprint']).toBe(c.thumbprint);
      expect(seen.headers['x-agent-token-id']).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(seen.headers.authorization).toBeUndefined();
    });
  }

  it('challenge answer has the contract shape and no-store', async () => {
    const res = await call(agent(fx.agents.p256), `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(res.status).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    const ch = res.json();
    expect(ch.challenge_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(ch.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(ch.aud).toBe('agent-gate');
    expect((ch.expires_at as number) - (ch.issued_at as number)).toBe(3000);
    expect(ch.algs).toEqual(['EdDSA', 'ES256', 'ES384', 'PS256']);
    expect(ch.pow).toBeNull();
  });

  it('token has the contract claims and verifies against the JWKS', async () => {
    const c = client(fx.agents.ed25519);
    const t = await c.fetchToken();
    expect(t.token_type).toBe('Bearer');
    expect(t.expires_in).toBe(300);
    const [h, p] = t.access_token.split('.').slice(0, 2).map((s) => JSON.parse(Buffer.from(s, 'base64url').toString()) as Record<string, unknown>);
    const jwks = (await call(agent(), `${gw.url}${P}/jwks.json`)).json() as { keys: { kid: string }[] };
    expect(h).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    expect(jwks.keys.map((k) => k.kid)).toContain(h!.kid);
    expect(p).toMatchObject({ iss: 'agent-gate', aud: 'agent-gate', sub: 'urn:agent:ed', cnf: { 'x5t#S256': c.thumbprint } });
    expect((p!.exp as number) - (p!.iat as number)).toBe(300);
    expect(typeof p!.jti).toBe('string');
  });
});

describe('identity refusals', () => {
  it('no client certificate: 401 client_cert_required with WWW-Authenticate', async () => {
    const res = await call(agent(), `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(problemOf(res)).toMatchObject({ status: 401, code: 'client_cert_required', type: 'urn:agent-gate:error:client_cert_required', contentType: 'application/problem+json' });
    expect(res.headers['www-authenticate']).toBe('Bearer realm="agent-gate"');
    expect(res.json().instance).toMatch(/^urn:agent-gate:refusal:[A-Za-z0-9]{1,64}$/);
  });

  it('no client certificate on a gated path: 401 client_cert_required', async () => {
    const res = await call(agent(), `${gw.url}/api`, { headers: { authorization: 'Bearer x' } });
    expect(problemOf(res)).toMatchObject({ status: 401, code: 'client_cert_required' });
  });

  it('certificate from an unknown CA: 403 client_cert_invalid', async () => {
    const res = await call(agent(fx.agents.foreign), `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(problemOf(res)).toMatchObject({ status: 403, code: 'client_cert_invalid' });
  });

  it('expired certificate: 403 client_cert_invalid', async () => {
    const res = await call(agent(fx.agents.expired), `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(problemOf(res)).toMatchObject({ status: 403, code: 'client_cert_invalid' });
  });
});

describe('proof refusals', () => {
  async function freshChallenge(c: GateClient): Promise<Challenge> {
    return c.challenge();
  }
  async function submit(c: GateClient, body: Record<string, unknown>) {
    const res = await c.submitProof(body);
    return { status: res.status, code: (res.json() as { code?: string }).code };
  }

  it('a second use of the same proof: 409 challenge_replayed', async () => {
    const c = client(fx.agents.p256);
    const ch = await freshChallenge(c);
    const proof = await c.signProof(ch);
    expect((await c.submitProof({ challenge_id: ch.challenge_id, proof })).status).toBe(200);
    expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 409, code: 'challenge_replayed' });
  });

  it('a proof received after expires_at: 408 challenge_expired', async () => {
    const c = client(fx.agents.p256);
    const ch = await freshChallenge(c);
    const proof = await c.signProof(ch);
    clockOffsetMs = 3001; // the gate's clock now reads past expires_at
    try {
      expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 408, code: 'challenge_expired' });
    } finally {
      clockOffsetMs = 0;
    }
  });

  it('a proof from another certificate than the one that asked: 403 challenge_binding_mismatch', async () => {
    const asker = client(fx.agents.p256);
    const other = client(fx.agents.other);
    const ch = await freshChallenge(asker);
    const proof = await other.signProof(ch);
    expect(await submit(other, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 403, code: 'challenge_binding_mismatch' });
  });

  it('an unknown challenge: 404 challenge_unknown', async () => {
    const c = client(fx.agents.p256);
    const ch = await freshChallenge(c);
    const proof = await c.signProof(ch);
    expect(await submit(c, { challenge_id: 'A'.repeat(22), proof })).toEqual({ status: 404, code: 'challenge_unknown' });
  });

  const bad: [string, (c: GateClient, ch: Challenge) => Promise<string>][] = [
    ['wrong nonce', (c, ch) => c.signProof(ch, { payload: { nonce: 'x'.repeat(43) } })],
    ['wrong aud', (c, ch) => c.signProof(ch, { payload: { aud: 'someone-else' } })],
    ['wrong cid', (c, ch) => c.signProof(ch, { payload: { cid: 'B'.repeat(22) } })],
    ['wrong typ', (c, ch) => c.signProof(ch, { header: { typ: 'JWT' } })],
    ['stale iat', (c, ch) => c.signProof(ch, { payload: { iat: Math.floor(Date.now() / 1000) - 120 } })],
    ['future iat', (c, ch) => c.signProof(ch, { payload: { iat: Math.floor(Date.now() / 1000) + 120 } })],
    ['crit header', (c, ch) => c.signProof(ch, { header: { crit: ['exp'], exp: 1 } })],
    ['alg none', async (_c, ch) => `${b64url({ alg: 'none', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(Date.now() / 1000) })}.`],
    [
      'HS256 with the public certificate as secret',
      async (_c, ch) => {
        const { createHmac } = await import('node:crypto');
        const input = `${b64url({ alg: 'HS256', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(Date.now() / 1000) })}`;
        return `${input}.${createHmac('sha256', fx.agents.p256.certPem).update(input).digest('base64url')}`;
      },
    ],
    [
      'signature by another key',
      async (_c, ch) => {
        const other = new GateClient({ baseUrl: gw.url, cert: fx.agents.other.certPem, key: fx.agents.other.keyPem, ca: fx.ca.certPem });
        clients.push(other);
        return other.signProof(ch);
      },
    ],
    ['not a JWS', async () => 'not.a.jws'],
  ];
  for (const [name, make] of bad) {
    it(`${name}: 403 proof_invalid, and the challenge is spent`, async () => {
      const c = client(fx.agents.p256);
      const ch = await freshChallenge(c);
      const proof = await make(c, ch);
      expect(await submit(c, { challenge_id: ch.challenge_id, proof })).toEqual({ status: 403, code: 'proof_invalid' });
      const good = await c.signProof(ch);
      expect(await submit(c, { challenge_id: ch.challenge_id, proof: good })).toEqual({ status: 409, code: 'challenge_replayed' });
    });
  }

  it('an attestation with no issuers configured: 403 attestation_invalid', async () => {
    const c = client(fx.agents.p256);
    const ch = await freshChallenge(c);
    const proof = await c.signProof(ch);
    expect(await submit(c, { challenge_id: ch.challenge_id, proof, attestation: 'a.b.c' })).toEqual({ status: 403, code: 'attestation_invalid' });
  });
});

describe('request shape refusals', () => {
  const tokenUrl = () => `${gw.url}${P}/v1/token`;
  it('token body with another content type: 415', async () => {
    const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(problemOf(res)).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });
  it('token body without content type: 415', async () => {
    const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', body: '{}' });
    expect(problemOf(res)).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });
  it('media type compared case-insensitively with parameters', async () => {
    const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' }, body: '{"challenge_id":"short","proof":"x"}' });
    expect(problemOf(res)).toMatchObject({ status: 400, code: 'request_malformed' });
  });
  it('token body over 16 KiB: 413, before JSON is looked at', async () => {
    const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(16 * 1024 + 1) });
    expect(problemOf(res)).toMatchObject({ status: 413, code: 'body_too_large' });
  });
  it('content type is checked before size: 415 for a large text body', async () => {
    const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(20_000) });
    expect(problemOf(res)).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });
  it('malformed JSON and bad challenge_id: 400 request_malformed', async () => {
    for (const body of ['{', '[]', '"x"', '{"challenge_id":"abc","proof":"a.b.c"}', '{"challenge_id":"' + 'A'.repeat(22) + '"}', '{"challenge_id":"' + 'A'.repeat(21) + '=","proof":"a.b.c"}']) {
      const res = await call(agent(fx.agents.p256), tokenUrl(), { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expect(problemOf(res), body).toMatchObject({ status: 400, code: 'request_malformed' });
    }
  });
  it('identity is checked before the body: no cert and a bad body is 401', async () => {
    const res = await call(agent(), tokenUrl(), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    expect(problemOf(res)).toMatchObject({ status: 401, code: 'client_cert_required' });
  });
  it('challenge accepts an empty body of any type, a JSON object, and refuses other non-empty bodies', async () => {
    const a = agent(fx.agents.p256);
    const url = `${gw.url}${P}/v1/challenge`;
    expect((await call(a, url, { method: 'POST', headers: { 'content-type': 'text/plain' } })).status).toBe(201);
    expect((await call(a, url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"x":1}' })).status).toBe(201);
    expect(problemOf(await call(a, url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }))).toMatchObject({ status: 415 });
    expect(problemOf(await call(a, url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[1]' }))).toMatchObject({ status: 400 });
  });
  it('unknown path under the prefix: 404 not_found; wrong method: 405 with Allow', async () => {
    const a = agent(fx.agents.p256);
    expect(problemOf(await call(a, `${gw.url}${P}/v2/nothing`))).toMatchObject({ status: 404, code: 'not_found' });
    expect(problemOf(await call(a, `${gw.url}${P}`))).toMatchObject({ status: 404, code: 'not_found' });
    const r = await call(a, `${gw.url}${P}/v1/challenge`);
    expect(problemOf(r)).toMatchObject({ status: 405, code: 'method_not_allowed' });
    expect(r.headers.allow).toBe('POST');
    const r2 = await call(a, `${gw.url}${P}/jwks.json`, { method: 'POST' });
    expect(r2.status).toBe(405);
    expect(r2.headers.allow).toBe('GET, HEAD');
  });
  it('percent-encoded gate paths are the gate, never the upstream', async () => {
    const before = up.seen.length;
    const r = await call(agent(fx.agents.p256), `${gw.url}/%2Eagent-gate/v1/%63hallenge`, { method: 'POST' });
    expect(r.status).toBe(201);
    expect(up.seen.length).toBe(before);
  });
  it('dot segments, encoded slash and NUL: 400 request_malformed', async () => {
    const a = agent(fx.agents.p256);
    for (const path of ['/a/../.agent-gate/healthz', '/a/%2e%2e/b', '/a/./b', '/a%2fb', '/a%2Fb', '/a%00b', '/.agent-gate/%2e/healthz', '/.agent-gate/..']) {
      // Raw bytes on the wire: URL parsers in clients would normalise these paths away.
      const res = await rawRequest(gw.url, fx, fx.agents.p256, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expect(res.status, path).toBe(400);
      expect(JSON.parse(res.body).code, path).toBe('request_malformed');
    }
    void a;
  });
  it('healthz, readyz and jwks need no certificate, answer HEAD, and are no-store', async () => {
    const a = agent();
    for (const p of ['healthz', 'readyz', 'jwks.json']) {
      const r = await call(a, `${gw.url}${P}/${p}`);
      expect(r.status, p).toBe(200);
      expect(r.headers['cache-control']).toBe('no-store');
      expect((await call(a, `${gw.url}${P}/${p}`, { method: 'HEAD' })).status).toBe(200);
    }
  });
});

describe('gated requests', () => {
  it('no Authorization: 401 token_missing; other scheme: token_missing; empty bearer: token_invalid', async () => {
    const a = agent(fx.agents.p256);
    const r1 = await call(a, `${gw.url}/api`);
    expect(problemOf(r1)).toMatchObject({ status: 401, code: 'token_missing' });
    expect(r1.headers['www-authenticate']).toBe('Bearer realm="agent-gate"');
    expect(problemOf(await call(a, `${gw.url}/api`, { headers: { authorization: 'Basic dXNlcjpwdw==' } }))).toMatchObject({ status: 401, code: 'token_missing' });
    const r3 = await call(a, `${gw.url}/api`, { headers: { authorization: 'Bearer ' } });
    expect(problemOf(r3)).toMatchObject({ status: 401, code: 'token_invalid' });
    expect(r3.headers['www-authenticate']).toBe('Bearer realm="agent-gate", error="invalid_token"');
    expect(problemOf(await call(a, `${gw.url}/api`, { headers: { authorization: 'Bearer abc.def.ghi' } }))).toMatchObject({ status: 401, code: 'token_invalid' });
  });

  it('scheme is case-insensitive', async () => {
    const c = client(fx.agents.p256);
    const token = await c.getToken();
    const r = await call(agent(fx.agents.p256), `${gw.url}/api`, { headers: { authorization: `bEaReR ${token}` } });
    expect(r.status).toBe(200);
  });

  it('token presented with another certificate: 403 token_binding_mismatch', async () => {
    const token = await client(fx.agents.p256).getToken();
    const r = await call(agent(fx.agents.other), `${gw.url}/api`, { headers: { authorization: `Bearer ${token}` } });
    expect(problemOf(r)).toMatchObject({ status: 403, code: 'token_binding_mismatch' });
  });

  it('an expired token: 401 token_expired', async () => {
    const token = await client(fx.agents.p256).getToken();
    clockOffsetMs = 400_000;
    try {
      const r = await call(agent(fx.agents.p256), `${gw.url}/api`, { headers: { authorization: `Bearer ${token}` } });
      expect(problemOf(r)).toMatchObject({ status: 401, code: 'token_expired' });
    } finally {
      clockOffsetMs = 0;
    }
  });

  it('a token signed by a foreign key: 401 token_invalid', async () => {
    const token = await client(fx.agents.p256).getToken();
    const [h, p] = token.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}`;
    const r = await call(agent(fx.agents.p256), `${gw.url}/api`, { headers: { authorization: `Bearer ${forged}` } });
    expect(problemOf(r)).toMatchObject({ status: 401, code: 'token_invalid' });
  });

  it('spoofed inbound identity and gate headers never reach the upstream; hop-by-hop headers are dropped', async () => {
    const c = client(fx.agents.p256);
    const token = await c.getToken();
    // Raw bytes, so that Connection and odd header names arrive exactly as written.
    const head = [
      'GET /spoof HTTP/1.1',
      'Host: localhost',
      `Authorization: Bearer ${token}`,
      'x-agent-id: urn:agent:admin',
      'X-Agent-Thumbprint: forged',
      'x_agent_token_id: forged',
      'x-gate-fwd-cert: forged',
      'X_GATE_anything: forged',
      'Connection: close, x-secret-hop',
      'x-secret-hop: drop me',
      'x-keep: kept',
    ];
    const r = await rawRequest(gw.url, fx, fx.agents.p256, head.join('\r\n') + '\r\n\r\n');
    expect(r.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.url).toBe('/spoof');
    expect(seen.headers['x-agent-id']).toBe('urn:agent:p256');
    expect(seen.headers['x-agent-thumbprint']).toBe(c.thumbprint);
    expect(seen.headers['x-agent-token-id']).not.toBe('forged');
    expect(seen.headers['x-gate-fwd-cert']).toBeUndefined();
    expect(seen.headers['x_gate_anything']).toBeUndefined();
    expect(seen.headers['x_agent_token_id']).toBeUndefined();
    expect(seen.headers['x-secret-hop']).toBeUndefined();
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers['x-keep']).toBe('kept');
  });

  it('a proxied body over GATE_PROXY_MAX_BODY_BYTES: 413; upstream never sees it', async () => {
    const small = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_PROXY_MAX_BODY_BYTES: '1000' }));
    try {
      const c = new GateClient({ baseUrl: small.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
      clients.push(c);
      const before = up.seen.length;
      const r = await c.request('/big', { method: 'POST', body: Buffer.alloc(1001) });
      expect(r.status).toBe(413);
      expect(up.seen.length).toBe(before);
      expect((await c.request('/ok', { method: 'POST', body: Buffer.alloc(1000) })).status).toBe(200);
    } finally {
      await small.close();
    }
  });
});

describe('upstream failures', () => {
  it('upstream down: 502 upstream_unavailable; slow: 504 upstream_timeout', async () => {
    const dead = await startUpstream();
    const deadUrl = dead.url;
    await dead.close();
    const g1 = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: deadUrl }));
    const slow = await startUpstream();
    slow.delayMs = 2000;
    const g2 = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: slow.url, GATE_UPSTREAM_TIMEOUT_MS: '300' }));
    try {
      const c1 = new GateClient({ baseUrl: g1.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
      const c2 = new GateClient({ baseUrl: g2.url, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
      clients.push(c1, c2);
      const r1 = await c1.request('/x');
      expect(r1.status).toBe(502);
      expect((r1.json() as { code: string }).code).toBe('upstream_unavailable');
      const r2 = await c2.request('/x');
      expect(r2.status).toBe(504);
      expect((r2.json() as { code: string }).code).toBe('upstream_timeout');
    } finally {
      await Promise.all([g1.close(), g2.close()]);
      await slow.close();
    }
  });
});

describe('client SDK', () => {
  it('caches the token across calls and surfaces refusals as GateClientError with the code', async () => {
    const c = client(fx.agents.p256);
    const t1 = await c.getToken();
    expect(await c.getToken()).toBe(t1);
    const foreign = new GateClient({ baseUrl: gw.url, cert: fx.agents.foreign.certPem, key: fx.agents.foreign.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    clients.push(foreign);
    const err = await foreign.getToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GateClientError);
    expect((err as GateClientError).code).toBe('client_cert_invalid');
    expect((err as GateClientError).status).toBe(403);
  });
});
