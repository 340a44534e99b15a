/**
 * Requests outside the usual form, against a real direct-mode gate over raw mTLS: every one gets
 * the contract's problem+json (section 9) in the order of section 4, never Node's bare answer or
 * a silent drop. Header lines past the cap (Node would drop them unseen, so a `Content-Length`
 * or a `Connection` option past it would be ignored), HTTP/1.1 without `Host`, an `Expect` other
 * than `100-continue`, `CONNECT`, methods no route takes, `QUERY` without a media type.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, rawRequest, tlsAgent } from '../helpers/http.js';
import { gateSuite } from '../helpers/suite.js';

const P = '/.agent-gate';
const base = gateSuite();
const suite = {
  get fx() {
    return base.fx;
  },
  get up() {
    return base.up;
  },
  gw: undefined as unknown as RunningGate,
  client: undefined as unknown as GateClient,
};

beforeAll(async () => {
  suite.gw = await startGate(testEnv(base.fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: base.up.url }));
  base.closers.push(() => suite.gw.close());
  suite.client = new GateClient({ baseUrl: suite.gw.url, cert: base.fx.agents.p256.certPem, key: base.fx.agents.p256.keyPem, ca: base.fx.ca.certPem, servername: 'localhost', maxRetries: 0 });
  base.closers.push(() => suite.client.close());
});

const send = (who: KeyAndCert | undefined, raw: string) => rawRequest(suite.gw.url, suite.fx, who, raw);
const header = (head: string, name: string) => new RegExp(`^${name}: *(.*)$`, 'im').exec(head)?.[1]?.trim();
const codeOf = (body: string) => (JSON.parse(body) as { code?: string }).code;
/** `n` harmless header lines. */
const filler = (n: number) => Array.from({ length: n }, (_, i) => `X-Filler-${i}: ${i}\r\n`).join('');

function expectProblem(r: { status: number; head: string; body: string }, status: number, code: string): void {
  expect(r.status, r.head).toBe(status);
  expect(header(r.head, 'content-type')).toBe('application/problem+json');
  expect(header(r.head, 'cache-control')).toBe('no-store');
  expect(codeOf(r.body)).toBe(code);
}

describe('header lines: at most 100 (direct mode), refused past it rather than dropped', () => {
  it('100 lines pass; 101 are 400 request_malformed and nothing reaches the upstream', async () => {
    const token = await suite.client.getToken();
    const base = `Host: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n`; // 3 lines
    const ok = await send(suite.fx.agents.p256, `GET /form/ok HTTP/1.1\r\n${base}${filler(97)}\r\n`);
    expect(ok.status).toBe(200);
    const before = suite.up.seen.length;
    const over = await send(suite.fx.agents.p256, `POST /form/over HTTP/1.1\r\n${base}${filler(97)}Content-Length: 5\r\n\r\nhello`);
    expectProblem(over, 400, 'request_malformed');
    expect(suite.up.seen.length).toBe(before);
  });

  it('a Connection option past line 100 cannot smuggle the header it names: the request is refused', async () => {
    const token = await suite.client.getToken();
    const r = await send(suite.fx.agents.p256, `GET /form/hop HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nx-hop: secret\r\n${filler(100)}Connection: x-hop, close\r\n\r\n`);
    expectProblem(r, 400, 'request_malformed');
    expect(suite.up.seen.some((s) => s.url === '/form/hop')).toBe(false);
  });

  it('a challenge body type past line 100 is not ignored (400, never a 201)', async () => {
    const r = await send(suite.fx.agents.p256, `POST ${P}/v1/challenge HTTP/1.1\r\nHost: localhost\r\n${filler(100)}Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`);
    expectProblem(r, 400, 'request_malformed');
  });
});

