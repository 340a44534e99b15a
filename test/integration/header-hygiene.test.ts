/**
 * Header hygiene of section 5 against real gates and a real recording upstream: client-sent
 * proxy headers (`Forwarded`, `X-Real-IP`, `X-Forwarded-*` including XFCC, RFC 9440
 * `Client-Cert`...) never reach the upstream in any letter case or `_` spelling unless the
 * operator lists them in `GATE_PROXY_PASS_HEADERS`; `X-Forwarded-For` is the client address
 * (the signed `x-gate-fwd-addr` in forwarded mode), replacing a client-sent value unless
 * `GATE_PROXY_XFF=append`.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { canonicalString, signCanonical, thumbprintOf } from '../../src/identity/index.js';
import { STRIPPED_HEADERS } from '../../src/proxy/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { rawRequest } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream, type SeenRequest } from '../helpers/upstream.js';

const K1 = randomBytes(32);
let fx: Fixtures;
let up: RecordingUpstream;
let direct: RunningGate;
let directPass: RunningGate;
let fwd: RunningGate;
let fwdAppend: RunningGate;
let seq = 0;

/** Client-sent proxy headers an upstream could believe, with hostile values. */
const SPOOFED: Record<string, string> = {
  forwarded: 'for=10.0.0.1;proto=https;host=admin.internal',
  'x-real-ip': '10.0.0.1',
  'x-forwarded-host': 'admin.internal',
  'x-forwarded-port': '31337',
  'x-forwarded-proto': 'gopher',
  'x-forwarded-prefix': '/admin',
  'x-forwarded-client-cert': 'By=spiffe://cluster/ns/x;Hash=abc;Subject="CN=admin";URI=spiffe://cluster/ns/admin',
  'x-client-ip': '10.0.0.2',
  'true-client-ip': '10.0.0.3',
  'x-original-url': '/admin/delete',
  'x-rewrite-url': '/admin/delete',
  'client-cert': ':MIIBspoofed=:',
  'client-cert-chain': ':MIIBspoofed=:',
  'x-ssl-client-cert': 'spoofed',
};

/** The spellings a client may use for one name: lower, UPPER, Mixed-Case and `_` forms. */
function spellings(name: string): string[] {
  const mixed = name.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase());
  return [name, name.toUpperCase(), mixed, mixed.replace(/-/g, '_')];
}

/** One request over raw mTLS (names keep their case on the wire); returns what the upstream saw. */
async function viaDirect(g: RunningGate, headers: [string, string][], token: string): Promise<{ status: number; seen: SeenRequest | undefined }> {
  const id = `h${++seq}`;
  const lines = headers.map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const res = await rawRequest(g.url, fx, fx.agents.p256, `GET /api/h?${id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n${lines}Connection: close\r\n\r\n`);
  return { status: res.status, seen: up.seen.find((s) => s.url === `/api/h?${id}`) };
}

/** One request in forwarded mode, signed the way nginx signs, with `addr` as the client address. */
async function viaForwarded(g: RunningGate, addr: string, headers: [string, string][], token: string): Promise<{ status: number; seen: SeenRequest | undefined }> {
  const id = `f${++seq}`;
  const path = `/api/h?${id}`;
  const ts = String(Math.floor(Date.now() / 1000));
  const reqId = randomBytes(16).toString('hex');
  const thumbprint = thumbprintOf(new X509Certificate(fx.agents.p256.certPem).raw);
  const canonical = canonicalString({ kid: 'k1', ts, id: reqId, method: 'GET', requestUri: path, host: 'gate.test', addr, verify: 'SUCCESS', thumbprint });
  const list = [
    'host', 'gate.test',
    'x-gate-fwd-kid', 'k1',
    'x-gate-fwd-ts', ts,
    'x-gate-fwd-id', reqId,
    'x-gate-fwd-host', 'gate.test',
    'x-gate-fwd-addr', addr,
    'x-gate-fwd-verify', 'SUCCESS',
    'x-gate-fwd-cert', encodeURIComponent(fx.agents.p256.certPem),
    'x-gate-fwd-sig', signCanonical(K1, canonical),
    'authorization', `Bearer ${token}`,
    ...headers.flat(),
  ];
  const r = await request(`${g.url}${path}`, { headers: list });
  await r.body.text();
  return { status: r.statusCode, seen: up.seen.find((s) => s.url === path) };
}

