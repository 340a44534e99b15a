/**
 * A real nginx (Debian's nginx + njs, the configuration `agent-gate nginx-config` renders) on
 * random loopback ports in front of the real gate in forwarded mode (PROTOCOL.md sections 6
 * and 12):
 * - the direct-mode flow passes through nginx unchanged (same client SDK, only the URL differs);
 * - spoofing is refused, one test per case, with headers nginx really signed: a capture relay
 *   between nginx and the gate records the raw requests, which are then replayed straight to
 *   the gate, edited per case, each followed by the unedited replay as a positive control;
 * - HMAC key rotation and reloads under a running client loop lose no request.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GateClient, GateClientError, type RawResponse } from '../../src/client/index.js';
import { canonicalString, certFromHeader, FWD_HEADERS, signCanonical } from '../../src/identity/forwarded-canonical.js';
import { thumbprintOf } from '../../src/identity/certificate.js';
import { createCa, createIntermediateCa, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { generateSigningJwk } from '../../src/tokens/keys.js';
import { nginxEscapeUriComponent } from '../../scripts/make-forwarded-vectors.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { forwardedTestEnv, startGate, type RunningGate } from '../helpers/gate.js';
import { send, tlsAgent, tlsExchange, type Sent, type TlsExchange } from '../helpers/http.js';
import { startOpensslOcsp, type OpensslOcsp } from '../helpers/openssl-ocsp.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import {
  capturedValues,
  ensureNginx,
  launchNginx,
  relaxEdgeLimits,
  rawUntilClose,
  removeTempDirs,
  renderTestConfig,
  sendRaw,
  serializeRequest,
  startCaptureRelay,
  startNginx,
  tempDir,
  writeKeyFile,
  type CaptureRelay,
  type CapturedRequest,
  type RunningNginx,
} from '../nginx/harness.js';

const P = '/.agent-gate';

type KeyFile = ReturnType<typeof writeKeyFile>;

let fx: Fixtures;
let up: RecordingUpstream;
let ocsp: OpensslOcsp;
let keyDir: string;
let K1: KeyFile;
let K2: KeyFile;
/** The main gate (k1 and k2, OCSP) behind `relay`, behind `nginx` (signing with k1). */
let gw: RunningGate;
let relay: CaptureRelay;
let nginx: RunningNginx;
/** Added to the main gate's clock. */
let clock = 0;
/** Valid when issued; revoked at the OCSP responder by the revocation test. */
let soonRevoked: KeyAndCert;
/** CA that only the "lax" nginx trusts, never the gate; and an agent it issued. */
let strangerCa: KeyAndCert;
let stranger: KeyAndCert;

const nginxes: RunningNginx[] = [];
const closers: (() => Promise<void>)[] = [];

/** Port of a gate or relay URL. */
function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** A dev gate in forwarded mode on plain HTTP, trusting 127.0.0.1 as its nginx, on the shared redis. */
async function forwardedGate(extra: Record<string, string>, now?: () => number): Promise<RunningGate> {
  const g = await startGate(forwardedTestEnv(fx, up.url, inject('redisUrl'), extra), now ? { now } : {});
  g.url = g.url.replace('https://', 'http://');
  let closed = false;
  const close = g.close;
  g.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  closers.push(() => g.close());
  return g;
}

const keysSpec = (...keys: [string, KeyFile][]) => keys.map(([kid, k]) => `${kid}:${k.b64}`).join(',');

/**
 * Renders the configuration into `dir` (listening on `port`, in front of `gateUrl`, signing
 * with `key` as `kid`); `patch` edits the rendered nginx.conf.
 */
async function render(dir: string, port: number, gateUrl: string, key: KeyFile, kid: string, extra: { clientCa?: string; patch?: (conf: string) => string } = {}): Promise<void> {
  const out = await renderTestConfig(fx, port, { gateUrl, clientCa: extra.clientCa, hmacKeyFile: key.file, kid, dir });
  expect(out.warnings).toEqual([]);
  if (extra.patch) writeFileSync(out.confPath, extra.patch(readFileSync(out.confPath, 'utf8')));
}

async function launch(gateUrl: string, key: KeyFile, kid: string, extra: { clientCa?: string; patch?: (conf: string) => string } = {}): Promise<RunningNginx> {
  const n = await launchNginx('gate', (dir, port) => render(dir, port, gateUrl, key, kid, extra));
  nginxes.push(n);
  return n;
}

function client(who: KeyAndCert, base = nginx.url, opts: { maxRetries?: number } = {}): GateClient {
  const c = new GateClient({ baseUrl: base, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost', ...opts });
  closers.push(() => c.close());
  return c;
}

function agent(who?: KeyAndCert): Agent {
  const a = tlsAgent(fx, who);
  closers.push(() => a.close());
  return a;
}


/** An answer through nginx (send) or replayed straight to a gate (replay). */
type Res = Pick<Sent, 'status' | 'headers' | 'text' | 'code'>;

function codeOf(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { code?: string }).code;
  } catch {
    return undefined;
  }
}

