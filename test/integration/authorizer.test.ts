/**
 * Authorizer mode (PROTOCOL.md section 13) with the real nginx + njs: nginx proxies gated
 * requests to the upstream itself and asks the real gate (GATE_MODE=authorizer) for a decision
 * on each, caching allows. A capture relay between nginx and the gate counts and records every
 * decision request, so "served from the cache" and "decided again" are observed, not assumed.
 * Every refusal is compared with what a direct-mode gate answers for the same request.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Agent } from 'undici';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { findK6, runK6, type SmokeRun } from '../../load/smoke.js';
import { GateClient } from '../../src/client/index.js';
import type { AuthorizerNginxOptions } from '../../src/nginx/index.js';
import { createCrl, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { loadSigningKeys } from '../../src/tokens/keys.js';
import { generateSigningJwk } from '../../src/tokens/keys.js';
import { TokenService } from '../../src/tokens/index.js';
import { thumbprintOf } from '../../src/identity/certificate.js';
import { AUTHZ_VERSION, canonicalString, certFromHeader, signCanonical } from '../../src/identity/forwarded-canonical.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { send, tlsAgent, type Sent as Res } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import {
  capturedValues,
  ensureNginx,
  launchNginx,
  rawExchange,
  rawUntilClose,
  removeTempDirs,
  renderTestConfig,
  sendRaw,
  serializeRequest,
  startCaptureRelay,
  startRecordingGate,
  tempDir,
  writeKeyFile,
  type CaptureRelay,
  type CapturedRequest,
  type RunningNginx,
} from '../nginx/harness.js';

const P = '/.agent-gate';
const ADMIN_SECRET = 'admin-secret-for-authorizer-tests-0123';
const CACHE_S = 2;

let fx: Fixtures;
let up: RecordingUpstream;
let signingJwk: string;
let crlFile: string;
let key: ReturnType<typeof writeKeyFile>;
let adminTokenFile: string;
/** The authorizer gate, and the direct gate every refusal is compared with. */
let authz: RunningGate;
let direct: RunningGate;
/** nginx → relay → authorizer gate (decision cache on), and the same with the cache off. */
let relay: CaptureRelay;
let nginx: RunningNginx;
let relayOff: CaptureRelay;
let nginxOff: RunningNginx;
let tokens: TokenService;
let revokeMe: KeyAndCert;
let denyMe: KeyAndCert;
let crlNumber = 1;

const closers: (() => Promise<void>)[] = [];

function agent(who?: KeyAndCert): Agent {
  const a = tlsAgent(fx, who);
  closers.push(() => a.close());
  return a;
}


const tokenCache = new Map<KeyAndCert, string>();
/** A token for `who`, from the gate through nginx (P/v1/* in forwarded signing). */
async function tokenOf(who: KeyAndCert): Promise<string> {
  if (!tokenCache.has(who)) {
    const c = new GateClient({ baseUrl: nginx.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    closers.push(() => c.close());
    tokenCache.set(who, await c.getToken());
  }
  return tokenCache.get(who)!;
}

async function admin(g: RunningGate, path: string, init: { method?: string; body?: unknown } = {}): Promise<Response> {
  return fetch(`${g.adminUrl}${path}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${ADMIN_SECRET}`, ...(init.body ? { 'content-type': 'application/json' } : {}) },
    body: init.body ? JSON.stringify(init.body) : undefined,
  });
}

/** A counter of the gate's /metrics (0 when absent). */
async function metric(g: RunningGate, series: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return Number(line?.split(' ')[1] ?? 0);
}

async function writeCrlFile(revoked: KeyAndCert[]): Promise<void> {
  const { pem } = await createCrl(
    fx.ca,
    revoked.map((c) => ({ serial: new X509Certificate(c.certPem).serialNumber, revokedAt: new Date(Date.now() - 60_000) })),
    { crlNumber: crlNumber++ },
  );
  writeFileSync(crlFile, pem);
}

async function renderAuthz(dir: string, port: number, gateUrl: string, authorizer: Partial<AuthorizerNginxOptions> = {}): Promise<void> {
  const out = await renderTestConfig(fx, port, {
    mode: 'authorizer',
    gateUrl,
    hmacKeyFile: key.file,
    kid: 'k1',
    dir,
    authorizer: { upstreamUrl: up.url, timeoutS: 1, ...authorizer },
  });
  expect(out.warnings).toEqual([]);
}

async function launch(gateUrl: string, authorizer: Partial<AuthorizerNginxOptions> = {}): Promise<RunningNginx> {
  const n = await launchNginx('authz', (dir, port) => renderAuthz(dir, port, gateUrl, authorizer));
  closers.push(() => n.stop());
  return n;
}

/** The gate-side env shared by both gates: same signing key, CRL, admin token, redis. */
function sharedEnv(extra: Record<string, string>): Record<string, string> {
  return testEnv(fx, {
    GATE_STORE: 'redis',
    GATE_REDIS_URL: inject('redisUrl'),
    GATE_SIGNING_JWK: signingJwk,
    GATE_ADMIN_TOKEN_FILE: adminTokenFile,
    GATE_REVOCATION: 'crl',
    GATE_REVOCATION_FAIL: 'closed',
    GATE_CRL_FILES: crlFile,
    // A CRL update reaches a gate within a second (its own per-certificate cache).
    GATE_REVOCATION_MAX_STALE_S: '1',
    ...extra,
  });
}

async function authorizerGate(extra: Record<string, string> = {}): Promise<RunningGate> {
  const g = await startGate(
    sharedEnv({
      GATE_MODE: 'authorizer',
      GATE_TLS_CERT: '',
      GATE_TLS_KEY: '',
      GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32',
      GATE_FWD_HMAC_KEYS: `k1:${key.b64}`,
      GATE_AUTHZ_CACHE_S: String(CACHE_S),
      ...extra,
    }),
  );
  g.url = g.url.replace('https://', 'http://');
  closers.push(() => g.close());
  return g;
}

const portOf = (url: string) => Number(new URL(url).port);

beforeAll(async () => {
  ensureNginx();
  fx = await makeFixtures();
  up = await startUpstream();
  signingJwk = JSON.stringify(await generateSigningJwk());
  crlFile = join(fx.dir, 'authz.crl');
  [revokeMe, denyMe] = await Promise.all([issueAgentCert(fx.ca, 'revoke-me', { alg: 'ec-p256' }), issueAgentCert(fx.ca, 'deny-me', { alg: 'ec-p256' })]);
  await writeCrlFile([]);
  adminTokenFile = join(fx.dir, 'admin-authz.token');
  writeFileSync(adminTokenFile, ADMIN_SECRET + '\n', { mode: 0o600 });
  key = writeKeyFile(tempDir('keys'));
  authz = await authorizerGate();
  direct = await startGate(sharedEnv({ GATE_UPSTREAM_URL: up.url }));
  closers.push(() => direct.close());
  relay = await startCaptureRelay(portOf(authz.url));
  relayOff = await startCaptureRelay(portOf(authz.url));
  closers.push(() => relay.close(), () => relayOff.close());
  nginx = await launch(relay.url);
  nginxOff = await launch(relayOff.url, { cacheS: 0 });
  tokens = new TokenService({ keys: await loadSigningKeys({ jwk: signingJwk, allowEphemeral: false }), issuer: 'agent-gate', audience: 'agent-gate', ttlS: 300, skewS: 30, now: () => Date.now() - 3600_000 });
}, 60_000);

afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await up?.close();
  removeTempDirs();
});

/** Decision requests nginx sent to the gate so far (cache on / off). */
const decisions = (r: CaptureRelay = relay) => r.captured.filter((c) => c.target === `${P}/v1/authorize`);

describe('allowed requests', () => {
  it('reach the upstream unchanged, with the identity the gate decided and none a client sent', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const a = agent(who);
    const before = decisions().length;
    up.seen.length = 0;
    const r = await send(a, `${nginx.url}/api/items/7?view=full&x=%41`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        'x-app': 'kept',
        // (Client-sent x-agent-* / x-gate-* names are refused: 'client headers the gate would strip'.)
        'X-Forwarded-Host': 'evil.example',
        'X-Forwarded-For': '203.0.113.9',
        'X-Real-IP': '203.0.113.9',
        forwarded: 'for=203.0.113.9',
        'x-ssl-client-cert': 'forged',
        'proxy-authorization': 'Basic Zm9yZ2Vk',
      },
      body: '{"n":1}',
    });
    expect(r.status).toBe(200);
    expect(up.seen).toHaveLength(1);
    const seen = up.seen[0]!;
    expect([seen.method, seen.url, seen.body.toString()]).toEqual(['POST', '/api/items/7?view=full&x=%41', '{"n":1}']);
    expect(seen.headers['x-agent-id']).toBe('urn:agent:p256');
    expect(seen.headers['x-agent-thumbprint']).toBe(thumbprintOf(new X509Certificate(who.certPem).raw));
    expect(seen.headers['x-agent-token-id']).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(seen.headers['x-app']).toBe('kept');
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    for (const h of ['authorization', 'x-gate-fwd-sig', 'x-agent-gate-status', 'x-forwarded-host', 'x-real-ip', 'forwarded', 'x-ssl-client-cert', 'proxy-authorization']) {
      expect(seen.headers[h], h).toBeUndefined();
    }
    // The decision request: GET P/v1/authorize, no body, nothing of the client's but
    // Authorization, signed over the original method and URI.
    const d = decisions().slice(before);
    expect(d).toHaveLength(1);
    const dr = d[0]!;
    expect(dr.method).toBe('GET');
    expect(dr.body.length).toBe(0);
    expect(capturedValues(dr, 'x-gate-fwd-method')).toEqual(['POST']);
    expect(capturedValues(dr, 'x-gate-fwd-uri')).toEqual(['/api/items/7?view=full&x=%41']);
    expect(capturedValues(dr, 'authorization')).toEqual([`Bearer ${token}`]);
    const names = dr.headers.map(([n]) => n.toLowerCase()).sort();
    expect(names).toEqual(['authorization', 'host', 'x-gate-fwd-addr', 'x-gate-fwd-cert', 'x-gate-fwd-host', 'x-gate-fwd-id', 'x-gate-fwd-kid', 'x-gate-fwd-method', 'x-gate-fwd-sig', 'x-gate-fwd-ts', 'x-gate-fwd-uri', 'x-gate-fwd-verify']);
  });

  it('are served from the decision cache within GATE_AUTHZ_CACHE_S, and decided again after it', async () => {
    const who = fx.agents.ed25519;
    const token = await tokenOf(who);
    const a = agent(who);
    const go = () => send(a, `${nginx.url}/cached`, { headers: { authorization: `Bearer ${token}` } });
    const before = decisions().length;
    for (let i = 0; i < 5; i++) expect((await go()).status).toBe(200);
    expect(decisions().length - before).toBe(1);
    await new Promise((r) => setTimeout(r, (CACHE_S + 1) * 1000 + 200));
    expect((await go()).status).toBe(200);
    expect(decisions().length - before).toBe(2);
    await waitFor(() => nginx.accessLog().filter((l) => l.request_uri === '/cached').length >= 6, 2000, 'the access log');
    // In the order the requests ended: each nginx worker buffers its own log lines (flush=1s),
    // so with two workers the file's order is not the requests' order.
    const log = nginx
      .accessLog()
      .filter((l) => l.request_uri === '/cached')
      .sort((x, y) => Number(x.msec) - Number(y.msec))
      .slice(-6);
    // The five within the TTL: one decision (counted above), four served from the cache.
    expect(log.slice(0, 5).map((l) => l.authz_cache).sort()).toEqual(['HIT', 'HIT', 'HIT', 'HIT', 'MISS']);
    expect(log[5]?.authz_cache).toMatch(/^(MISS|EXPIRED)$/);
  });
});

/** What a client can compare of a refusal: everything but the refusal id's value. */
function shape(r: { status: number; headers: Record<string, string | string[] | undefined>; text: string }) {
  const body = JSON.parse(r.text) as Record<string, unknown>;
  const h = (n: string) => r.headers[n];
  expect(String(body.instance)).toMatch(/^urn:agent-gate:refusal:[a-z0-9]{26}$/);
  return {
    status: r.status,
    contentType: h('content-type'),
    cacheControl: h('cache-control'),
    body: { type: body.type, title: body.title, status: body.status, code: body.code },
    wwwAuthenticate: h('www-authenticate'),
    retryAfter: h('retry-after') !== undefined,
    rateLimitPolicy: h('ratelimit-policy'),
    rateLimit: h('ratelimit') !== undefined,
  };
}

interface Case {
  name: string;
  who?: KeyAndCert;
  path?: string;
  auth?: () => Promise<string | undefined>;
}

