/**
 * `Expect: 100-continue` (section 5: identity and token are checked before the body is read):
 * over raw TLS against a real gate (direct mode, real certificates) and the embedded plugin,
 * the client sends only the headers and reads what comes back first. A refusal must be the
 * first (and only) answer, never preceded by `HTTP/1.1 100`; a request that passes every check
 * not needing the body gets `100 Continue`, sends its body, then gets the real answer.
 */
import { connect } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildExampleApp } from '../../examples/embedded/app.js';
import { GateClient } from '../../src/client/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, TEST_LOG_DIR, testEnv, type RunningGate } from '../helpers/gate.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';
let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let embedded: FastifyInstance;
let embeddedUrl = '';
const clients: GateClient[] = [];

interface Exchange {
  /** Status line of the first answer the client read. */
  first: string;
  /** Whether the first answer was `100 Continue` (the body was sent after it). */
  continued: boolean;
  status: number;
  head: string;
  body: string;
}

/**
 * Sends `head` (request line and headers, without the blank line) over a fresh mTLS connection,
 * waits for the first answer, sends `body` only after a `100 Continue`, then reads to close.
 */
function expectExchange(baseUrl: string, who: KeyAndCert | undefined, head: string, body: string): Promise<Exchange> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem, servername: 'localhost' });
    let buf = Buffer.alloc(0);
    let first: string | undefined;
    let continued = false;
    s.setTimeout(8000, () => s.destroy(new Error(`no complete answer; read so far: ${JSON.stringify(buf.toString('latin1').slice(0, 300))}`)));
    s.on('secureConnect', () => s.write(`${head}\r\nConnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (first !== undefined) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      first = buf.subarray(0, buf.indexOf('\r\n')).toString('latin1');
      if (/^HTTP\/1\.1 100 /.test(first)) {
        continued = true;
        buf = buf.subarray(end + 4);
        s.write(body);
      }
    });
    s.on('error', reject);
    s.on('close', () => {
      const text = buf.toString('utf8');
      const i = text.indexOf('\r\n\r\n');
      const h = i === -1 ? text : text.slice(0, i);
      let b = i === -1 ? '' : text.slice(i + 4);
      if (/transfer-encoding: chunked/i.test(h)) b = b.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '');
      resolve({ first: first ?? '', continued, status: Number(h.split(' ')[1]), head: h, body: b });
    });
  });
}

function request(method: string, path: string, headers: Record<string, string>, body: string): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: localhost', 'Expect: 100-continue', `Content-Length: ${Buffer.byteLength(body)}`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return lines.join('\r\n');
}

const codeOf = (x: Exchange) => (JSON.parse(x.body) as { code?: string }).code;

/** A refusal answered first, with no 100 before it. */
function expectRefusedFirst(x: Exchange, status: number, code: string): void {
  expect(x.first, `first answer: ${x.first}`).not.toMatch(/^HTTP\/1\.1 100/);
  expect(x.continued).toBe(false);
  expect(x.status).toBe(status);
  expect(x.head).toMatch(/content-type: application\/problem\+json/i);
  expect(codeOf(x)).toBe(code);
}

async function tokenFor(baseUrl: string, who: KeyAndCert): Promise<string> {
  const c = new GateClient({ baseUrl, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c.getToken();
}

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_PROXY_MAX_BODY_BYTES: '1000' }));
  embedded = await buildExampleApp(testEnv(fx, { GATE_STORE: 'memory' }), {
    deps: { warn: () => {} },
    logger: { level: 'debug', stream: pino.destination({ dest: join(TEST_LOG_DIR, `expect-${process.pid}.log`), sync: true, append: true, mkdir: true }) },
  });
  await embedded.listen({ host: '127.0.0.1', port: 0 });
  const a = embedded.server.address();
  embeddedUrl = `https://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await embedded?.close();
  await gw?.close();
  await up?.close();
});

