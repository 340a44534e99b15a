/**
 * Property tests of the path rules (contract preamble) and the header hygiene (section 5)
 * against a real direct-mode gate (mTLS, real certificates) and a real recording upstream.
 *
 * Oracles, written here from the contract's words rather than from the gate's code:
 * - a path whose segments, after percent-decoding and removing `;` path parameters, include
 *   `.` or `..`, or that holds an encoded `/`, `\` or NUL (or bad percent-encoding) is 400
 *   `request_malformed` and never reaches the upstream; any other path reaches it byte-identical;
 * - a client-sent proxy header, in any letter case or `_` spelling, never reaches the upstream;
 *   every other header does, unchanged; `X-Forwarded-For` is the client's address.
 *
 * Seeded like http.fuzz.test.ts (`AG_FUZZ_SEED=<n>` picks another seed).
 */
import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintOf } from '../../src/identity/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { rawRequest } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const SEED = Number(process.env.AG_FUZZ_SEED ?? 20_251_213);
console.info(`[path-headers.fuzz] fast-check seed ${SEED} (rerun with AG_FUZZ_SEED=${SEED})`);
const run = (numRuns: number): fc.Parameters<unknown> => ({ seed: SEED, numRuns });

let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let token = '';
let seq = 0;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_LOG_LEVEL: 'info' }));
  token = (await gw.gate.tokens.issue('urn:agent:p256', thumbprintOf(new X509Certificate(fx.agents.p256.certPem).raw))).token;
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