describe('refusals reach the client as in direct mode', () => {
  const cases: Case[] = [
    { name: 'token_missing (no Authorization)', who: fx_('p256') },
    { name: 'token_missing (Basic)', who: fx_('p256'), auth: async () => 'Basic dXNlcjpwdw==' },
    { name: 'token_invalid', who: fx_('p256'), auth: async () => 'Bearer not.a.token' },
    { name: 'token_expired', who: fx_('p256'), auth: async () => `Bearer ${tokens.issueSync('urn:agent:p256', thumbprintOf(new X509Certificate(fx.agents.p256.certPem).raw)).token}` },
    { name: 'token_binding_mismatch', who: fx_('other'), auth: async () => `Bearer ${await tokenOf(fx.agents.p256)}` },
    { name: 'client_cert_required', auth: async () => `Bearer ${await tokenOf(fx.agents.p256)}` },
    { name: 'client_cert_invalid (untrusted CA)', who: fx_('foreign'), auth: async () => `Bearer ${await tokenOf(fx.agents.p256)}` },
    { name: 'client_cert_invalid (expired)', who: fx_('expired'), auth: async () => `Bearer ${await tokenOf(fx.agents.p256)}` },
    { name: 'not_found (the decision endpoint from outside)', who: fx_('p256'), path: `${P}/v1/authorize`, auth: async () => `Bearer ${await tokenOf(fx.agents.p256)}` },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const who = c.who && resolveAgent(c.who);
      const auth = await c.auth?.();
      const headers: Record<string, string> = auth ? { authorization: auth } : {};
      const a = agent(who);
      const path = c.path ?? '/api/refused';
      const viaDirect = await send(a, `${direct.url}${path}`, { headers });
      for (const n of [nginx, nginxOff]) {
        const before = up.seen.length;
        const viaNginx = await send(a, `${n.url}${path}`, { headers });
        expect(shape(viaNginx)).toEqual(shape(viaDirect));
        expect(up.seen.length).toBe(before);
      }
    });
  }

  // The contract's path rules, judged by nginx on the raw target before anything is asked.
  const paths = ['/a/../b', '/a/./b', '/a/%2e%2E;x/b', '/a/..;/b', '/a/.%3bx/b', '/a%2fb', '/a%5Cb', '/a%00b', '//evil/x', '/%ff', '/a%zz', '/a/b#frag', '/a\\b'];
  for (const p of paths) {
    it(`request_malformed for ${JSON.stringify(p)}`, async () => {
      const who = fx.agents.p256;
      const token = await tokenOf(who);
      const raw = `GET ${p} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`;
      const tls = { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem };
      const viaDirect = await rawExchange(portOf(direct.url), tls, raw);
      const before = [up.seen.length, decisions().length];
      const viaNginx = await rawExchange(nginx.port, tls, raw);
      expect(shape(viaNginx)).toEqual(shape(viaDirect));
      expect(viaNginx.status).toBe(400);
      expect([up.seen.length, decisions().length]).toEqual(before);
    });
  }
  it('passes the ; parameters and encodings the contract allows', async () => {
    const who = fx.agents.p256;
    const a = agent(who);
    const token = await tokenOf(who);
    for (const p of ['/a;x/b', '/a/;../b', '/a/%41b', '/caf%C3%A9', '/a/...;/b', '/x?q=../..&r=%2f']) {
      const r = await send(a, `${nginx.url}${p}`, { headers: { authorization: `Bearer ${token}` } });
      expect([p, r.status]).toEqual([p, 200]);
      expect(up.seen.at(-1)!.url).toBe(p);
    }
  });
  // An independent oracle for nginx's path rules: the gate's own path policy (direct mode),
  // on targets made of the pieces the rules tell apart. Without Authorization, a target the
  // rules pass is the gate's 401 token_missing both ways; one they refuse is 400 both ways.
  it('judges random targets as direct mode does (property: same status and code)', async () => {
    const who = fx.agents.p256;
    const tls = { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem };
    // Every branch of the UTF-8 rule, each side of its bounds (lone continuation bytes, overlong
    // forms, surrogates, past U+10FFFF), and the separators the other rules look for.
    const utf8 = [
      '%c3%a9', '%C3%A9', '%c3', '%80', '%bf', '%c0%80', '%c1%bf', '%c2%80', '%df%bf', '%d0%b0', '%e0%a0%80', '%e0%9f%bf', '%e0%80%80', '%e2%82%ac',
      '%ef%bf%bf', '%ed%9f%bf', '%ed%a0%80', '%ee%80%80', '%f0%90%80%80', '%f0%8f%bf%bf', '%f1%80%80%80', '%f3%bf%bf%bf', '%f4%8f%bf%bf', '%f4%90%80%80',
      '%f5%80%80%80', '%f8%80%80%80%80', '%ff', '%c3%c3', '%e2%82',
    ];
    const piece = fc.constantFrom(
      'a', 'Z', '-', '~', '/', '.', '..', ';', ';x', '?', '=', '&', '#', '%41', '%7e', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '%00', '%3b', '%3B', '%25', '%zz', '%4', '%',
      '\\', ...utf8,
    );
    const verdict = async (port: number, target: string) => {
      const r = await rawExchange(port, tls, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      return `${r.status} ${(JSON.parse(r.text) as { code?: string }).code}`;
    };
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 10 }), async (pieces) => {
        const target = `/${pieces.join('')}`;
        const viaDirect = await verdict(portOf(direct.url), target);
        expect(['400 request_malformed', '401 token_missing']).toContain(viaDirect);
        expect([target, await verdict(nginx.port, target)]).toEqual([target, viaDirect]);
      }),
      // Each UTF-8 piece alone and after a dot, every run; then random mixes.
      { numRuns: 250, examples: [...utf8.map((u) => [[u]]), ...utf8.map((u) => [['.', u, '/']]), [['/', 'a']], [['..', '%3B']], [['a', '#']]] },
    );
  }, 60_000);
  // pcre_jit is on: the UTF-8 rule's repetition is possessive, so a long target stays within
  // PCRE's JIT stack (without it, pcre2_match fails with -46 after 1,364 repeats, a 1.4 KB
  // plain path, and the rule refuses a good path).
  it('judges long targets (14 KB of encoded UTF-8, 4 KB of plain ASCII) like short ones, without a regex failure', async () => {
    const who = fx.agents.p256;
    const a = agent(who);
    const token = await tokenOf(who);
    for (const long of ['/' + 'caf%C3%A9/'.repeat(1400), '/' + 'abcdefgh/'.repeat(450)]) {
      const ok = await send(a, `${nginx.url}${long}`, { headers: { authorization: `Bearer ${token}` } });
      expect([long.length, ok.status]).toEqual([long.length, 200]);
      expect(up.seen.at(-1)!.url).toBe(long);
      for (const bad of [`${long}..;x/y`, `${long}%zz`, `${long}a%2fb`]) {
        const r = await send(a, `${nginx.url}${bad}`, { headers: { authorization: `Bearer ${token}` } });
        expect([bad.slice(-8), r.status]).toEqual([bad.slice(-8), 400]);
      }
    }
    expect(nginx.errorLog()).not.toMatch(/pcre2?_(match|exec)\(\) failed/);
  });
});

function fx_(name: keyof Fixtures['agents']): KeyAndCert {
  // Resolved lazily: the fixtures exist only once beforeAll ran.
  return { name } as unknown as KeyAndCert;
}
function resolveAgent(who: KeyAndCert): KeyAndCert {
  const name = (who as unknown as { name?: keyof Fixtures['agents'] }).name;
  return name && !('certPem' in who) ? fx.agents[name] : who;
}