describe('direct mode: gated requests', () => {
  it('no token: the 401 token_missing is the first answer, no 100 before it, and nothing reaches the upstream', async () => {
    const before = up.seen.length;
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', '/api/upload', { 'content-type': 'text/plain' }, 'secret body'), 'secret body');
    expectRefusedFirst(x, 401, 'token_missing');
    expect(up.seen.length).toBe(before);
  });

  it('no client certificate: 401 client_cert_required first', async () => {
    const x = await expectExchange(gw.url, undefined, request('PUT', '/api/upload', {}, 'abc'), 'abc');
    expectRefusedFirst(x, 401, 'client_cert_required');
  });

  it('an invalid token, or another agent\'s token: refused first (401 token_invalid, 403 token_binding_mismatch)', async () => {
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', '/api/upload', { authorization: 'Bearer not.a.token' }, 'abc'), 'abc');
    expectRefusedFirst(x, 401, 'token_invalid');
    const other = await tokenFor(gw.url, fx.agents.other);
    const y = await expectExchange(gw.url, fx.agents.p256, request('POST', '/api/upload', { authorization: `Bearer ${other}` }, 'abc'), 'abc');
    expectRefusedFirst(y, 403, 'token_binding_mismatch');
  });

  it('a valid token but a declared length over GATE_PROXY_MAX_BODY_BYTES: 413 first, no 100', async () => {
    const token = await tokenFor(gw.url, fx.agents.p256);
    const body = 'x'.repeat(2000);
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', '/api/upload', { authorization: `Bearer ${token}` }, body), body);
    expectRefusedFirst(x, 413, 'body_too_large');
  });

  it('a valid token: 100 Continue first, then the body goes through and the upstream answers', async () => {
    const token = await tokenFor(gw.url, fx.agents.p256);
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', '/api/upload?e=1', { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, 'hello after continue'), 'hello after continue');
    expect(x.first).toMatch(/^HTTP\/1\.1 100 Continue/);
    expect(x.status).toBe(200);
    expect(x.head).toMatch(/x-upstream: yes/i);
    const seen = up.seen.find((s) => s.url === '/api/upload?e=1');
    expect(seen?.body.toString()).toBe('hello after continue');
    // Expect is hop-by-hop: the upstream never sees it.
    expect(seen?.headers.expect).toBeUndefined();
  });
});

describe('direct mode: POST P/v1/token', () => {
  const tokenBody = JSON.stringify({ challenge_id: 'A'.repeat(22), proof: 'a.b.c' });

  it('no client certificate: 401 client_cert_required first, no 100', async () => {
    const x = await expectExchange(gw.url, undefined, request('POST', `${P}/v1/token`, { 'content-type': 'application/json' }, tokenBody), tokenBody);
    expectRefusedFirst(x, 401, 'client_cert_required');
  });

  it('a certificate the gate does not trust: 403 client_cert_invalid first, no 100', async () => {
    const x = await expectExchange(gw.url, fx.agents.foreign, request('POST', `${P}/v1/token`, { 'content-type': 'application/json' }, tokenBody), tokenBody);
    expectRefusedFirst(x, 403, 'client_cert_invalid');
  });

  it('a valid identity but a media type the endpoint does not take: 415 first, no 100', async () => {
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', `${P}/v1/token`, { 'content-type': 'text/plain' }, tokenBody), tokenBody);
    expectRefusedFirst(x, 415, 'unsupported_media_type');
  });

  it('P/v1/challenge: a declared non-empty body of another type is 415 first, no 100 (no body need be read to know)', async () => {
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', `${P}/v1/challenge`, { 'content-type': 'text/plain' }, 'hi'), 'hi');
    expectRefusedFirst(x, 415, 'unsupported_media_type');
  });

  it('a valid identity: 100 first, then the body is judged (unknown challenge: 404)', async () => {
    const x = await expectExchange(gw.url, fx.agents.p256, request('POST', `${P}/v1/token`, { 'content-type': 'application/json' }, tokenBody), tokenBody);
    expect(x.first).toMatch(/^HTTP\/1\.1 100 Continue/);
    expect(x.status).toBeGreaterThanOrEqual(400);
    expect(['challenge_unknown', 'proof_invalid', 'request_malformed']).toContain(codeOf(x));
  });
});

describe('embedded plugin: a guarded route of the host application', () => {
  const thing = JSON.stringify({ name: 'widget' });

  it('no token: 401 token_missing first, no 100', async () => {
    const x = await expectExchange(embeddedUrl, fx.agents.p256, request('POST', '/things', { 'content-type': 'application/json' }, thing), thing);
    expectRefusedFirst(x, 401, 'token_missing');
  });

  it('no certificate on POST P/v1/token: 401 client_cert_required first, no 100', async () => {
    const body = JSON.stringify({ challenge_id: 'A'.repeat(22), proof: 'a.b.c' });
    const x = await expectExchange(embeddedUrl, undefined, request('POST', `${P}/v1/token`, { 'content-type': 'application/json' }, body), body);
    expectRefusedFirst(x, 401, 'client_cert_required');
  });

  it('a valid token: 100 first, then the route reads the body', async () => {
    const token = await tokenFor(embeddedUrl, fx.agents.p256);
    const x = await expectExchange(embeddedUrl, fx.agents.p256, request('POST', '/things', { 'content-type': 'application/json', authorization: `Bearer ${token}` }, thing), thing);
    expect(x.first).toMatch(/^HTTP\/1\.1 100 Continue/);
    expect(x.status).toBeLessThan(300);
    expect(x.body).toContain('widget');
  });
});