const tokenOf = async (g: RunningGate) => (await g.gate.tokens.issue('urn:agent:p256', thumbprintOf(new X509Certificate(fx.agents.p256.certPem).raw))).token;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  const common = { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url };
  const fwdEnv = { ...common, GATE_MODE: 'forwarded', GATE_TLS_CERT: '', GATE_TLS_KEY: '', GATE_FWD_HMAC_KEYS: `k1:${K1.toString('base64')}`, GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32,::1' };
  [direct, directPass, fwd, fwdAppend] = await Promise.all([
    startGate(testEnv(fx, common)),
    startGate(testEnv(fx, { ...common, GATE_PROXY_PASS_HEADERS: ' X-Real-IP , forwarded', GATE_PROXY_XFF: 'append' })),
    startGate(testEnv(fx, fwdEnv)),
    startGate(testEnv(fx, { ...fwdEnv, GATE_PROXY_XFF: 'append' })),
  ]);
  for (const g of [fwd, fwdAppend]) g.url = g.url.replace('https://', 'http://');
});

afterAll(async () => {
  await Promise.all([direct, directPass, fwd, fwdAppend].map((g) => g?.close()));
  await up?.close();
});

describe('direct mode, defaults (strip, replace)', () => {
  it('every stripped header, in every spelling, never reaches the upstream; harmless headers do', async () => {
    const token = await tokenOf(direct);
    for (const [name, value] of Object.entries(SPOOFED)) {
      for (const spelled of spellings(name)) {
        const { status, seen } = await viaDirect(direct, [[spelled, value], [spelled, value], ['x-app-trace', 'keep-me']], token);
        expect(status, `${spelled}`).toBe(200);
        expect(seen, spelled).toBeDefined();
        const names = Object.keys(seen!.headers);
        const leaked = names.filter((n) => n.replace(/_/g, '-') === name && !(n === 'x-forwarded-proto' && seen!.headers[n] === 'https'));
        expect(leaked, `${spelled} reached the upstream`).toEqual([]);
        expect(seen!.headers['x-app-trace']).toBe('keep-me');
        expect(seen!.headers['x-forwarded-proto']).toBe('https');
        expect(Object.values(seen!.headers).join('\n'), `${spelled}: the spoofed value reached the upstream`).not.toContain(value);
      }
    }
  });

  it('the contract list itself: each name in STRIPPED_HEADERS is stripped', async () => {
    const token = await tokenOf(direct);
    const { seen } = await viaDirect(direct, STRIPPED_HEADERS.map((n) => [n, 'spoofed-value'] as [string, string]), token);
    expect(Object.entries(seen!.headers).filter(([, v]) => v === 'spoofed-value')).toEqual([]);
  });

  it('X-Forwarded-For is the TCP peer, replacing any client-sent value (one or several lines, any spelling)', async () => {
    const token = await tokenOf(direct);
    for (const lines of [[['X-Forwarded-For', '6.6.6.6']], [['x-forwarded-for', '6.6.6.6'], ['X-FORWARDED-FOR', '7.7.7.7, 8.8.8.8']], [['X_Forwarded_For', '6.6.6.6']], []] as [string, string][][]) {
      const { seen } = await viaDirect(direct, lines, token);
      expect(seen!.headers['x-forwarded-for'], JSON.stringify(lines)).toBe('127.0.0.1');
      expect(seen!.headers.x_forwarded_for).toBeUndefined();
    }
  });
});