/** A counter of the gate's /metrics (0 when absent). */
async function metric(g: RunningGate, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const esc = `${name}{${labels}}`.replace(/[{}"=,.]/g, (c) => `\\${c}`);
  return Number(new RegExp(`^${esc} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
}
const fwdCount = (g: RunningGate, result: string) => metric(g, 'agent_gate_forwarded_verifications_total', `result="${result}"`);

/** The one value of a forwarded header in a capture (asserts it is there exactly once). */
function fwd(req: CapturedRequest, name: (typeof FWD_HEADERS)[number]): string {
  const values = capturedValues(req, name);
  expect(values, `${name} exactly once`).toHaveLength(1);
  return values[0]!;
}

/** The signature the gate expects for `req` (as captured or edited) under `secret`. */
function expectedSig(req: Pick<CapturedRequest, 'method' | 'target' | 'headers'>, secret: Buffer): string {
  const get = (n: string) => req.headers.find(([k]) => k.toLowerCase() === n)![1];
  const cert = get('x-gate-fwd-cert');
  return signCanonical(
    secret,
    canonicalString({
      kid: get('x-gate-fwd-kid'),
      ts: get('x-gate-fwd-ts'),
      id: get('x-gate-fwd-id'),
      method: req.method,
      requestUri: req.target,
      host: get('x-gate-fwd-host'),
      addr: get('x-gate-fwd-addr'),
      verify: get('x-gate-fwd-verify'),
      thumbprint: cert === '-' ? '-' : certFromHeader(cert)!.thumbprint,
    }),
  );
}

/** An edit of a captured request: method, target, header values (by lowercase name), removals, additions. */
interface Edit {
  method?: string;
  target?: string;
  set?: Record<string, string>;
  remove?: string[];
  add?: [string, string][];
  /** Re-sign the edited request with this secret (as an nginx holding it would have). */
  resign?: Buffer;
}

function edited(req: CapturedRequest, e: Edit): Pick<CapturedRequest, 'method' | 'target' | 'headers' | 'body'> {
  const headers = req.headers
    .filter(([n]) => !(e.remove ?? []).includes(n.toLowerCase()))
    .map(([n, v]): [string, string] => [n, e.set?.[n.toLowerCase()] ?? v]);
  headers.push(...(e.add ?? []));
  const out = { method: e.method ?? req.method, target: e.target ?? req.target, headers, body: req.body };
  if (e.resign) {
    const sig = expectedSig(out, e.resign);
    out.headers = out.headers.map(([n, v]): [string, string] => [n, n.toLowerCase() === 'x-gate-fwd-sig' ? sig : v]);
  }
  return out;
}

/** Sends a captured request (edited) straight to `port` (default: the main gate), bypassing nginx. */
async function replay(req: CapturedRequest, e: Edit = {}, port = portOf(gw.url)): Promise<Res> {
  const r = await sendRaw(port, serializeRequest(edited(req, e)));
  return { status: r.status, headers: r.headers, text: r.text, code: codeOf(r.text) };
}

/** Runs `go` (one request through nginx) with the relay holding: returns what nginx sent. */
async function capture(go: () => Promise<Res>): Promise<CapturedRequest> {
  const before = relay.captured.length;
  relay.hold = true;
  let res: Res;
  try {
    res = await go();
  } finally {
    relay.hold = false;
  }
  expect([res.status, res.text]).toEqual([200, '{"held":true}']);
  expect(relay.captured.length).toBe(before + 1);
  const req = relay.captured.at(-1)!;
  expect(req.held).toBe(true);
  return req;
}

const tokens = new Map<KeyAndCert, string>();
async function tokenOf(who: KeyAndCert): Promise<string> {
  if (!tokens.has(who)) tokens.set(who, await client(who).getToken());
  return tokens.get(who)!;
}

/** A gated GET by `who` through nginx, captured and not forwarded: nginx's real signature, unused id. */
async function capturedGet(who: KeyAndCert, path = '/api/held?x=1'): Promise<CapturedRequest> {
  const token = await tokenOf(who);
  const a = agent(who);
  return capture(() => send(a, `${nginx.url}${path}`, { headers: { authorization: `Bearer ${token}` } }));
}

/** The captured request, unedited, straight to the gate: accepted and proxied (the positive control). */
async function expectAccepted(req: CapturedRequest, agentId: string): Promise<void> {
  const seen = up.seen.length;
  const r = await replay(req);
  expect(r.status, r.text).toBe(200);
  expect(JSON.parse(r.text)).toMatchObject({ method: req.method, url: req.target, agent_id: agentId });
  expect(up.seen.length).toBe(seen + 1);
}

/** The edited replay is refused with forwarded_signature_invalid, counted as `result`; nothing reaches the upstream. */
async function expectRefused(req: CapturedRequest, e: Edit, result: string, status = 403): Promise<void> {
  const before = await fwdCount(gw, result);
  const seen = up.seen.length;
  const r = await replay(req, e);
  // (A HEAD answer has no body to carry the code.)
  expect([r.status, r.code], r.text).toEqual([status, e.method === 'HEAD' ? undefined : 'forwarded_signature_invalid']);
  expect(r.headers['content-type']).toBe('application/problem+json');
  expect(await fwdCount(gw, result)).toBe(before + 1);
  expect(up.seen.length).toBe(seen);
}

/** One request on a fresh TLS connection to nginx presenting `who`, resuming `session` if given. */
function nginxExchange(port: number, who: KeyAndCert, raw: string, session?: Buffer): Promise<TlsExchange> {
  return tlsExchange({ host: '127.0.0.1', port }, { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem, session }, raw);
}

const thumb = (who: KeyAndCert) => thumbprintOf(new X509Certificate(who.certPem).raw);
/** `$ssl_client_escaped_cert` of `who`. */
const escapedCert = (who: KeyAndCert) => nginxEscapeUriComponent(new X509Certificate(who.certPem).toString());

beforeAll(async () => {
  ensureNginx();
  fx = await makeFixtures();
  up = await startUpstream();
  keyDir = tempDir('keys');
  K1 = writeKeyFile(keyDir);
  K2 = writeKeyFile(keyDir);
  strangerCa = await createCa({ alg: 'ec-p256', commonName: 'CA only nginx trusts' });
  [stranger, soonRevoked] = await Promise.all([issueAgentCert(strangerCa, 'stranger', { alg: 'ec-p256' }), issueAgentCert(fx.ca, 'soon-revoked', { alg: 'ec-p256' })]);
  ocsp = await startOpensslOcsp(fx.ca);
  for (const a of [...Object.values(fx.agents), soonRevoked]) ocsp.add(a);
  gw = await forwardedGate(
    {
      GATE_FWD_HMAC_KEYS: keysSpec(['k1', K1], ['k2', K2]),
      GATE_REVOCATION: 'ocsp',
      GATE_OCSP_URL: ocsp.url,
      GATE_REVOCATION_FAIL: 'closed',
      // A revocation is seen within a second.
      GATE_REVOCATION_MAX_STALE_S: '1',
    },
    () => Date.now() + clock,
  );
  relay = await startCaptureRelay(portOf(gw.url));
  nginx = await launch(relay.url, K1, 'k1', { patch: relaxEdgeLimits });
}, 120_000);

afterAll(async () => {
  // nginx first (by pid, workers included), whatever happened above.
  await Promise.allSettled(nginxes.map((n) => n.stop()));
  for (const c of closers.reverse()) await c().catch(() => {});
  await relay?.close();
  await ocsp?.close();
  await up?.close();
  removeTempDirs();
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
});

describe('through nginx (the contract itself: test/conformance/nginx.test.ts)', () => {
  for (const [kind, id] of [
    ['ed25519', 'urn:agent:ed'],
    ['p256', 'urn:agent:p256'],
    ['rsa', 'urn:agent:rsa'],
  ] as const) {
    it(`${kind} agent: nginx signs the flow's requests with k1 for this very certificate`, async () => {
      const who = fx.agents[kind];
      const c = client(who);
      const res = await c.request('/api/things?q=1', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
      expect(res.status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.method).toBe('POST');
      expect(seen.url).toBe('/api/things?q=1');
      expect(seen.body.toString()).toBe('hello');
      expect(seen.headers['x-agent-id']).toBe(id);
      expect(seen.headers['x-agent-thumbprint']).toBe(c.thumbprint);
      expect(seen.headers['x-agent-token-id']).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(seen.headers.authorization).toBeUndefined();
      expect(Object.keys(seen.headers).filter((h) => /^x[-_]gate[-_]/.test(h))).toEqual([]);
      // Signed by nginx with k1 for this very certificate.
      const sent = relay.captured.at(-1)!;
      expect(sent.target).toBe('/api/things?q=1');
      expect(fwd(sent, 'x-gate-fwd-kid')).toBe('k1');
      expect(fwd(sent, 'x-gate-fwd-verify')).toBe('SUCCESS');
      expect(certFromHeader(fwd(sent, 'x-gate-fwd-cert'))!.thumbprint).toBe(c.thumbprint);
      expect(fwd(sent, 'x-gate-fwd-sig')).toBe(expectedSig(sent, K1.secret));
    });
  }

  describe('agent certificate issued by an intermediate CA', () => {
    let inter: KeyAndCert;
    let chained: KeyAndCert;
    beforeAll(async () => {
      inter = await createIntermediateCa(fx.ca, { commonName: 'agent-gate test intermediate CA' });
      chained = await issueAgentCert(inter, 'chained', { alg: 'ec-p256' });
    });

    /**
     * A gate without revocation checks (the OCSP responder here answers for the root's
     * certificates only) trusting `caFile`, behind its own nginx with the same client CA; the
     * flow by an agent presenting leaf + intermediate.
     */
    async function chainedFlow(caFile: string): Promise<{ res: unknown; n: RunningNginx; g: RunningGate }> {
      const g = await forwardedGate({ GATE_FWD_HMAC_KEYS: keysSpec(['k1', K1]), GATE_CLIENT_CA: caFile });
      const n = await launch(g.url, K1, 'k1', { clientCa: caFile, patch: relaxEdgeLimits });
      const c = client({ ...chained, certPem: chained.certPem + inter.certPem }, n.url);
      const res = await c.request('/api/chained?x=1').catch((err: unknown) => err);
      return { res, n, g };
    }

    function expectChainedSeen(res: unknown): void {
      expect(res, 'the flow through nginx (direct mode: 200)').not.toBeInstanceOf(Error);
      expect((res as RawResponse).status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe('/api/chained?x=1');
      expect(seen.headers['x-agent-id']).toBe('urn:agent:chained');
      expect(seen.headers['x-agent-thumbprint']).toBe(thumb(chained));
    }

    it('leaf + intermediate presented, gate trusting only the root: refused (documented limit of forwarded mode)', async () => {
      // nginx verifies leaf + intermediate against the root, but $ssl_client_escaped_cert
      // carries the leaf only: a gate whose bundle lacks the intermediate cannot build the
      // chain and fails closed. HARDENING.md (nginx-fronted) says to list intermediates in
      // GATE_CLIENT_CA; the next test shows that works.
      const { res, n, g } = await chainedFlow(fx.caFile);
      await waitFor(() => n.accessLog().length > 0, 10_000, 'the access log line');
      expect(n.accessLog()[0]).toMatchObject({ request_uri: `${P}/v1/challenge`, ssl_client_verify: 'SUCCESS', upstream_addr: new URL(g.url).host });
      expect(res).toMatchObject({ code: 'client_cert_invalid', status: 403 });
    });

    it('with the intermediate in GATE_CLIENT_CA (and nginx\'s --client-ca) the flow passes', async () => {
      const bundle = join(keyDir, 'root-and-intermediate.pem');
      writeFileSync(bundle, fx.ca.certPem + inter.certPem);
      expectChainedSeen((await chainedFlow(bundle)).res);
    });
  });

  it('identity survives TLS session resumption at nginx', async () => {
    const who = fx.agents.p256;
    const token = await tokenOf(who);
    const first = await nginxExchange(nginx.port, who, `GET /api/resumed?n=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    expect([first.status, first.reused]).toEqual([200, false]);
    expect(first.session).toBeDefined();
    const second = await nginxExchange(nginx.port, who, `GET /api/resumed?n=2 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`, first.session);
    expect([second.status, second.reused], second.body).toEqual([200, true]);
    expect(up.seen.at(-1)!.headers['x-agent-id']).toBe('urn:agent:p256');
    const sent = relay.captured.at(-1)!;
    expect(sent.target).toBe('/api/resumed?n=2');
    expect(fwd(sent, 'x-gate-fwd-cert')).toBe(escapedCert(who));
    expect(fwd(sent, 'x-gate-fwd-verify')).toBe('SUCCESS');
  });

  it('spoofed inbound identity headers never reach the upstream', async () => {
    const res = await client(fx.agents.p256).request('/api/spoof', { headers: { 'x-agent-id': 'urn:agent:admin', 'X-Agent-Thumbprint': 'forged', 'x-gate-anything': '1' } });
    expect(res.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.headers['x-agent-id']).toBe('urn:agent:p256');
    expect(seen.headers['x-agent-thumbprint']).toBe(thumb(fx.agents.p256));
    expect(seen.headers['x-gate-anything']).toBeUndefined();
  });

  it('client-sent proxy headers never reach the upstream; X-Forwarded-For is the address nginx signed', async () => {
    const spoof = { 'X-Forwarded-For': '6.6.6.6', 'X-Real-IP': '6.6.6.6', Forwarded: 'for=6.6.6.6', 'X-Forwarded-Host': 'admin.internal', 'X-Forwarded-Client-Cert': 'Hash=abc;URI=spiffe://x/admin' };
    const res = await client(fx.agents.p256).request('/api/xff', { headers: spoof });
    expect(res.status).toBe(200);
    const sent = relay.captured.at(-1)!;
    const seen = up.seen.at(-1)!;
    expect(seen.headers['x-forwarded-for']).toBe(fwd(sent, 'x-gate-fwd-addr'));
    for (const name of ['x-real-ip', 'forwarded', 'x-forwarded-host', 'x-forwarded-client-cert']) expect(seen.headers[name], name).toBeUndefined();
    expect(JSON.stringify(seen.headers)).not.toContain('6.6.6.6');
  });
});

/**
 * A request line nginx accepts but cannot sign as the gate will read it (section 6): refused by
 * nginx before the signature, so no one without a certificate can make the gate count a bad
 * forwarded signature (the critical alert AgentGateForwardedSignatureInvalid).
 */
describe('request lines nginx refuses before signing', () => {
  const ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, QUERY';
  const line = (start: string) => `${start} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;

  it('not origin-form: 400 request_malformed; a method the gate does not proxy on a gated path: 405 with Allow; the gate never sees either', async () => {
    const before = { badSig: await fwdCount(gw, 'bad_signature'), relayed: relay.captured.length, proxied: up.seen.length };
    const seen: [string, number, string | undefined][] = [];
    for (const start of ['GET http://localhost?q=1', 'GET http://localhost/api/x', 'GET ?q=1', 'OPTIONS *', `GET http://localhost${P}/v1/challenge`, `M-SEARCH ${P}/v1/token`, 'M-SEARCH /x', 'GET_X /x', 'PROPFIND /q', 'TRACE /x']) {
      const r = await rawUntilClose(nginx.port, { ca: fx.ca.certPem }, line(start));
      seen.push([start, r.status, codeOf(r.body)]);
      expect(r.headers['content-type'], start).toBe('application/problem+json');
      // nginx's own refusals carry the refusal id in X-Agent-Gate-Refusal, as the gate's do.
      expect(r.headers['x-agent-gate-refusal'], start).toBe(/"instance":"urn:agent-gate:refusal:([A-Za-z0-9]+)"/.exec(r.body)?.[1]);
      if (r.status === 405) expect(r.headers.allow).toBe(ALLOW);
    }
    expect(seen).toEqual([
      ['GET http://localhost?q=1', 400, 'request_malformed'],
      ['GET http://localhost/api/x', 400, 'request_malformed'],
      ['GET ?q=1', 400, 'request_malformed'],
      ['OPTIONS *', 400, 'request_malformed'],
      [`GET http://localhost${P}/v1/challenge`, 400, 'request_malformed'],
      [`M-SEARCH ${P}/v1/token`, 400, 'request_malformed'],
      ['M-SEARCH /x', 405, 'method_not_allowed'],
      ['GET_X /x', 405, 'method_not_allowed'],
      ['PROPFIND /q', 405, 'method_not_allowed'],
      ['TRACE /x', 405, 'method_not_allowed'],
    ]);
    expect({ badSig: await fwdCount(gw, 'bad_signature'), relayed: relay.captured.length, proxied: up.seen.length }).toEqual(before);
  });

  it("the gate's own endpoints keep the gate's answers to other methods (nginx's 405 is for gated paths only)", async () => {
    const before = relay.captured.length;
    const r = await rawUntilClose(nginx.port, { ca: fx.ca.certPem }, line(`PROPFIND ${P}/healthz`));
    expect(relay.captured.length).toBe(before + 1);
    expect(r.headers.allow).not.toBe(ALLOW);
  });
});

describe('upstream answer headers meant for nginx', () => {
  it("passes the upstream's X-Accel-* headers (relayed by the gate) to the client; nginx acts on none", async () => {
    const accel = { 'x-accel-redirect': '/other-path', 'x-accel-expires': '0', 'x-accel-buffering': 'no', 'x-accel-limit-rate': '1', 'x-accel-charset': 'koi8-r' };
    up.reply = (s) => (s.url.startsWith('/accel') ? { status: 200, headers: { ...accel, 'content-type': 'text/plain' }, body: 'upstream body' } : undefined);
    try {
      const c = client(fx.agents.p256);
      await c.getToken();
      const badSig = await fwdCount(gw, 'bad_signature');
      const before = relay.captured.length;
      const r = await c.request('/accel-f');
      expect(r.status).toBe(200);
      expect(Object.fromEntries(Object.keys(accel).map((h) => [h, r.headers[h]]))).toEqual(accel);
      expect([r.body.toString(), relay.captured.length - before, (await fwdCount(gw, 'bad_signature')) - badSig]).toEqual(['upstream body', 1, 0]);
    } finally {
      up.reply = undefined;
    }
  });
});

describe('spoofing refused (nginx-signed headers, replayed straight to the gate)', () => {
  it('client-sent x-gate-fwd-* headers are overwritten by nginx: the gate sees nginx\'s', async () => {
    const now = String(Math.floor(Date.now() / 1000));
    const forged: Record<string, string | string[]> = {
      'x-gate-fwd-kid': 'k2',
      'x-gate-fwd-ts': now,
      'x-gate-fwd-id': 'f'.repeat(32),
      'x-gate-fwd-host': 'evil.test',
      'x-gate-fwd-addr': '10.9.8.7',
      'x-gate-fwd-verify': 'SUCCESS',
      // Claims to be p256 while presenting another certificate (or none).
      'x-gate-fwd-cert': escapedCert(fx.agents.p256),
      'x-gate-fwd-sig': ['forged-sig-1', 'forged-sig-2'],
      'x_gate_fwd_cert': 'underscore-variant',
      'x_gate_fwd_verify': 'underscore-variant',
    };
    const leaked = /evil\.test|10\.9\.8\.7|forged-sig|f{32}|underscore-variant/;

    // An agent with a certificate of its own: nginx signs *its* certificate.
    const token = await tokenOf(fx.agents.other);
    const res = await send(agent(fx.agents.other), `${nginx.url}/api/forged`, { headers: { ...forged, authorization: `Bearer ${token}` } });
    expect(res.status, res.text).toBe(200);
    expect(up.seen.at(-1)!.headers['x-agent-id']).toBe('urn:agent:other');
    const sent = relay.captured.at(-1)!;
    expect(sent.target).toBe('/api/forged');
    expect(fwd(sent, 'x-gate-fwd-kid')).toBe('k1');
    expect(fwd(sent, 'x-gate-fwd-host')).toBe('127.0.0.1');
    expect(fwd(sent, 'x-gate-fwd-addr')).toBe('127.0.0.1');
    expect(fwd(sent, 'x-gate-fwd-verify')).toBe('SUCCESS');
    expect(fwd(sent, 'x-gate-fwd-cert')).toBe(escapedCert(fx.agents.other));
    expect(fwd(sent, 'x-gate-fwd-sig')).toBe(expectedSig(sent, K1.secret));
    expect(sent.headers.filter(([n]) => /^x_gate/i.test(n))).toEqual([]);
    expect(sent.raw.toString('latin1')).not.toMatch(leaked);

    // Without a certificate: the forged "p256" identity is replaced by nginx's NONE / "-".
    const noCert = await send(agent(), `${nginx.url}${P}/v1/challenge`, { method: 'POST', headers: forged });
    expect([noCert.status, noCert.code]).toEqual([401, 'client_cert_required']);
    const sent2 = relay.captured.at(-1)!;
    expect([fwd(sent2, 'x-gate-fwd-verify'), fwd(sent2, 'x-gate-fwd-cert')]).toEqual(['NONE', '-']);
    expect(sent2.raw.toString('latin1')).not.toMatch(leaked);
  });

  it('straight to the gate, forged headers without a signature: 401', async () => {
    const req = await capturedGet(fx.agents.other);
    await expectRefused(req, { remove: ['x-gate-fwd-sig'] }, 'missing', 401);
    // A forgery made from scratch: the headers an attacker would send, claiming p256.
    await expectRefused(req, { set: { 'x-gate-fwd-cert': escapedCert(fx.agents.p256) }, remove: ['x-gate-fwd-sig'] }, 'missing', 401);
    // The signature twice (nginx's and another): not exactly once.
    await expectRefused(req, { add: [['x-gate-fwd-sig', 'A'.repeat(43)]] }, 'missing', 401);
    await expectAccepted(req, 'urn:agent:other');
  });

  it('straight to the gate, forged headers with a wrong signature: 403', async () => {
    const req = await capturedGet(fx.agents.other);
    const other = await capturedGet(fx.agents.other, '/api/other');
    const sig = fwd(req, 'x-gate-fwd-sig');
    // Claims p256, signed with a key the gate does not have.
    await expectRefused(req, { set: { 'x-gate-fwd-cert': escapedCert(fx.agents.p256) }, resign: writeKeyFile(keyDir).secret }, 'bad_signature');
    // nginx's signature of another request.
    await expectRefused(req, { set: { 'x-gate-fwd-sig': fwd(other, 'x-gate-fwd-sig') } }, 'bad_signature');
    // nginx's signature, one character changed; and empty.
    await expectRefused(req, { set: { 'x-gate-fwd-sig': (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1) } }, 'bad_signature');
    await expectRefused(req, { set: { 'x-gate-fwd-sig': '' } }, 'bad_signature');
    await expectAccepted(req, 'urn:agent:other');
    await expectAccepted(other, 'urn:agent:other');
  });

  it('valid headers replayed as they are: 403 (replayed), counted', async () => {
    const req = await capturedGet(fx.agents.p256);
    await expectAccepted(req, 'urn:agent:p256');
    const replays = await metric(gw, 'agent_gate_replays_detected_total', 'kind="forwarded"');
    await expectRefused(req, {}, 'replayed');
    expect(await metric(gw, 'agent_gate_replays_detected_total', 'kind="forwarded"')).toBe(replays + 1);
    // Also a request the gate has already served through nginx.
    expect((await client(fx.agents.p256).request('/api/served')).status).toBe(200);
    const served = relay.captured.at(-1)!;
    expect([served.target, served.held]).toEqual(['/api/served', false]);
    await expectRefused(served, {}, 'replayed');
  });

  it('valid headers replayed after the skew window: 403 (stale)', async () => {
    const req = await capturedGet(fx.agents.p256);
    expect(Math.abs(Number(fwd(req, 'x-gate-fwd-ts')) - Date.now() / 1000)).toBeLessThan(5);
    try {
      // GATE_FWD_MAX_SKEW_S is 30: the gate's clock 31 s later (now - ts >= 31 whatever the
      // fraction of the second ts was cut from), then 35 s earlier (ts - now > 30 as long as
      // this replay comes within 5 s of the capture).
      clock = 31_000;
      await expectRefused(req, {}, 'stale');
      clock = -35_000;
      await expectRefused(req, {}, 'stale');
    } finally {
      clock = 0;
    }
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('valid headers replayed with another method: 403', async () => {
    const req = await capturedGet(fx.agents.p256);
    await expectRefused(req, { method: 'POST', add: [['content-type', 'application/json']] }, 'bad_signature');
    await expectRefused(req, { method: 'DELETE' }, 'bad_signature');
    await expectRefused(req, { method: 'HEAD' }, 'bad_signature');
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('a replay the gate\'s HTTP parser refuses (lowercase method) is still a contract error: 400 request_malformed', async () => {
    const req = await capturedGet(fx.agents.p256);
    const seen = up.seen.length;
    const r = await replay(req, { method: 'get' });
    expect(r.status).toBe(400);
    expect(up.seen.length).toBe(seen);
    // Section 9: every error is application/problem+json.
    expect([r.headers['content-type'], r.code], r.text).toEqual(['application/problem+json', 'request_malformed']);
  });

  it('valid headers replayed with another path: 403', async () => {
    const req = await capturedGet(fx.agents.p256, '/api/held?x=1');
    for (const target of ['/api/admin?x=1', '/api/held?x=2', '/api/held', '/api/held?x=1&y=2', '/API/held?x=1', '/api/%68eld?x=1']) {
      await expectRefused(req, { target }, 'bad_signature');
    }
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('valid headers replayed with another host: 403', async () => {
    const req = await capturedGet(fx.agents.p256);
    expect(capturedValues(req, 'host')).toEqual(['127.0.0.1']);
    // Host changed (the signed host no longer matches it), and both changed (signature).
    await expectRefused(req, { set: { host: 'other.test' } }, 'bad_signature');
    await expectRefused(req, { set: { host: 'other.test', 'x-gate-fwd-host': 'other.test' } }, 'bad_signature');
    await expectRefused(req, { set: { host: 'localhost', 'x-gate-fwd-host': 'localhost' } }, 'bad_signature');
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('unknown kid: 403', async () => {
    const req = await capturedGet(fx.agents.p256);
    const unknown = await fwdCount(gw, 'unknown_kid');
    await expectRefused(req, { set: { 'x-gate-fwd-kid': 'k9' } }, 'unknown_kid');
    // Correctly signed under a kid the gate does not know.
    await expectRefused(req, { set: { 'x-gate-fwd-kid': 'k9' }, resign: writeKeyFile(keyDir).secret }, 'unknown_kid');
    // A known kid, but the signature is k1's.
    await expectRefused(req, { set: { 'x-gate-fwd-kid': 'k2' } }, 'bad_signature');
    expect(await fwdCount(gw, 'unknown_kid')).toBe(unknown + 2);
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('tampered certificate header: 403', async () => {
    const req = await capturedGet(fx.agents.other);
    const cert = fwd(req, 'x-gate-fwd-cert');
    // Another agent's certificate, valid and trusted.
    await expectRefused(req, { set: { 'x-gate-fwd-cert': escapedCert(fx.agents.p256) } }, 'bad_signature');
    // One base64 character of the certificate changed (a different DER, or no certificate at all).
    const i = cert.indexOf('MII') + 40;
    const flipped = cert.slice(0, i) + (cert[i] === 'A' ? 'B' : 'A') + cert.slice(i + 1);
    await expectRefused(req, { set: { 'x-gate-fwd-cert': flipped } }, 'bad_signature');
    await expectRefused(req, { set: { 'x-gate-fwd-cert': '-' } }, 'bad_signature');
    await expectRefused(req, { set: { 'x-gate-fwd-cert': 'not-a-certificate' } }, 'bad_signature');
    await expectAccepted(req, 'urn:agent:other');
  });

  it('verify not SUCCESS: 403 when edited; the contract codes when (re-)signed', async () => {
    const req = await capturedGet(fx.agents.p256);
    for (const verify of ['FAILED:certificate has expired', 'NONE', 'success']) {
      await expectRefused(req, { set: { 'x-gate-fwd-verify': verify } }, 'bad_signature');
    }
    // Signed (an nginx that forwards such requests): the certificate is refused as in direct mode.
    const ok = await fwdCount(gw, 'ok');
    // Each with an id of its own: these pass the signature check, so their ids are used up.
    const id = () => randomBytes(16).toString('hex');
    const failed = await replay(req, { set: { 'x-gate-fwd-verify': 'FAILED:certificate has expired', 'x-gate-fwd-id': id() }, resign: K1.secret });
    expect([failed.status, failed.code]).toEqual([403, 'client_cert_invalid']);
    const none = await replay(req, { set: { 'x-gate-fwd-verify': 'NONE', 'x-gate-fwd-id': id() }, resign: K1.secret });
    expect([none.status, none.code]).toEqual([401, 'client_cert_required']);
    expect(await fwdCount(gw, 'ok')).toBe(ok + 2);
    await expectAccepted(req, 'urn:agent:p256');
  });

  it('a revoked certificate: 403 client_cert_revoked on challenge, token and gated requests', async () => {
    const c = client(soonRevoked);
    const token = await c.getToken();
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    ocsp.revoke(soonRevoked);
    const a = agent(soonRevoked);
    // The gate's OCSP cache lasts at most 1 s here (GATE_REVOCATION_MAX_STALE_S).
    await waitFor(async () => (await send(a, `${nginx.url}/api/after`, { headers: { authorization: `Bearer ${token}` } })).status === 403, 10_000, 'revocation seen through nginx');
    const ok = await fwdCount(gw, 'ok');
    const gated = await send(a, `${nginx.url}/api/after`, { headers: { authorization: `Bearer ${token}` } });
    expect([gated.status, gated.code]).toEqual([403, 'client_cert_revoked']);
    const chRes = await send(a, `${nginx.url}${P}/v1/challenge`, { method: 'POST' });
    expect([chRes.status, chRes.code]).toEqual([403, 'client_cert_revoked']);
    const tokRes = await c.submitProof({ challenge_id: ch.challenge_id, proof });
    expect([tokRes.status, codeOf(tokRes.body.toString())]).toEqual([403, 'client_cert_revoked']);
    await expect(client(soonRevoked).fetchToken()).rejects.toMatchObject({ code: 'client_cert_revoked', status: 403 });
    // nginx vouched for the certificate and the signatures were good: the refusal is the revocation's.
    expect(await fwdCount(gw, 'ok')).toBeGreaterThanOrEqual(ok + 3);
    const sent = relay.captured.at(-1)!;
    expect(fwd(sent, 'x-gate-fwd-verify')).toBe('SUCCESS');
    expect(certFromHeader(fwd(sent, 'x-gate-fwd-cert'))!.thumbprint).toBe(thumb(soonRevoked));
    expect(await metric(gw, 'agent_gate_revocation_checks_total', 'method="ocsp",result="revoked"')).toBeGreaterThanOrEqual(1);
  });

  describe('an nginx that accepts more than the gate (trusts another CA, forwards failed verifications)', () => {
    let lax: RunningNginx;
    beforeAll(async () => {
      const bundle = join(keyDir, 'lax-ca.pem');
      writeFileSync(bundle, fx.ca.certPem + strangerCa.certPem);
      lax = await launch(relay.url, K1, 'k1', {
        clientCa: bundle,
        patch: (conf) => {
          expect(conf).toContain('ssl_verify_client optional;');
          return relaxEdgeLimits(conf).replace('ssl_verify_client optional;', 'ssl_verify_client optional_no_ca;');
        },
      });
    });

    it('a certificate the gate\'s trust bundle does not accept, though the signature is good: 403 client_cert_invalid', async () => {
      const ok = await fwdCount(gw, 'ok');
      const res = await send(agent(stranger), `${lax.url}${P}/v1/challenge`, { method: 'POST' });
      expect([res.status, res.code], res.text).toEqual([403, 'client_cert_invalid']);
      expect(await fwdCount(gw, 'ok')).toBe(ok + 1);
      const sent = relay.captured.at(-1)!;
      expect(fwd(sent, 'x-gate-fwd-verify')).toBe('SUCCESS');
      expect(fwd(sent, 'x-gate-fwd-cert')).toBe(escapedCert(stranger));
      expect(fwd(sent, 'x-gate-fwd-sig')).toBe(expectedSig(sent, K1.secret));
      await expect(client(stranger, lax.url).fetchToken()).rejects.toMatchObject({ code: 'client_cert_invalid', status: 403 });
      // The same nginx still serves agents the gate trusts.
      expect((await client(fx.agents.p256, lax.url).request('/api/lax')).status).toBe(200);
    });

    it('verify FAILED:... signed by nginx: 403 client_cert_invalid', async () => {
      // optional_no_ca forwards a certificate of an unknown issuer with verify FAILED:...
      const ok = await fwdCount(gw, 'ok');
      const res = await send(agent(fx.agents.foreign), `${lax.url}${P}/v1/challenge`, { method: 'POST' });
      expect([res.status, res.code], res.text).toEqual([403, 'client_cert_invalid']);
      expect(await fwdCount(gw, 'ok')).toBe(ok + 1);
      const sent = relay.captured.at(-1)!;
      expect(fwd(sent, 'x-gate-fwd-verify')).toMatch(/^FAILED:/);
      expect(fwd(sent, 'x-gate-fwd-cert')).toBe(escapedCert(fx.agents.foreign));
      expect(fwd(sent, 'x-gate-fwd-sig')).toBe(expectedSig(sent, K1.secret));
      // (Any other verification failure, e.g. an expired certificate, nginx refuses itself.)
      const before = relay.captured.length;
      const expired = await send(agent(fx.agents.expired), `${lax.url}${P}/v1/challenge`, { method: 'POST' });
      expect([expired.status, expired.code]).toEqual([403, 'client_cert_invalid']);
      expect(relay.captured.length).toBe(before);
    });
  });
});

/** Outcome of a client loop. */
interface LoopResult {
  ok: number;
  failures: string[];
}

/**
 * Agents calling through `base` until stopped: two long-lived SDK clients (GET, paced), and
 * a fresh client per iteration doing the whole challenge -> token -> request flow.
 */
function clientLoop(base: string): { ok: () => number; stop: () => Promise<LoopResult> } {
  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const check = async (what: string, c: GateClient, path: string) => {
    try {
      const res = await c.request(path);
      const text = res.body.toString();
      if (res.status === 200 && (JSON.parse(text) as { url: string }).url === path) ok++;
      else failures.push(`${what} ${path}: ${res.status} ${text}`);
    } catch (err) {
      failures.push(`${what} ${path}: ${err instanceof GateClientError ? `${err.code} ${err.status}` : String(err)}`);
    }
  };
  const steady = async (who: KeyAndCert, name: string) => {
    const c = new GateClient({ baseUrl: base, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    try {
      for (let i = 0; running; i++) {
        await check(name, c, `/loop/${name}?i=${i}`);
        await pause(20);
      }
    } finally {
      await c.close();
    }
  };
  const fresh = async () => {
    for (let i = 0; running; i++) {
      const c = new GateClient({ baseUrl: base, cert: fx.agents.ed25519.certPem, key: fx.agents.ed25519.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
      try {
        await check('fresh', c, `/loop/fresh?i=${i}`);
      } finally {
        await c.close();
      }
      // The rendered edge limit on P/v1/ is 10 requests/s per address; a flow makes two.
      await pause(250);
    }
  };
  const all = Promise.all([steady(fx.agents.p256, 'p256'), steady(fx.agents.rsa, 'rsa'), fresh()]);
  return {
    ok: () => ok,
    stop: async () => {
      running = false;
      await all;
      return { ok, failures };
    },
  };
}

/** Waits until the loop has `n` more successful requests than now. */
async function progress(loop: { ok: () => number }, n: number, what: string): Promise<void> {
  const from = loop.ok();
  await waitFor(() => loop.ok() >= from + n, 20_000, `${n} more requests ${what}`);
}

const succeeded = (l: Record<string, string>) => l.status === '200' || l.status === '201';

/**
 * Every answer nginx logged was a success (a refusal cured by the SDK's retries would show here).
 * nginx writes a line after its answer has gone out, so this first waits for the lines of the
 * `ok` gated requests the loop counted since the log held `from` lines; whatever the loop sent
 * before its last request is then in the log too.
 */
async function expectOnlySuccesses(n: RunningNginx, from: number, ok: number): Promise<void> {
  const gated = () => n.accessLog().slice(from).filter((l) => succeeded(l) && l.request_uri?.startsWith('/loop/')).length;
  await waitFor(() => gated() >= ok, 10_000, `the ${ok} gated requests in the access log`);
  const bad = n.accessLog().filter((l) => !succeeded(l));
  expect(bad.map((l) => `${l.status} ${l.method} ${l.request_uri}`)).toEqual([]);
}

const kidOf = (req: CapturedRequest) => capturedValues(req, 'x-gate-fwd-kid')[0];

describe('HMAC key rotation and reloads under a running client loop (unedited configuration)', () => {
  let signingJwk: string;
  let g1: RunningGate;
  let r1: CaptureRelay;
  let dir: string;
  let port: number;
  let rot: RunningNginx;

  beforeAll(async () => {
    // Both gate instances sign and verify tokens with the same key, as a rolling deployment does.
    signingJwk = JSON.stringify(await generateSigningJwk());
    g1 = await forwardedGate({ GATE_FWD_HMAC_KEYS: keysSpec(['k1', K1], ['k2', K2]), GATE_SIGNING_JWK: signingJwk });
    r1 = await startCaptureRelay(portOf(g1.url));
    closers.push(() => r1.close());
    dir = join(tempDir('rotation'), 'out');
    port = await freePort();
    await render(dir, port, r1.url, K1, 'k1');
    rot = await startNginx(dir, port);
    nginxes.push(rot);
  });

  it('nginx reloaded during traffic: no request fails', async () => {
    const logged = rot.accessLog().length;
    const loop = clientLoop(rot.url);
    let result: LoopResult;
    try {
      await progress(loop, 20, 'before the reloads');
      for (let i = 0; i < 3; i++) {
        await rot.reload();
        await progress(loop, 20, `after reload ${i + 1}`);
      }
    } finally {
      result = await loop.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.ok).toBeGreaterThanOrEqual(80);
    await expectOnlySuccesses(rot, logged, result.ok);
  });

  it('rotation: nginx k1 -> k2 while the gate accepts both, then a gate with k2 only; no request fails', async () => {
    const logged = rot.accessLog().length;
    const loop = clientLoop(rot.url);
    let result: LoopResult;
    let g2: RunningGate;
    let r2: CaptureRelay;
    try {
      await progress(loop, 20, 'before the rotation');
      expect(r1.captured.slice(-10).map(kidOf)).toEqual(Array(10).fill('k1'));

      // 1. nginx signs with k2; the gate accepts k1 and k2.
      await render(dir, port, r1.url, K2, 'k2');
      await rot.reload();
      await waitFor(() => r1.captured.slice(-20).every((r) => kidOf(r) === 'k2'), 20_000, 'every request signed with k2');
      await progress(loop, 20, 'signed with k2');

      // 2. A gate instance that knows k2 only takes over; nginx is pointed at it.
      g2 = await forwardedGate({ GATE_FWD_HMAC_KEYS: keysSpec(['k2', K2]), GATE_SIGNING_JWK: signingJwk });
      r2 = await startCaptureRelay(portOf(g2.url));
      closers.push(() => r2.close());
      await render(dir, port, r2.url, K2, 'k2');
      await rot.reload();
      await waitFor(() => r2.captured.length >= 20, 20_000, 'requests reaching the new gate');
      // The old workers are gone once nothing is connected to the old gate any more.
      await waitFor(() => r1.open === 0, 20_000, 'no connection left to the old gate');
      const toOld = r1.captured.length;
      await g1.close();
      await progress(loop, 20, 'with the old gate gone');
      expect(r1.captured.length).toBe(toOld);
    } finally {
      result = await loop.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.ok).toBeGreaterThanOrEqual(80);
    await expectOnlySuccesses(rot, logged, result.ok);
    expect(r2.captured.every((r) => kidOf(r) === 'k2')).toBe(true);

    // k1 is retired: a request nginx signed with it, straight to the new gate, is refused.
    const lastK1 = r1.captured.filter((r) => kidOf(r) === 'k1').at(-1)!;
    expect(lastK1).toBeDefined();
    const unknown = await fwdCount(g2, 'unknown_kid');
    const seen = up.seen.length;
    const res = await sendRaw(portOf(g2.url), serializeRequest(lastK1));
    expect([res.status, codeOf(res.text)]).toEqual([403, 'forwarded_signature_invalid']);
    expect(await fwdCount(g2, 'unknown_kid')).toBe(unknown + 1);
    expect(up.seen.length).toBe(seen);

    // So is an nginx still signing with k1 (one that missed the rotation).
    const stale = await launch(g2.url, K1, 'k1');
    await expect(client(fx.agents.p256, stale.url, { maxRetries: 0 }).fetchToken()).rejects.toMatchObject({ code: 'forwarded_signature_invalid', status: 403 });
    expect(await fwdCount(g2, 'unknown_kid')).toBe(unknown + 2);
  });
});