describe('Host, Expect, CONNECT', () => {
  it('HTTP/1.1 without Host: 400 request_malformed as problem+json (HTTP/1.0 needs none)', async () => {
    expectProblem(await send(undefined, `GET ${P}/healthz HTTP/1.1\r\nConnection: close\r\n\r\n`), 400, 'request_malformed');
    expect((await send(undefined, `GET ${P}/healthz HTTP/1.0\r\n\r\n`)).status).toBe(200);
  });

  it('an Expect other than 100-continue is ignored: the checks answer (identity first), and it never reaches the upstream', async () => {
    expectProblem(await send(undefined, `POST ${P}/v1/challenge HTTP/1.1\r\nHost: localhost\r\nExpect: foo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`), 401, 'client_cert_required');
    const token = await suite.client.getToken();
    const r = await send(suite.fx.agents.p256, `GET /form/expect HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nExpect: foo\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(suite.up.seen.find((s) => s.url === '/form/expect')?.headers.expect).toBeUndefined();
  });

  it('CONNECT: 405 method_not_allowed with Allow, then the connection closes', async () => {
    const r = await send(suite.fx.agents.p256, 'CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n');
    expectProblem(r, 405, 'method_not_allowed');
    expect(header(r.head, 'allow')).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, QUERY');
    expect(header(r.head, 'connection')).toBe('close');
  });
});

describe('refused uploads', () => {
  it('a refused request whose declared body has not arrived closes the connection instead of reading the upload away', async () => {
    const r = await send(undefined, 'POST /form/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\nsome');
    expectProblem(r, 401, 'client_cert_required');
    expect(header(r.head, 'connection')).toBe('close');
    const token = await suite.client.getToken();
    // A small body keeps the connection (an agent refused once need not reconnect).
    const agent = tlsAgent(suite.fx, suite.fx.agents.p256);
    base.closers.push(() => agent.close());
    const small = await call(agent, `${suite.gw.url}/form/small`, { method: 'POST', headers: { authorization: `Bearer ${token}x` }, body: 'hi' });
    expect([small.status, small.json().code]).toEqual([401, 'token_invalid']);
    expect(small.headers.connection).toBe('keep-alive');
  });
});

describe('Authorization', () => {
  it('two Authorization lines are 400 request_malformed, whichever comes first (Node would keep the first only)', async () => {
    const token = await suite.client.getToken();
    for (const [a, b] of [[`Bearer ${token}`, 'Bearer junk'], ['Bearer junk', `Bearer ${token}`], [`Bearer ${token}`, `Bearer ${token}`]]) {
      const r = await send(suite.fx.agents.p256, `GET /form/auth HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${a}\r\nauthorization: ${b}\r\nConnection: close\r\n\r\n`);
      expectProblem(r, 400, 'request_malformed');
    }
    expect(suite.up.seen.some((s) => s.url === '/form/auth')).toBe(false);
  });
});

describe('methods', () => {
  it('a method no route takes (PROPFIND, M-SEARCH, TRACE) on a gated path: 405 with Allow, before identity', async () => {
    for (const method of ['PROPFIND', 'M-SEARCH', 'TRACE']) {
      const r = await send(undefined, `${method} /form/m HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expectProblem(r, 405, 'method_not_allowed');
      expect(header(r.head, 'allow'), method).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, QUERY');
    }
  });

  it('under P: PROPFIND on a gate endpoint is 405 with its Allow, on an unknown path 404', async () => {
    const known = await send(undefined, `PROPFIND ${P}/v1/challenge HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    expectProblem(known, 405, 'method_not_allowed');
    expect(header(known.head, 'allow')).toBe('POST');
    expectProblem(await send(undefined, `PROPFIND ${P}/nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`), 404, 'not_found');
  });

  it('QUERY without Content-Type: 400 request_malformed after identity and token (never a 500); with one it is proxied', async () => {
    expectProblem(await send(undefined, 'QUERY /form/q HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi'), 401, 'client_cert_required');
    const token = await suite.client.getToken();
    expectProblem(await send(suite.fx.agents.p256, `QUERY /form/q HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`), 400, 'request_malformed');
    const ok = await send(suite.fx.agents.p256, `QUERY /form/q2 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`);
    expect(ok.status).toBe(200);
    expect(suite.up.seen.find((s) => s.url === '/form/q2')?.method).toBe('QUERY');
  });
});