/** A decision request signed here as nginx would sign it, sent straight to the authorizer gate. */
async function decideStraight(who: KeyAndCert, token: string): Promise<{ status: number; carried: string | undefined }> {
  const cert = encodeURIComponent(who.certPem);
  const f = { kid: 'k1', ts: String(Math.floor(Date.now() / 1000)), id: randomBytes(16).toString('hex'), method: 'GET', requestUri: '/straight', host: 'localhost', addr: '127.0.0.1', verify: 'SUCCESS', thumbprint: certFromHeader(cert)!.thumbprint };
  const sig = signCanonical(key.secret, canonicalString(f, AUTHZ_VERSION));
  const headers: [string, string][] = [
    ['Host', 'localhost'], ['Authorization', `Bearer ${token}`], ['x-gate-fwd-kid', f.kid], ['x-gate-fwd-ts', f.ts], ['x-gate-fwd-id', f.id], ['x-gate-fwd-host', f.host],
    ['x-gate-fwd-addr', f.addr], ['x-gate-fwd-verify', f.verify], ['x-gate-fwd-cert', cert], ['x-gate-fwd-sig', sig], ['x-gate-fwd-method', f.method], ['x-gate-fwd-uri', f.requestUri],
  ];
  const r = await sendRaw(portOf(authz.url), serializeRequest({ method: 'GET', target: `${P}/v1/authorize`, headers, body: Buffer.alloc(0) }));
  return { status: r.status, carried: r.headers['x-agent-gate-status'] };
}

/**
 * Polls the gate's own decision (a signed request straight to it) and the answer through nginx
 * side by side until both refuse; returns when each first refused, in ms from the start.
 */
async function race(who: KeyAndCert, token: string, viaNginx: () => Promise<Res>): Promise<{ gateMs: number; nginxMs: number; last: Res }> {
  const t0 = Date.now();
  let gateMs = -1;
  let nginxMs = -1;
  let last: Res | undefined;
  await waitFor(
    async () => {
      if (gateMs < 0 && (await decideStraight(who, token)).status === 403) gateMs = Date.now() - t0;
      if (nginxMs < 0 && (last = await viaNginx()).status === 403) nginxMs = Date.now() - t0;
      return gateMs >= 0 && nginxMs >= 0;
    },
    10_000,
    'the gate and nginx to refuse',
    50,
  );
  return { gateMs, nginxMs, last: last! };
}

/**
 * Section 5's header rules that name no fixed header. The gate strips them in direct mode;
 * nginx cannot remove a name it is not given, so in authorizer mode such a request is refused
 * with 400 request_malformed before any decision (section 13). Either way the upstream never
 * sees the header.
 */
describe('client headers the gate would strip', () => {
  const tls = () => ({ ca: fx.ca.certPem, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem });
  const raw = (token: string, extra: string) => `GET /strip HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n${extra}Connection: close\r\n\r\n`;
  /** The status of a raw request (the upstream's 200 is chunked, which rawExchange does not read). */
  const rawStatus = async (port: number, text: string): Promise<number> => {
    const { connect } = await import('node:tls');
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, ...tls(), servername: 'localhost' }, () => s.write(text));
      let buf = '';
      s.setTimeout(10_000, () => s.destroy(new Error('raw request timed out')));
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        if (buf.includes('\r\n\r\n')) {
          s.destroy();
          resolve(Number(buf.split(' ')[1]));
        }
      });
      s.on('error', reject);
    });
  };
  // Direct mode's own 400 request_malformed (a dot segment), the shape nginx's refusal must have.
  const refused = (): Promise<ReturnType<typeof shape>> => rawExchange(portOf(direct.url), tls(), 'GET /a/../b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n').then(shape);

  const reserved = ['X-Agent-Id', 'x-agent-invented', 'X-AGENT-ROLE', 'x-Agent-Gate-Status', 'X-Gate-Anything', 'x-gate-fwd-sig', 'x-GATE-fwd-Uri', 'x-agent-thumbprint'];
  for (const name of reserved) {
    it(`refuses ${name} (400 request_malformed, as direct mode's shape), the upstream never sees it and the gate is not asked`, async () => {
      const token = await tokenOf(fx.agents.p256);
      expect(await rawStatus(portOf(direct.url), raw(token, `${name}: forged\r\n`))).toBe(200);
      expect(up.seen.at(-1)!.headers[name.toLowerCase()]).not.toBe('forged');
      const before = [up.seen.length, decisions().length];
      const viaNginx = await rawExchange(nginx.port, tls(), raw(token, `${name}: forged\r\n`));
      expect(viaNginx.status).toBe(400);
      expect(shape(viaNginx)).toEqual(await refused());
      expect([up.seen.length, decisions().length]).toEqual(before);
    });
  }

  const underscored = ['x_agent_id', 'X_Agent_Invented', 'x_gate_fwd_sig', 'x-agent_role', 'x_gate-anything', 'X_AGENT-ID'];
  it(`drops every name spelled with _ (${underscored.join(', ')}): the upstream never sees it`, async () => {
    const token = await tokenOf(fx.agents.p256);
    for (const name of underscored) {
      expect([name, await rawStatus(nginx.port, raw(token, `${name}: forged\r\n`))]).toEqual([name, 200]);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe('/strip');
      const names = Object.keys(seen.headers);
      expect(names.filter((n) => /^x[-_](agent|gate)[-_]/i.test(n)).sort(), name).toEqual(['x-agent-id', 'x-agent-thumbprint', 'x-agent-token-id']);
      expect(Object.values(seen.headers)).not.toContain('forged');
    }
  });

  it('refuses a request whose Connection header names a header it carries; passes one naming only hop-by-hop or absent headers', async () => {
    const token = await tokenOf(fx.agents.p256);
    const before = [up.seen.length, decisions().length];
    for (const extra of ['X-Secret: v\r\nConnection: keep-alive, X-Secret\r\n', 'Connection: x-secret\r\nx-secret: v\r\n', 'Content-Language: de\r\nConnection: Content-Language\r\n']) {
      const r = await rawExchange(nginx.port, tls(), raw(token, extra));
      expect([extra, r.status]).toEqual([extra, 400]);
      expect(shape(r)).toEqual(await refused());
    }
    expect([up.seen.length, decisions().length]).toEqual(before);
    // Direct mode strips the named header; the upstream never sees it there either.
    expect(await rawStatus(portOf(direct.url), raw(token, 'X-Secret: v\r\nConnection: keep-alive, X-Secret\r\n'))).toBe(200);
    expect(up.seen.at(-1)!.headers['x-secret']).toBeUndefined();
    for (const extra of ['Connection: keep-alive, x-absent\r\n', 'TE: trailers\r\nConnection: TE\r\n', 'Connection: Upgrade\r\n']) {
      expect([extra, await rawStatus(nginx.port, raw(token, extra))]).toEqual([extra, 200]);
    }
  });

  it('refuses a Connection header naming constructor or __proto__ (names an object-literal lookup would take as present)', async () => {
    const token = await tokenOf(fx.agents.p256);
    const before = [up.seen.length, decisions().length];
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const r = await rawExchange(nginx.port, tls(), raw(token, `${name}: smuggled\r\nConnection: keep-alive, ${name}\r\n`));
      expect([name, r.status]).toEqual([name, 400]);
      expect(shape(r)).toEqual(await refused());
    }
    expect([up.seen.length, decisions().length]).toEqual(before);
  });
});