/** GET `target` with a valid token and the extra header lines; returns the status and what the upstream saw. */
async function get(target: string, headerLines: [string, string][] = []) {
  const id = `q${++seq}`;
  const lines = [['x-fz', id], ...headerLines].map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const res = await rawRequest(gw.url, fx, fx.agents.p256, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n${lines}Connection: close\r\n\r\n`);
  return { res, seen: up.seen.find((s) => s.headers['x-fz'] === id) };
}

describe('path rules', () => {
  /** Pieces that build paths around dot segments, path parameters and encodings. */
  const PIECE = fc.constantFrom(
    'a', 'api', 'b.c', '...', '.a', 'a.', '.', '..', '%2e', '%2E', '%2e%2E', '.%2e', '%2E.',
    ';', ';x', ';jsessionid=1', ';a=b;c', '%3b', '%3B', '%3bx', '..;', '.;', '%2E%2e;', '%2e%3b', '..%3B', ';..', ';.',
    '%2f', '%2F', '%5c', '%5C', '%00', '%25', '%252e', '%255c', '%', '%zz', '%c3%a9', '%ff',
    '=', '~', '!', '$', "'", '(', ')', '*', '+', ',', '@', ':', '&', '-', '_', '%20',
  );
  const SEGMENT = fc.array(PIECE, { minLength: 0, maxLength: 4 }).map((p) => p.join(''));
  const TARGET = fc
    .tuple(fc.array(SEGMENT, { minLength: 1, maxLength: 5 }), fc.option(fc.constantFrom('a=1', 'x=..;/', 'p=%5c', 'q=%2f'), { freq: 4 }))
    .map(([segs, q]) => `/api/${segs.join('/')}${q ? `?${q}` : ''}`);

  /** The contract's verdict on a raw target: true when it must be refused. */
  function mustRefuse(target: string): boolean {
    const path = target.split('?')[0]!;
    if (/%(2f|5c|00)/i.test(path)) return true;
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return true;
    }
    return decoded.split('/').some((seg) => {
      const bare = seg.split(';')[0];
      return bare === '.' || bare === '..';
    });
  }

  it('refused with 400 request_malformed and never proxied exactly when a segment is a dot segment (parameters removed) or /, \\ or NUL is encoded; else proxied byte-identical', async () => {
    const tally = { refused: 0, proxied: 0 };
    await fc.assert(
      fc.asyncProperty(TARGET, async (target) => {
        const { res, seen } = await get(target);
        if (mustRefuse(target)) {
          tally.refused++;
          expect(res.status, `GET ${target}: ${res.head.split('\r\n')[0]}`).toBe(400);
          expect(res.head).toMatch(/content-type: application\/problem\+json/i);
          expect((JSON.parse(res.body) as { code: string }).code).toBe('request_malformed');
          expect(seen, `GET ${target} reached the upstream`).toBeUndefined();
        } else {
          tally.proxied++;
          expect(res.status, `GET ${target}: ${res.head.split('\r\n')[0]} ${res.body.slice(0, 200)}`).toBe(200);
          expect(seen?.url, `GET ${target}: the upstream must see the target unchanged`).toBe(target);
        }
      }),
      run(300),
    );
    console.info(`[path-headers.fuzz] paths: ${JSON.stringify(tally)}`);
    // Both verdicts must really have been exercised.
    expect(tally.refused).toBeGreaterThan(30);
    expect(tally.proxied).toBeGreaterThan(30);
  });

  it('the named attacks: ;-parameters around dot segments and encoded backslashes are refused', async () => {
    for (const target of ['/a/..;/b', '/a/.;/b', '/..;/admin', '/a/..;jsessionid=x/b', '/a/%2e%2e;/b', '/a/%2E%2e;/b', '/a/..%3b/b', '/a/..%3Bx/b', '/a/.%3b/b', '/a/%5c../b', '/a/%5Cb', '/a/..%5cb']) {
      const { res, seen } = await get(target);
      expect(res.status, target).toBe(400);
      expect(seen, target).toBeUndefined();
    }
    for (const target of ['/a;x/b', '/a/;/b', '/a/;../b', '/a/...;/b', '/a/b.;c/d', '/a/..a;/b']) {
      const { res, seen } = await get(target);
      expect(res.status, target).toBe(200);
      expect(seen?.url, target).toBe(target);
    }
  });
});

describe('header hygiene', () => {
  /** Client-sent proxy headers of section 5 (every `x-forwarded-*` name is one). */
  const PROXY_NAMES = [
    'forwarded', 'x-real-ip', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-client-cert',
    'x-forwarded-prefix', 'x-forwarded-server', 'x-forwarded-ssl', 'x-forwarded-anything', 'x-client-ip', 'true-client-ip',
    'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-original-forwarded-for', 'x-original-url', 'x-rewrite-url',
    'x-original-uri', 'client-cert', 'client-cert-chain', 'x-client-cert', 'x-ssl-client-cert', 'ssl-client-cert', 'x-ssl-cert',
  ];
  const isProxyName = (n: string) => {
    const k = n.toLowerCase().replace(/_/g, '-');
    return PROXY_NAMES.includes(k) || k.startsWith('x-forwarded-');
  };
  /** A spelling of `name`: each letter's case and each `-`/`_` chosen at random. */
  const spelled = (name: string) =>
    fc.array(fc.boolean(), { minLength: name.length * 2, maxLength: name.length * 2 }).map((bits) =>
      [...name].map((c, i) => (c === '-' ? (bits[i] ? '_' : '-') : bits[name.length + i] ? c.toUpperCase() : c)).join(''),
    );
  const proxyHeader = fc.constantFrom(...PROXY_NAMES).chain(spelled);
  const OTHER = ['x-app', 'x-request-id', 'accept', 'content-language', 'x-forwarded', 'forwarded-by', 'x-real', 'x-real-ipx', 'x-forwardedfor', 'client-certs', 'x-clientip', 'traceparent'];
  const otherHeader = fc.oneof(fc.constantFrom(...OTHER), fc.stringMatching(/^x-[a-z0-9]{1,8}$/)).filter((n) => !isProxyName(n) && !/^x-(agent|gate|fz)/.test(n));
  const value = fc.stringMatching(/^[A-Za-z0-9=;:,./ ]{1,24}$/).map((v) => v.trim()).filter((v) => v.length > 0);

  it('proxy headers in any spelling never reach the upstream; other headers arrive unchanged; X-Forwarded-For is the peer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(proxyHeader, value), { minLength: 1, maxLength: 6 }),
        fc.uniqueArray(fc.tuple(otherHeader, value), { maxLength: 4, selector: ([n]) => n.toLowerCase() }),
        fc.option(fc.tuple(fc.constantFrom('X-Forwarded-For', 'x-forwarded-for', 'X_FORWARDED_FOR'), value), { freq: 2 }),
        async (proxy, others, xff) => {
          const lines: [string, string][] = [...proxy, ...others, ...(xff ? [xff] : [])];
          const { res, seen } = await get('/api/headers', lines);
          expect(res.status, JSON.stringify(lines)).toBe(200);
          const h = seen!.headers;
          const leaked = Object.keys(h).filter((n) => isProxyName(n) && !((n === 'x-forwarded-for' && h[n] === '127.0.0.1') || (n === 'x-forwarded-proto' && h[n] === 'https')));
          expect(leaked, JSON.stringify(lines)).toEqual([]);
          expect(h['x-forwarded-for']).toBe('127.0.0.1');
          expect(h['x-forwarded-proto']).toBe('https');
          for (const [n, v] of others) expect(h[n.toLowerCase()], `${n} must arrive unchanged`).toBe(v);
        },
      ),
      run(150),
    );
  });
});