describe('direct mode, GATE_PROXY_PASS_HEADERS and GATE_PROXY_XFF=append', () => {
  it('listed headers pass unchanged (any letter case of the listed name); unlisted ones are still stripped', async () => {
    const token = await tokenOf(directPass);
    const { seen } = await viaDirect(directPass, [['X-REAL-IP', '10.0.0.1'], ['Forwarded', SPOOFED.forwarded!], ['X-Forwarded-Client-Cert', 'spoofed'], ['X-Forwarded-Host', 'admin.internal'], ['X_Real_IP', '10.9.9.9']], token);
    expect(seen!.headers['x-real-ip']).toBe('10.0.0.1');
    expect(seen!.headers.forwarded).toBe(SPOOFED.forwarded);
    expect(seen!.headers['x-forwarded-client-cert']).toBeUndefined();
    expect(seen!.headers['x-forwarded-host']).toBeUndefined();
    // Only the exact listed name passes: the underscore spelling stays stripped.
    expect(seen!.headers.x_real_ip).toBeUndefined();
  });

  it('append: the client address is appended to the client-sent X-Forwarded-For; without one it is alone', async () => {
    const token = await tokenOf(directPass);
    expect((await viaDirect(directPass, [['X-Forwarded-For', '6.6.6.6, 7.7.7.7']], token)).seen!.headers['x-forwarded-for']).toBe('6.6.6.6, 7.7.7.7, 127.0.0.1');
    expect((await viaDirect(directPass, [], token)).seen!.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('the allow-list can never name the gate\'s own, Authorization, hop-by-hop or gate-written headers: config violation', () => {
    for (const bad of ['authorization', 'x-agent-id', 'X_Gate_Fwd_Addr', 'connection', 'transfer-encoding', 'host', 'x-forwarded-for', 'x_forwarded_for', 'x-forwarded-proto', 'x-app-trace', 'bad name']) {
      const { violations } = loadConfig(testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_PROXY_PASS_HEADERS: `x-real-ip,${bad}` }));
      expect(violations.map((v) => v.variable), bad).toContain('GATE_PROXY_PASS_HEADERS');
    }
    expect(loadConfig(testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_PROXY_XFF: 'keep' })).violations.map((v) => v.variable)).toContain('GATE_PROXY_XFF');
    expect(loadConfig(testEnv(fx, { GATE_UPSTREAM_URL: up.url, GATE_PROXY_PASS_HEADERS: 'x-forwarded-client-cert,client-cert' })).violations).toEqual([]);
  });
});

describe('forwarded mode: the signed client address', () => {
  it('X-Forwarded-For is the signed x-gate-fwd-addr, not the proxy\'s address nor a client-sent value; proxy headers are stripped', async () => {
    const token = await tokenOf(fwd);
    const { status, seen } = await viaForwarded(fwd, '203.0.113.7', [['x-forwarded-for', '6.6.6.6'], ['X-Real-IP', '10.0.0.1'], ['X-Forwarded-Client-Cert', 'spoofed'], ['Forwarded', 'for=10.0.0.1']], token);
    expect(status).toBe(200);
    expect(seen!.headers['x-forwarded-for']).toBe('203.0.113.7');
    expect(seen!.headers['x-real-ip']).toBeUndefined();
    expect(seen!.headers['x-forwarded-client-cert']).toBeUndefined();
    expect(seen!.headers.forwarded).toBeUndefined();
    // The forwarded-mode headers themselves never reach the upstream either.
    expect(Object.keys(seen!.headers).filter((n) => n.startsWith('x-gate-'))).toEqual([]);
  });

  it('append: the signed address follows the received X-Forwarded-For', async () => {
    const token = await tokenOf(fwdAppend);
    expect((await viaForwarded(fwdAppend, '2001:db8::7', [['X-Forwarded-For', '6.6.6.6']], token)).seen!.headers['x-forwarded-for']).toBe('6.6.6.6, 2001:db8::7');
    expect((await viaForwarded(fwdAppend, '203.0.113.8', [], token)).seen!.headers['x-forwarded-for']).toBe('203.0.113.8');
  });
});