describe('the decision cache', () => {
  it('never answers the same token with another certificate: decided again and refused for the binding', async () => {
    const token = await tokenOf(fx.agents.p256);
    const owner = agent(fx.agents.p256);
    const thief = agent(fx.agents.other);
    expect((await send(owner, `${nginx.url}/bound`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await send(owner, `${nginx.url}/bound`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const before = decisions().length;
      const r = await send(thief, `${nginx.url}/bound`, { headers: { authorization: `Bearer ${token}` } });
      expect([r.status, r.body?.code]).toEqual([403, 'token_binding_mismatch']);
      expect(decisions().length).toBe(before + 1);
    }
    const lines = () => nginx.accessLog().filter((l) => l.request_uri === '/bound' && l.status === '403');
    await waitFor(() => lines().length === 3, 2000, 'the access log');
    expect(lines().map((l) => l.authz_cache)).toEqual(['MISS', 'MISS', 'MISS']);
  });

  it('never stores a refusal', async () => {
    const a = agent(fx.agents.rsa);
    const before = decisions().length;
    for (let i = 0; i < 3; i++) {
      const r = await send(a, `${nginx.url}/refused-twice`, { headers: { authorization: 'Bearer not.a.token' } });
      expect([r.status, r.body?.code]).toEqual([401, 'token_invalid']);
    }
    expect(decisions().length).toBe(before + 3);
  });

  it('serves nothing to a client without a certificate, whatever certificate text it puts in or after Authorization', async () => {
    const victim = fx.agents.p256;
    const token = await tokenOf(victim);
    const v = agent(victim);
    // The victim's allow is in the cache.
    expect((await send(v, `${nginx.url}/victim`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const der = new X509Certificate(victim.certPem).raw;
    const sha1 = new X509Certificate(victim.certPem).fingerprint.replace(/:/g, '').toLowerCase();
    const escapedPem = encodeURIComponent(victim.certPem);
    const anon = agent(undefined);
    const variants = [
      `Bearer ${token}`,
      `Bearer ${token}${escapedPem}`,
      `Bearer ${token} ${escapedPem}`,
      `Bearer ${token}|${sha1}`,
      `${sha1}|Bearer ${token}`,
      `Bearer ${token}${der.toString('base64')}`,
    ];
    for (const auth of variants) {
      const before = decisions().length;
      const r = await send(anon, `${nginx.url}/victim`, { headers: { authorization: auth } });
      expect([r.status, r.body?.code]).toEqual([401, 'client_cert_required']);
      expect(decisions().length).toBe(before + 1);
    }
    // And the victim's own entry is still what it was.
    expect((await send(v, `${nginx.url}/victim`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const anon_ = () => nginx.accessLog().filter((l) => l.request_uri === '/victim' && l.ssl_client_verify === 'NONE');
    await waitFor(() => anon_().length === variants.length, 2000, 'the access log');
    const anonLines = anon_();
    expect(anonLines.map((l) => l.authz_cache)).toEqual(variants.map(() => 'BYPASS'));
  });

  it(`a deny-list entry takes effect within GATE_AUTHZ_CACHE_S + 1 s (${CACHE_S + 1} s)`, async () => {
    const token = await tokenOf(denyMe);
    const a = agent(denyMe);
    const go = () => send(a, `${nginx.url}/deny`, { headers: { authorization: `Bearer ${token}` } });
    expect((await go()).status).toBe(200);
    const thumbprint = thumbprintOf(new X509Certificate(denyMe.certPem).raw);
    const r = await admin(authz, '/admin/v1/denylist', { method: 'POST', body: { thumbprint, reason: 'authorizer test' } });
    expect(r.status).toBe(201);
    const { gateMs, nginxMs, last } = await race(denyMe, token, go);
    expect(nginxMs - gateMs).toBeLessThanOrEqual((CACHE_S + 1) * 1000 + 300);
    expect(shape(last!)).toEqual(shape(await send(a, `${direct.url}/deny`, { headers: { authorization: `Bearer ${token}` } })));
    expect(last!.body?.code).toBe('agent_denied');
    expect((await go()).status).toBe(403);
  });

  it(`a revocation (CRL update) takes effect within GATE_AUTHZ_CACHE_S + 1 s (${CACHE_S + 1} s)`, async () => {
    const token = await tokenOf(revokeMe);
    const a = agent(revokeMe);
    const go = () => send(a, `${nginx.url}/revoke`, { headers: { authorization: `Bearer ${token}` } });
    expect((await go()).status).toBe(200);
    await writeCrlFile([revokeMe]);
    const { gateMs, nginxMs, last } = await race(revokeMe, token, go);
    expect(nginxMs - gateMs).toBeLessThanOrEqual((CACHE_S + 1) * 1000 + 300);
    expect(last!.body?.code).toBe('client_cert_revoked');
    expect(shape(last!)).toEqual(shape(await send(a, `${direct.url}/revoke`, { headers: { authorization: `Bearer ${token}` } })));
  });
});

describe('a gate that is down or hung', () => {
  it('gives clients 503 gate_unavailable while cached allows pass until their TTL ends', async () => {
    const proxy: TcpProxy = await startTcpProxy({ port: portOf(authz.url) });
    closers.push(() => proxy.close());
    const n = await launch(`http://127.0.0.1:${proxy.port}`);
    const cached = fx.agents.ed25519;
    const cold = fx.agents.rsa;
    const [tc, tk] = [await tokenOf(cached), await tokenOf(cold)];
    const [ac, ak] = [agent(cached), agent(cold)];
    const go = (a: Agent, t: string) => send(a, `${n.url}/down`, { headers: { authorization: `Bearer ${t}` } });
    expect((await go(ac, tc)).status).toBe(200);
    const warmAt = Date.now();
    for (const mode of ['drop', 'reset'] as const) {
      proxy.mode = mode;
      if (Date.now() - warmAt < CACHE_S * 1000 - 1200) expect((await go(ac, tc)).status).toBe(200);
      const r = await go(ak, tk);
      expect(r.status).toBe(503);
      expect(r.headers['content-type']).toBe('application/problem+json');
      expect(r.headers['retry-after']).toBe('1');
      expect(r.headers['cache-control']).toBe('no-store');
      expect(r.body).toMatchObject({ type: 'urn:agent-gate:error:gate_unavailable', title: 'Gate unavailable', status: 503, code: 'gate_unavailable' });
      expect(String(r.body?.instance)).toMatch(/^urn:agent-gate:refusal:[a-z0-9]{26}$/);
    }
    // Past the TTL (max-age=2 lasts up to 3 s in nginx), the cached agent is refused too.
    await new Promise((r) => setTimeout(r, Math.max(0, warmAt + (CACHE_S + 1) * 1000 + 200 - Date.now())));
    expect((await go(ac, tc)).status).toBe(503);
    proxy.mode = 'pass';
    await waitFor(async () => (await go(ak, tk)).status === 200, 5000, 'the gate to be reachable again');
  }, 30_000);
});

describe('the decision endpoint', () => {
  /** Sends a (possibly edited) decision request straight to the gate; returns its carried outcome. */
  async function straight(req: Pick<CapturedRequest, 'method' | 'target' | 'headers' | 'body'>) {
    const r = await sendRaw(portOf(authz.url), serializeRequest(req));
    const problem = r.headers['x-agent-gate-problem'];
    return { status: r.status, carried: r.headers['x-agent-gate-status'], code: problem ? (JSON.parse(Buffer.from(problem, 'base64url').toString()) as { code: string }).code : undefined, headers: r.headers, text: r.text };
  }
  const setHeader = (req: CapturedRequest, name: string, value: string | undefined) => ({
    ...req,
    headers: [...req.headers.filter(([n]) => n.toLowerCase() !== name), ...(value === undefined ? [] : [[name, value] as [string, string]])],
  });

  it('refuses a replayed decision request, and one edited or sent without the signed headers', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const a = agent(who);
    relayOff.hold = true;
    try {
      // The relay answers 200 itself: nginx let this one through, and the gate never saw its id.
      await send(a, `${nginxOff.url}/held?x=1`, { headers: { authorization: `Bearer ${token}` } });
    } finally {
      relayOff.hold = false;
    }
    const held = decisions(relayOff).at(-1)!;
    expect(held.held).toBe(true);
    // Edited: another target or method than signed.
    for (const [name, value] of [['x-gate-fwd-uri', '/admin?x=1'], ['x-gate-fwd-method', 'DELETE'], ['authorization', `Bearer ${await tokenOf(fx.agents.ed25519)}`]] as const) {
      const r = await straight(setHeader(held, name, value));
      if (name === 'authorization') continue;
      expect([r.status, r.carried, r.code]).toEqual([403, '403', 'forwarded_signature_invalid']);
    }
    const missing = await straight(setHeader(held, 'x-gate-fwd-uri', undefined));
    expect([missing.status, missing.carried, missing.code]).toEqual([401, '401', 'forwarded_signature_invalid']);
    // Positive control, then its replay.
    const first = await straight(held);
    expect([first.status, first.headers['x-agent-id'], first.headers['cache-control']]).toEqual([403, undefined, 'no-store']);
    expect(first.code).toBe('forwarded_signature_invalid');
    // (the authorization edit above consumed the id: its signature did not cover the token)
    const none = await straight({ method: 'GET', target: `${P}/v1/authorize`, headers: [['Host', 'localhost'], ['Authorization', `Bearer ${token}`]], body: Buffer.alloc(0) });
    expect([none.status, none.carried, none.code, none.text]).toEqual([401, '401', 'forwarded_signature_invalid', '']);
    expect(await metric(authz, 'agent_gate_forwarded_verifications_total{result="replayed"}')).toBeGreaterThan(0);
  });

  it('answers an unused capture once (204, identity, max-age), then refuses its replay', async () => {
    const who = fx.agents.ed25519;
    const token = await tokenOf(who);
    const a = agent(who);
    relayOff.hold = true;
    try {
      await send(a, `${nginxOff.url}/held-2`, { headers: { authorization: `Bearer ${token}` } });
    } finally {
      relayOff.hold = false;
    }
    const held = decisions(relayOff).at(-1)!;
    const allowsBefore = await metric(authz, 'agent_gate_authz_decisions_total{result="allow"}');
    const first = await straight(held);
    expect([first.status, first.headers['x-agent-id'], first.headers['cache-control'], first.text]).toEqual([204, 'urn:agent:ed', `max-age=${CACHE_S}`, '']);
    expect(await metric(authz, 'agent_gate_authz_decisions_total{result="allow"}')).toBe(allowsBefore + 1);
    const again = await straight(held);
    expect([again.status, again.carried, again.code, again.headers['cache-control']]).toEqual([403, '403', 'forwarded_signature_invalid', 'no-store']);
  });

  it('never takes a forwarded-mode signature as a decision signature', async () => {
    const who = fx.agents.rsa;
    const a = agent(who);
    relay.hold = true;
    try {
      await send(a, `${nginx.url}${P}/jwks.json`);
    } finally {
      relay.hold = false;
    }
    const fwd = relay.captured.at(-1)!;
    expect(fwd.target).toBe(`${P}/jwks.json`);
    const moved = setHeader(setHeader({ ...fwd, target: `${P}/v1/authorize` }, 'x-gate-fwd-method', fwd.method), 'x-gate-fwd-uri', fwd.target);
    const r = await straight({ ...moved, headers: [...moved.headers, ['Authorization', `Bearer ${await tokenOf(who)}`]] });
    expect([r.status, r.carried, r.code]).toEqual([403, '403', 'forwarded_signature_invalid']);
  });
});

describe('rate limits', () => {
  it('the edge limit per certificate (GATE_RATE_PROXY_IDENTITY) holds for cached allows, answered as the contract 429', async () => {
    const n = await launch(relay.url, { rateProxyIdentity: '2/60' });
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const a = agent(who);
    const codes: number[] = [];
    let limited: Res | undefined;
    for (let i = 0; i < 5; i++) {
      const r = await send(a, `${n.url}/edge-limit`, { headers: { authorization: `Bearer ${token}` } });
      codes.push(r.status);
      if (r.status === 429) limited = r;
    }
    expect(codes.slice(0, 3)).toEqual([200, 200, 200]);
    expect(codes).toContain(429);
    expect(limited!.headers['ratelimit-policy']).toBe('"proxy_identity";q=2;w=60');
    expect(shape(limited!)).toMatchObject({ status: 429, contentType: 'application/problem+json', cacheControl: 'no-store', body: { code: 'rate_limited', status: 429 }, retryAfter: true, rateLimit: true });
    // A refused request is not counted (the limit applies after the decision, as in section 4).
    const other = agent(fx.agents.other);
    for (let i = 0; i < 4; i++) expect((await send(other, `${n.url}/edge-limit`, { headers: { authorization: 'Bearer bad' } })).status).toBe(401);
    const otherToken = await tokenOf(fx.agents.other);
    expect((await send(other, `${n.url}/edge-limit`, { headers: { authorization: `Bearer ${otherToken}` } })).status).toBe(200);
  });

  it("the gate's own 429 reaches the client with Retry-After and the RateLimit headers, as in direct mode", async () => {
    const limits = { GATE_RATE_LIMITS: 'on', GATE_RATE_PROXY_IDENTITY: '2/60', GATE_RATE_TOKEN_IDENTITY: '1000/60', GATE_RATE_CHALLENGE_IDENTITY: '1000/60' };
    const g = await authorizerGate(limits);
    const d = await startGate(sharedEnv({ GATE_UPSTREAM_URL: up.url, ...limits }));
    closers.push(() => d.close());
    const n = await launch(g.url, { cacheS: 0 });
    const token = await tokenOf(fx.agents.ed25519);
    const a = agent(fx.agents.ed25519);
    const burst = async (base: string) => {
      let last: Res | undefined;
      for (let i = 0; i < 3; i++) last = await send(a, `${base}/gate-limit`, { headers: { authorization: `Bearer ${token}` } });
      return last!;
    };
    const viaNginx = await burst(n.url);
    const viaDirect = await burst(d.url);
    expect(viaNginx.status).toBe(429);
    expect(shape(viaNginx)).toEqual(shape(viaDirect));
    expect(viaNginx.headers['ratelimit-policy']).toBe('"proxy_identity";q=2;w=60');
  });
});

/**
 * What nginx accepts but the gate cannot sign or proxy the same way (section 13): a request
 * line that is not origin-form, or a method outside the gate's, is refused before anything is
 * signed, decided or served from the cache, so no one without a certificate can make the gate
 * count a bad forwarded signature (the critical alert AgentGateForwardedSignatureInvalid).
 */
describe('the request line', () => {
  const BAD_SIG = 'agent_gate_forwarded_verifications_total{result="bad_signature"}';
  const ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, QUERY';
  const tls = (who?: KeyAndCert) => ({ ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem });
  const line = (start: string, extra = '') => `${start} HTTP/1.1\r\nHost: localhost\r\n${extra}Connection: close\r\n\r\n`;
  const codeOf = (body: string) => /"code":"([a-z_]+)"/.exec(body)?.[1];

  it('a target that is not origin-form, or a method the gate refuses, is answered by nginx: no decision, no bad signature, nothing proxied', async () => {
    const before = { badSig: await metric(authz, BAD_SIG), decided: decisions(relayOff).length, proxied: up.seen.length };
    const seen: [string, number, string | undefined][] = [];
    for (const start of ['GET http://localhost?q=1', 'GET http://localhost/x?q=1', 'GET ?q=1', 'OPTIONS *', 'M-SEARCH /x', 'GET_X /x', 'PROPFIND /x', 'TRACE /x']) {
      const r = await rawUntilClose(nginxOff.port, tls(), line(start));
      seen.push([start, r.status, codeOf(r.body)]);
      if (r.status === 405) expect(r.headers.allow).toBe(ALLOW);
      expect(r.headers['content-type'], start).toBe('application/problem+json');
      // nginx's own refusals carry the refusal id in X-Agent-Gate-Refusal, as the gate's do.
      expect(r.headers['x-agent-gate-refusal'], start).toBe(/"instance":"urn:agent-gate:refusal:([A-Za-z0-9]+)"/.exec(r.body)?.[1]);
    }
    expect(seen).toEqual([
      ['GET http://localhost?q=1', 400, 'request_malformed'],
      ['GET http://localhost/x?q=1', 400, 'request_malformed'],
      ['GET ?q=1', 400, 'request_malformed'],
      ['OPTIONS *', 400, 'request_malformed'],
      ['M-SEARCH /x', 405, 'method_not_allowed'],
      ['GET_X /x', 405, 'method_not_allowed'],
      ['PROPFIND /x', 405, 'method_not_allowed'],
      ['TRACE /x', 405, 'method_not_allowed'],
    ]);
    // The gate's own endpoints: such a request line is refused there too, before signing.
    for (const start of [`GET http://localhost${P}/v1/challenge`, `M-SEARCH ${P}/v1/token`, `GET_X ${P}/healthz`]) {
      const r = await rawUntilClose(nginxOff.port, tls(), line(start));
      expect([start, r.status, codeOf(r.body)]).toEqual([start, 400, 'request_malformed']);
    }
    expect({ badSig: await metric(authz, BAD_SIG), decided: decisions(relayOff).length, proxied: up.seen.length }).toEqual(before);
  });

  it('with a cached allow for the same certificate and token, such requests are refused, not served from the cache', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    expect((await send(agent(who), `${nginx.url}/line`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const before = { decided: decisions().length, proxied: up.seen.length };
    const auth = `Authorization: Bearer ${token}\r\n`;
    const got: [string, number][] = [];
    for (const start of ['GET http://localhost/line', 'PROPFIND /line', 'M-SEARCH /line']) got.push([start, (await rawUntilClose(nginx.port, tls(who), line(start, auth))).status]);
    expect(got).toEqual([
      ['GET http://localhost/line', 400],
      ['PROPFIND /line', 405],
      ['M-SEARCH /line', 405],
    ]);
    expect({ decided: decisions().length, proxied: up.seen.length }).toEqual(before);
  });

  it('QUERY passes with a Content-Type; without one it is 400 request_malformed after the decision, as direct mode answers it after identity and token', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const query = (auth: string, type: string) => `QUERY /q HTTP/1.1\r\nHost: localhost\r\n${auth}${type}Content-Length: 2\r\nConnection: close\r\n\r\n{}`;
    const auth = `Authorization: Bearer ${token}\r\n`;
    const ok = await rawUntilClose(nginxOff.port, tls(who), query(auth, 'Content-Type: application/json\r\n'));
    expect(ok.status).toBe(200);
    expect([up.seen.at(-1)!.method, up.seen.at(-1)!.url, up.seen.at(-1)!.body.toString()]).toEqual(['QUERY', '/q', '{}']);
    const before = { decided: decisions(relayOff).length, proxied: up.seen.length };
    for (const [a, code] of [['', 'token_missing'], [auth, 'request_malformed']] as const) {
      const viaNginx = await rawExchange(nginxOff.port, tls(who), query(a, ''));
      expect(codeOf(viaNginx.text)).toBe(code);
      expect(shape(viaNginx)).toEqual(shape(await rawExchange(portOf(direct.url), tls(who), query(a, ''))));
    }
    expect({ decided: decisions(relayOff).length - 2, proxied: up.seen.length }).toEqual(before);
  });
});

describe('what the upstream answers', () => {
  it("passes the upstream's X-Accel-* headers to the client unchanged, as direct mode does; nginx acts on none; its own X-Agent-Gate-Refusal never reaches the client", async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const a = agent(who);
    const accel = { 'x-accel-redirect': `/./agent-gate-authorize`, 'x-accel-expires': '0', 'x-accel-buffering': 'no', 'x-accel-limit-rate': '1', 'x-accel-charset': 'koi8-r' };
    // Only the gate's refusals carry X-Agent-Gate-Refusal: the gate and nginx remove an upstream's.
    up.reply = (s) => (s.url.startsWith('/accel') ? { status: 200, headers: { ...accel, 'x-agent-gate-refusal': 'forged', 'content-type': 'text/plain' }, body: 'upstream body' } : undefined);
    try {
      const pick = (r: Res) => ({ status: r.status, text: r.text, accel: Object.fromEntries(Object.keys(accel).map((h) => [h, r.headers[h]])), internal: Object.keys(r.headers).filter((h) => /^x-agent-/.test(h)) });
      const viaDirect = pick(await send(a, `${direct.url}/accel`, { headers: { authorization: `Bearer ${token}` } }));
      expect(viaDirect).toEqual({ status: 200, text: 'upstream body', accel, internal: [] });
      // Cache off (the gate's raw 403 with carriers leaked before) and on (the cached raw 204).
      for (const n of [nginxOff, nginx, nginx]) expect(pick(await send(a, `${n.url}/accel`, { headers: { authorization: `Bearer ${token}` } }))).toEqual(viaDirect);
    } finally {
      up.reply = undefined;
    }
  });
});

describe('the request to the upstream', () => {
  it('gives the upstream the Host direct mode gives it (the upstream URL\'s authority)', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const a = agent(who);
    await send(a, `${direct.url}/host`, { headers: { authorization: `Bearer ${token}` } });
    const viaDirect = up.seen.at(-1)!.headers.host;
    expect(viaDirect).toBe(new URL(up.url).host);
    expect((await send(a, `${nginx.url}/host`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect(up.seen.at(-1)!.headers.host).toBe(viaDirect);
  });
});

describe('a 2xx decision answer that names no agent', () => {
  const codeOf = (body: string) => /"code":"([a-z_]+)"/.exec(body)?.[1];

  it('a 2xx from something that is not the gate lets nothing through: 503 gate_unavailable, connection closed', async () => {
    const fake = await startRecordingGate();
    closers.push(() => fake.close());
    const n = await launch(fake.url, { cacheS: 0 });
    const before = up.seen.length;
    for (const who of [undefined, fx.agents.p256]) {
      const r = await rawUntilClose(n.port, { ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem }, 'GET /fail-open HTTP/1.1\r\nHost: localhost\r\n\r\n', 2000);
      expect([r.status, codeOf(r.body), r.headers['retry-after'], r.headers['content-type'], r.closed]).toEqual([503, 'gate_unavailable', '1', 'application/problem+json', true]);
      // Nothing was forwarded: the SDK may send a POST again after this one.
      expect(r.headers['x-agent-gate-refusal']).toBe(/"instance":"urn:agent-gate:refusal:([A-Za-z0-9]+)"/.exec(r.body)?.[1]);
    }
    expect(fake.seen.length).toBe(2);
    expect(up.seen.length).toBe(before);
  });

  it('such an answer is never stored in the decision cache, even one marked cacheable', async () => {
    let asked = 0;
    const fake = createServer((_q, res) => {
      asked++;
      res.writeHead(204, { 'cache-control': 'max-age=60' }).end();
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => (fake.closeAllConnections(), fake.close(() => r()))));
    const n = await launch(`http://127.0.0.1:${(fake.address() as { port: number }).port}`, { cacheS: 2 });
    const who = { ca: fx.ca.certPem, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem };
    for (let i = 0; i < 3; i++) {
      const r = await rawUntilClose(n.port, who, 'GET /no-agent-cache HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer same\r\n\r\n', 2000);
      expect([r.status, codeOf(r.body)]).toEqual([503, 'gate_unavailable']);
    }
    expect(asked).toBe(3);
  });
});

describe('a decision answer without usable carriers', () => {
  const codeOf = (body: string) => /"code":"([a-z_]+)"/.exec(body)?.[1];

  it("an unusable refusal (a WAF's 403 text/html) is 503 gate_unavailable and closes the connection; the gate's carried refusals keep it open", async () => {
    const waf = createServer((_q, res) => res.writeHead(403, { 'content-type': 'text/html' }).end('<h1>blocked</h1>'));
    await new Promise<void>((r) => waf.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => (waf.closeAllConnections(), waf.close(() => r()))));
    const n = await launch(`http://127.0.0.1:${(waf.address() as { port: number }).port}`, { cacheS: 0 });
    const who = { ca: fx.ca.certPem, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem };
    const r = await rawUntilClose(n.port, who, 'GET /waf HTTP/1.1\r\nHost: localhost\r\n\r\n', 2000);
    expect([r.status, codeOf(r.body), r.headers.connection, r.closed]).toEqual([503, 'gate_unavailable', 'close', true]);
    // A refusal the gate decided (401 token_missing) is answered on a connection nginx keeps.
    const kept = await rawUntilClose(nginxOff.port, who, 'GET /waf HTTP/1.1\r\nHost: localhost\r\n\r\n', 1000);
    expect([kept.status, codeOf(kept.body), kept.headers.connection, kept.closed]).toEqual([401, 'token_missing', 'keep-alive', false]);
    // ...with the refusal id in X-Agent-Gate-Refusal, as direct mode sends it.
    expect(kept.headers['x-agent-gate-refusal']).toBe(/"instance":"urn:agent-gate:refusal:([A-Za-z0-9]+)"/.exec(kept.body)?.[1]);
  });
});

describe('the edge connection limit', () => {
  it('its 429 (limit_conn, before the decision) carries Retry-After, RateLimit-Policy and RateLimit', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const n = await launchNginx('authz-lc', async (dir, port) => {
      await renderTestConfig(fx, port, { mode: 'authorizer', gateUrl: relayOff.url, hmacKeyFile: key.file, kid: 'k1', dir, maxConnectionsPerAddress: 1, authorizer: { upstreamUrl: up.url, timeoutS: 1, cacheS: 0 } });
    });
    closers.push(() => n.stop());
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    up.reply = (s) => (s.url === '/held-lc' ? { status: 200, body: 'x', hold: held } : undefined);
    const tlsOf = { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem };
    try {
      const first = rawUntilClose(n.port, tlsOf, `GET /held-lc HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`, 8000);
      await waitFor(() => up.seen.some((s) => s.url === '/held-lc'), 5000, 'the first request to be held at the upstream');
      const second = await rawUntilClose(n.port, tlsOf, `GET /second HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
      release();
      expect((await first).status).toBe(200);
      expect([second.status, second.headers['retry-after'], second.headers['ratelimit-policy'], second.headers.ratelimit]).toEqual([429, '1', '"edge";q=100;w=1', '"edge";r=0;t=1']);
    } finally {
      release();
      up.reply = undefined;
    }
  });
});

describe('load scripts', () => {
  const k6 = findK6();
  // k6 runs as a child process spawned asynchronously: the gate, the capture relay and the
  // upstream live in this test process, so a spawnSync would block their event loop for the
  // whole run and k6 would wait for answers nobody can send (the cause of issue 14's "no
  // progress past setup()": nothing in nginx or the gate was at fault).
  it.skipIf(!k6)(k6 ? 'the k6 scripts run unchanged against nginx in authorizer mode' : 'k6 scripts (skipped: k6 not on PATH)', async () => {
    const dir = tempDir('k6');
    const cert = join(dir, 'agent.pem');
    const keyFile = join(dir, 'agent.key');
    writeFileSync(cert, fx.agents.p256.certPem);
    writeFileSync(keyFile, fx.agents.p256.keyPem, { mode: 0o600 });
    const common = { K6_PERF_THRESHOLDS: 'off', K6_RUN_DURATION: '3s', K6_CA_CERT: fx.caFile, K6_AGENT_CERT: cert, K6_AGENT_KEY: keyFile, K6_GATE_URL: nginx.url };
    const runs: SmokeRun[] = [
      { script: 'challenge-flow.js', label: 'challenge-flow', vars: { ...common, K6_RATE: '5', K6_CALLS: '2', K6_FLOW_OK_MIN: '1', K6_ON_TIME_MIN: '1' } },
      { script: 'gated-rps.js', label: 'gated-rps', vars: { ...common, K6_RATE: '20', K6_GATED_OK_MIN: '1' } },
    ];
    for (const run of runs) {
      const before = decisions().length;
      const r = await runK6(k6!, run, dir, fx.caFile, 60_000);
      expect(r.ok, r.detail).toBe(true);
      // The gated calls went through nginx's decision path, not around it.
      expect(decisions().length, run.label).toBeGreaterThan(before);
    }
  }, 150_000);
});
