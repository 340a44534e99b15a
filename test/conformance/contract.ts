/**
 * The gate's wire contract (docs/protocol.md sections 2-5 and 9) written once, as tables, and
 * run against every deployment mode: `describeGateContract(name, startGate)` registers the
 * same flow and refusal cases for a gate the mode's file starts (direct, nginx-fronted,
 * embedded, authorizer: see MODES below). What a mode adds on top stays in
 * its own file, next to its call of describeGateContract.
 */
import { createHmac, randomBytes, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import type { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient, GateClientError, type Challenge } from '../../src/client/index.js';
import { createCrl, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { call, rawRequest, tlsAgent, type Res } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import type { RecordingUpstream } from '../helpers/upstream.js';

/** The gate path prefix. */
export const P = '/.agent-gate';

/**
 * The deployment modes the contract runs against, one file each (authorizer:
 * test/conformance/authorizer.test.ts, nginx in authorizer mode with the decision cache off).
 */
export const MODES = ['direct', 'nginx', 'embedded', 'authorizer'] as const;
export type Mode = (typeof MODES)[number];

/** The admin token of contract gates (GATE_ADMIN_TOKEN_FILE). */
export const CONTRACT_ADMIN_TOKEN = 'contract-admin-token-0123456789abcdef';

/** The shared fixture PKI plus what the refusal cases need: a revoked and a denied agent. */
export interface ContractFixtures extends Fixtures {
  /** Listed in the CRL of GATE_CRL_FILES. */
  revoked: KeyAndCert;
  /** Put on the deny list (by agent id) by the contract before its cases run. */
  denied: KeyAndCert;
  deniedId: string;
  crlFile: string;
  adminTokenFile: string;
}

/** Builds {@link ContractFixtures}; the agent names are unique, as the deny list lives in the shared Redis. */
export async function makeContractFixtures(): Promise<ContractFixtures> {
  const fx = await makeFixtures();
  const tag = randomBytes(4).toString('hex');
  const [revoked, denied] = await Promise.all([issueAgentCert(fx.ca, `revoked-${tag}`, { alg: 'ec-p256' }), issueAgentCert(fx.ca, `denied-${tag}`, { alg: 'ec-p256' })]);
  const hour = 3600_000;
  const serial = new X509Certificate(revoked!.certPem).serialNumber;
  const crl = await createCrl(fx.ca, [{ serial, revokedAt: new Date(Date.now() - hour) }], { nextUpdate: new Date(Date.now() + hour) });
  const crlFile = join(fx.dir, 'contract.crl');
  writeFileSync(crlFile, crl.pem);
  const adminTokenFile = join(fx.dir, 'contract-admin.token');
  writeFileSync(adminTokenFile, CONTRACT_ADMIN_TOKEN + '\n', { mode: 0o600 });
  return { ...fx, revoked: revoked!, denied: denied!, deniedId: `urn:agent:denied-${tag}`, crlFile, adminTokenFile };
}

/** The gate variables every contract gate has: revocation from the CRL file, an admin token. */
export function contractEnv(cf: ContractFixtures): Record<string, string> {
  return { GATE_REVOCATION: 'crl', GATE_CRL_FILES: cf.crlFile, GATE_ADMIN_TOKEN_FILE: cf.adminTokenFile };
}

/** Denies `agentId` through a gate's admin API (the contract's deny hook for modes with one). */
export async function denyViaAdmin(adminUrl: string, agentId: string): Promise<void> {
  const r = await fetch(`${adminUrl}/admin/v1/denylist`, {
    method: 'POST',
    headers: { authorization: `Bearer ${CONTRACT_ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ agent_id: agentId, reason: 'conformance suite', ttl_s: 600 }),
  });
  expect(r.status).toBe(201);
}

/** The contract's view of a recording upstream behind the gate: its gated path, the identity headers it last saw, its hit count. */
export function upstreamSide(up: RecordingUpstream): Pick<ContractGate, 'gatedPath' | 'seen' | 'protectedHits'> {
  return {
    gatedPath: '/api/things',
    seen: () => {
      const h = up.seen.at(-1)!.headers;
      return { agentId: h['x-agent-id'], thumbprint: h['x-agent-thumbprint'], tokenId: h['x-agent-token-id'], authorization: h.authorization };
    },
    protectedHits: () => up.seen.length,
  };
}

/** A gate in one mode, started for the contract. */
export interface ContractGate {
  /** The URL agents use (https). */
  url: string;
  /** A path behind the gate that answers 200 to an admitted GET. */
  gatedPath: string;
  /** The identity the protected side saw for the 200 answer `res`. */
  seen(res: Res): { agentId: unknown; thumbprint: unknown; tokenId: unknown; authorization?: unknown };
  /** Requests that reached the protected side so far (undefined where the mode cannot tell). */
  protectedHits?(): number;
  /** Moves the gate's clock `ms` from real time (0 resets). */
  setClock(ms: number): void;
  /** GATE_TOKEN_TTL_S of this gate. */
  tokenTtlS: number;
  /** Puts `agentId` on the deny list, as an operator would. */
  deny(agentId: string): Promise<void>;
  close(): Promise<void>;
}

/** What a refusal must be. */
export interface Refusal {
  status: number;
  code: string;
  /** The Allow header of a 405. */
  allow?: string;
}

/** A response as the refusal assertions read it (from undici, the SDK or raw bytes). */
interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/**
 * Asserts `res` is the contract's refusal (section 9): status, problem+json with code, type,
 * status and instance, Cache-Control no-store, WWW-Authenticate on every 401 (with
 * error="invalid_token" for a bad or expired token) and on nothing else, Retry-After on 429 and
 * 503, Allow on 405.
 */
export function expectRefusal(res: Answer, want: Refusal, what = `${want.status} ${want.code}`): void {
  const h = res.headers;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(res.text) as Record<string, unknown>;
  } catch {
    throw new Error(`${what}: not JSON (${res.status}): ${res.text.slice(0, 200)}`);
  }
  expect({ status: res.status, code: body.code }, what).toEqual({ status: want.status, code: want.code });
  expect(h['content-type'], what).toBe('application/problem+json');
  expect(body, what).toMatchObject({ type: `urn:agent-gate:error:${want.code}`, status: want.status });
  expect(typeof body.title, what).toBe('string');
  expect(body.instance, what).toMatch(/^urn:agent-gate:refusal:[A-Za-z0-9]{1,64}$/);
  expect(h['cache-control'], what).toBe('no-store');
  const bearerError = want.code === 'token_invalid' || want.code === 'token_expired';
  expect(h['www-authenticate'], what).toBe(want.status === 401 ? `Bearer realm="agent-gate"${bearerError ? ', error="invalid_token"' : ''}` : undefined);
  if (want.status === 429 || want.status === 503) expect(h['retry-after'], what).toMatch(/^[0-9]+$/);
  if (want.allow !== undefined) expect(h.allow, what).toBe(want.allow);
}

/** Raw bytes' answer as an {@link Answer} (header names lowercased; the last of a repeated one). */
function rawAnswer(r: { status: number; head: string; body: string }): Answer {
  const headers: Record<string, string> = {};
  for (const line of r.head.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: r.status, headers, text: r.body };
}

/** Who presents which certificate: none, a fixture agent, or the contract's revoked or denied one. */
type Who = 'none' | keyof Fixtures['agents'] | 'revoked' | 'denied';

/** What the cases get: the running gate, its fixtures and per-request helpers (closed after the file). */
export interface ContractContext {
  gate: ContractGate;
  fx: ContractFixtures;
  cert(who: Who): KeyAndCert | undefined;
  agent(who: Who): Agent;
  client(who: Who): GateClient;
  /** A fresh token of `who`. */
  token(who: Who): Promise<string>;
  /** POST P/v1/token with a JSON body (a string is sent as it is). */
  postToken(who: Who, body: unknown, contentType?: string): Promise<Res>;
}

function makeContext(gate: ContractGate, fx: ContractFixtures, closers: (() => Promise<void>)[]): ContractContext {
  const agents = new Map<Who, Agent>();
  const cert = (who: Who): KeyAndCert | undefined => (who === 'none' ? undefined : who === 'revoked' || who === 'denied' ? fx[who] : fx.agents[who]);
  const ctx: ContractContext = {
    gate,
    fx,
    cert,
    // One keep-alive dispatcher per certificate: a handshake per case would dominate the suite's time.
    agent(who) {
      let a = agents.get(who);
      if (!a) {
        const fresh = tlsAgent(fx, cert(who));
        closers.push(() => fresh.close());
        agents.set(who, (a = fresh));
      }
      return a;
    },
    client(who) {
      const c = cert(who)!;
      const g = new GateClient({ baseUrl: gate.url, cert: c.certPem, key: c.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetries: 0 });
      closers.push(() => g.close());
      return g;
    },
    token: (who) => ctx.client(who).getToken(),
    postToken(who, body, contentType = 'application/json') {
      return call(ctx.agent(who), `${gate.url}${P}/v1/token`, { method: 'POST', headers: { 'content-type': contentType }, body: typeof body === 'string' ? body : JSON.stringify(body) });
    },
  };
  return ctx;
}

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

/** A refusal case: one request, the refusal it must get, and what must hold afterwards. */
interface RefusalCase {
  name: string;
  send(t: ContractContext): Promise<Answer>;
  want: Refusal;
  after?(t: ContractContext): Promise<void>;
}

const challengeOf = (t: ContractContext, who: Who, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) =>
  call(t.agent(who), `${t.gate.url}${P}/v1/challenge`, { method: 'POST', ...init });
const gated = (t: ContractContext, who: Who, authorization?: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) =>
  call(t.agent(who), `${t.gate.url}${t.gate.gatedPath}`, { ...init, headers: { ...(authorization === undefined ? {} : { authorization }), ...init.headers } });

/** Submits a proof made by `make` for a fresh challenge of p256; then the challenge is spent. */
function proofCase(name: string, make: (c: GateClient, ch: Challenge, t: ContractContext) => Promise<string>): RefusalCase {
  let spent: { c: GateClient; ch: Challenge } | undefined;
  return {
    name: `token: ${name}: 403 proof_invalid, and the challenge is spent`,
    want: { status: 403, code: 'proof_invalid' },
    async send(t) {
      const c = t.client('p256');
      const ch = await c.challenge();
      spent = { c, ch };
      return t.postToken('p256', { challenge_id: ch.challenge_id, proof: await make(c, ch, t) });
    },
    async after(t) {
      const { c, ch } = spent!;
      expectRefusal(await t.postToken('p256', { challenge_id: ch.challenge_id, proof: await c.signProof(ch) }), { status: 409, code: 'challenge_replayed' }, 'the good proof after a bad one');
    },
  };
}

/** Refusals of the challenge endpoint (section 3). */
const CHALLENGE_REFUSALS: RefusalCase[] = [
  { name: 'challenge: no client certificate', send: (t) => challengeOf(t, 'none'), want: { status: 401, code: 'client_cert_required' } },
  { name: 'challenge: certificate from an untrusted CA', send: (t) => challengeOf(t, 'foreign'), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'challenge: expired certificate', send: (t) => challengeOf(t, 'expired'), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'challenge: revoked certificate', send: (t) => challengeOf(t, 'revoked'), want: { status: 403, code: 'client_cert_revoked' } },
  { name: 'challenge: denied agent', send: (t) => challengeOf(t, 'denied'), want: { status: 403, code: 'agent_denied' } },
  { name: 'challenge: a non-empty body of another type', send: (t) => challengeOf(t, 'p256', { headers: { 'content-type': 'text/plain' }, body: 'hi' }), want: { status: 415, code: 'unsupported_media_type' } },
  { name: 'challenge: a JSON body that is not an object', send: (t) => challengeOf(t, 'p256', { headers: { 'content-type': 'application/json' }, body: '[1]' }), want: { status: 400, code: 'request_malformed' } },
  { name: 'challenge: GET', send: (t) => call(t.agent('p256'), `${t.gate.url}${P}/v1/challenge`), want: { status: 405, code: 'method_not_allowed', allow: 'POST' } },
];

const BAD_JSON = ['{', '[]', '"x"', '{"challenge_id":"abc","proof":"a.b.c"}', `{"challenge_id":"${'A'.repeat(22)}"}`, `{"challenge_id":"${'A'.repeat(21)}=","proof":"a.b.c"}`];

/** Refusals of the token endpoint (section 4), in the order the gate checks. */
const TOKEN_REFUSALS: RefusalCase[] = [
  { name: 'token: no client certificate, and a bad body (identity comes first)', send: (t) => t.postToken('none', 'x', 'text/plain'), want: { status: 401, code: 'client_cert_required' } },
  { name: 'token: certificate from an untrusted CA', send: (t) => t.postToken('foreign', {}), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'token: expired certificate', send: (t) => t.postToken('expired', {}), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'token: revoked certificate', send: (t) => t.postToken('revoked', {}), want: { status: 403, code: 'client_cert_revoked' } },
  { name: 'token: denied agent', send: (t) => t.postToken('denied', {}), want: { status: 403, code: 'agent_denied' } },
  { name: 'token: another content type', send: (t) => t.postToken('p256', '{}', 'text/plain'), want: { status: 415, code: 'unsupported_media_type' } },
  {
    name: 'token: no content type',
    send: (t) => call(t.agent('p256'), `${t.gate.url}${P}/v1/token`, { method: 'POST', body: '{}' }),
    want: { status: 415, code: 'unsupported_media_type' },
  },
  { name: 'token: content type is checked before size (a large text body)', send: (t) => t.postToken('p256', 'x'.repeat(20_000), 'text/plain'), want: { status: 415, code: 'unsupported_media_type' } },
  { name: 'token: a body over 16 KiB, before JSON is looked at', send: (t) => t.postToken('p256', 'x'.repeat(16 * 1024 + 1)), want: { status: 413, code: 'body_too_large' } },
  ...BAD_JSON.map(
    (body): RefusalCase => ({ name: `token: malformed body or challenge_id ${body}`, send: (t) => t.postToken('p256', body), want: { status: 400, code: 'request_malformed' } }),
  ),
  {
    name: 'token: the media type is compared case-insensitively, with parameters (the body is then looked at)',
    send: (t) => t.postToken('p256', '{"challenge_id":"short","proof":"x"}', 'Application/JSON; charset=utf-8'),
    want: { status: 400, code: 'request_malformed' },
  },
  {
    name: 'token: an unknown challenge',
    async send(t) {
      const c = t.client('p256');
      return t.postToken('p256', { challenge_id: 'A'.repeat(22), proof: await c.signProof(await c.challenge()) });
    },
    want: { status: 404, code: 'challenge_unknown' },
  },
  {
    name: 'token: a second use of the same proof (replayed challenge)',
    async send(t) {
      const c = t.client('p256');
      const ch = await c.challenge();
      const proof = await c.signProof(ch);
      expect((await t.postToken('p256', { challenge_id: ch.challenge_id, proof })).status).toBe(200);
      return t.postToken('p256', { challenge_id: ch.challenge_id, proof });
    },
    want: { status: 409, code: 'challenge_replayed' },
  },
  {
    name: 'token: a proof received after expires_at (expired challenge)',
    async send(t) {
      const c = t.client('p256');
      const ch = await c.challenge();
      const proof = await c.signProof(ch);
      t.gate.setClock(3001); // the gate's clock now reads past expires_at
      try {
        return await t.postToken('p256', { challenge_id: ch.challenge_id, proof });
      } finally {
        t.gate.setClock(0);
      }
    },
    want: { status: 408, code: 'challenge_expired' },
  },
  {
    name: 'token: a proof from another certificate than the one that asked (challenge binding)',
    async send(t) {
      const ch = await t.client('p256').challenge();
      return t.postToken('other', { challenge_id: ch.challenge_id, proof: await t.client('other').signProof(ch) });
    },
    want: { status: 403, code: 'challenge_binding_mismatch' },
  },
  proofCase('wrong nonce', (c, ch) => c.signProof(ch, { payload: { nonce: 'x'.repeat(43) } })),
  proofCase('wrong aud', (c, ch) => c.signProof(ch, { payload: { aud: 'someone-else' } })),
  proofCase('wrong cid', (c, ch) => c.signProof(ch, { payload: { cid: 'B'.repeat(22) } })),
  proofCase('wrong typ', (c, ch) => c.signProof(ch, { header: { typ: 'JWT' } })),
  proofCase('stale iat', (c, ch) => c.signProof(ch, { payload: { iat: nowS() - 120 } })),
  proofCase('future iat', (c, ch) => c.signProof(ch, { payload: { iat: nowS() + 120 } })),
  proofCase('crit header', (c, ch) => c.signProof(ch, { header: { crit: ['exp'], exp: 1 } })),
  proofCase('alg none', async (_c, ch) => `${b64url({ alg: 'none', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: nowS() })}.`),
  proofCase('HS256 with the public certificate as secret', async (_c, ch, t) => {
    const input = `${b64url({ alg: 'HS256', typ: 'agent-gate-proof+jwt' })}.${b64url({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: nowS() })}`;
    return `${input}.${createHmac('sha256', t.fx.agents.p256.certPem).update(input).digest('base64url')}`;
  }),
  proofCase('signature by another key', (_c, ch, t) => t.client('other').signProof(ch)),
  proofCase('not a JWS', async () => 'not.a.jws'),
  {
    name: 'token: an attestation with no issuers configured',
    async send(t) {
      const c = t.client('p256');
      const ch = await c.challenge();
      return t.postToken('p256', { challenge_id: ch.challenge_id, proof: await c.signProof(ch), attestation: 'a.b.c' });
    },
    want: { status: 403, code: 'attestation_invalid' },
  },
  { name: 'token: GET', send: (t) => call(t.agent('p256'), `${t.gate.url}${P}/v1/token`), want: { status: 405, code: 'method_not_allowed', allow: 'POST' } },
];

/** Refusals of gated requests (section 5). */
const GATED_REFUSALS: RefusalCase[] = [
  { name: 'gated: no client certificate', send: (t) => gated(t, 'none', 'Bearer x'), want: { status: 401, code: 'client_cert_required' } },
  { name: 'gated: certificate from an untrusted CA', send: (t) => gated(t, 'foreign', 'Bearer x'), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'gated: expired certificate', send: (t) => gated(t, 'expired', 'Bearer x'), want: { status: 403, code: 'client_cert_invalid' } },
  { name: 'gated: revoked certificate', send: (t) => gated(t, 'revoked', 'Bearer x'), want: { status: 403, code: 'client_cert_revoked' } },
  { name: 'gated: denied agent', send: (t) => gated(t, 'denied', 'Bearer x'), want: { status: 403, code: 'agent_denied' } },
  { name: 'gated: no Authorization (no token)', send: (t) => gated(t, 'p256'), want: { status: 401, code: 'token_missing' } },
  { name: 'gated: another scheme', send: (t) => gated(t, 'p256', 'Basic dXNlcjpwdw=='), want: { status: 401, code: 'token_missing' } },
  {
    name: 'gated: no token, and a bad body (refused before the body is read)',
    send: (t) => gated(t, 'p256', undefined, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }),
    want: { status: 401, code: 'token_missing' },
  },
  { name: 'gated: an empty bearer token', send: (t) => gated(t, 'p256', 'Bearer '), want: { status: 401, code: 'token_invalid' } },
  { name: 'gated: a bad token (not a JWT of the gate)', send: (t) => gated(t, 'p256', 'Bearer abc.def.ghi'), want: { status: 401, code: 'token_invalid' } },
  {
    name: 'gated: a token signed by a foreign key',
    async send(t) {
      const [h, p] = (await t.token('p256')).split('.');
      return gated(t, 'p256', `Bearer ${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}`);
    },
    want: { status: 401, code: 'token_invalid' },
  },
  {
    name: 'gated: an expired token',
    async send(t) {
      const token = await t.token('p256');
      // Past exp and past the verifier's clock tolerance.
      t.gate.setClock((t.gate.tokenTtlS + 100) * 1000);
      try {
        return await gated(t, 'p256', `Bearer ${token}`);
      } finally {
        t.gate.setClock(0);
      }
    },
    want: { status: 401, code: 'token_expired' },
  },
  {
    name: "gated: another certificate's token (token binding)",
    send: async (t) => gated(t, 'other', `Bearer ${await t.token('p256')}`),
    want: { status: 403, code: 'token_binding_mismatch' },
  },
];

/** Paths the gate refuses whoever asks (sections 1 and 5): raw bytes, as clients would normalise them away. */
export const MALFORMED_PATHS = [
  '/a/../.agent-gate/healthz',
  '/a/%2e%2e/b',
  '/a/./b',
  '/a%2fb',
  '/a%2Fb',
  '/a%00b',
  '/.agent-gate/%2e/healthz',
  '/.agent-gate/..',
  '/things/../public',
  '/public/%2e',
  '/public/%2F',
  '/public%zz',
  '/.agent-gate/v1/%zz',
];

/** Refusals of the gate paths themselves and of the path rules. */
const PATH_REFUSALS: RefusalCase[] = [
  { name: 'path: an unknown gate path', send: (t) => call(t.agent('p256'), `${t.gate.url}${P}/v2/nothing`), want: { status: 404, code: 'not_found' } },
  { name: 'path: the prefix itself', send: (t) => call(t.agent('p256'), `${t.gate.url}${P}`), want: { status: 404, code: 'not_found' } },
  { name: 'path: an unknown gate path without a certificate', send: (t) => call(t.agent('none'), `${t.gate.url}${P}/things`), want: { status: 404, code: 'not_found' } },
  { name: 'path: POST to the JWKS (method not allowed)', send: (t) => call(t.agent('p256'), `${t.gate.url}${P}/jwks.json`, { method: 'POST' }), want: { status: 405, code: 'method_not_allowed', allow: 'GET, HEAD' } },
  ...MALFORMED_PATHS.map(
    (path): RefusalCase => ({
      name: `path rules: ${path}`,
      send: async (t) => rawAnswer(await rawRequest(t.gate.url, t.fx, t.fx.agents.p256, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)),
      want: { status: 400, code: 'request_malformed' },
    }),
  ),
];

/** Every refusal case, by endpoint. */
export const REFUSALS: Record<'challenge' | 'token' | 'gated' | 'path', RefusalCase[]> = {
  challenge: CHALLENGE_REFUSALS,
  token: TOKEN_REFUSALS,
  gated: GATED_REFUSALS,
  path: PATH_REFUSALS,
};

const KEY_TYPES = [
  ['ed25519', 'urn:agent:ed'],
  ['p256', 'urn:agent:p256'],
  ['rsa', 'urn:agent:rsa'],
] as const;

/**
 * Registers the contract for one mode: hooks at the level of the calling file (so the mode's
 * own tests can share the gate through the returned accessor) and one describe per table.
 */
export function describeGateContract(name: string, startGate: (fx: ContractFixtures) => Promise<ContractGate>): () => ContractContext {
  let ctx: ContractContext | undefined;
  const closers: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    const fx = await makeContractFixtures();
    const gate = await startGate(fx);
    ctx = makeContext(gate, fx, closers);
    await gate.deny(fx.deniedId);
    // Every gate reads the deny list within one poll interval.
    await waitFor(async () => (await challengeOf(ctx!, 'denied')).status === 403, 10_000, 'the deny entry to reach the gate');
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(closers.map((c) => c()));
    await ctx?.gate.close();
  });
  const t = () => ctx!;

  describe(`${name}: the flow`, () => {
    for (const [kind, id] of KEY_TYPES) {
      it(`${kind} agent: challenge -> proof -> token -> gated request as itself`, async () => {
        const c = t().client(kind);
        const res = await c.request(`${t().gate.gatedPath}?q=1`);
        expect(res.status).toBe(200);
        const seen = t().gate.seen({ status: res.status, headers: res.headers, text: res.body.toString(), json: () => res.json() });
        expect(seen.agentId).toBe(id);
        expect(seen.thumbprint).toBe(c.thumbprint);
        expect(seen.tokenId).toMatch(/^[A-Za-z0-9_-]{22}$/);
        expect(seen.authorization).toBeUndefined();
      });
    }

    it('the challenge answer has the contract shape and no-store', async () => {
      const res = await challengeOf(t(), 'p256');
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

    it('the challenge accepts an empty body of any type and a JSON object', async () => {
      expect((await challengeOf(t(), 'p256', { headers: { 'content-type': 'text/plain' } })).status).toBe(201);
      expect((await challengeOf(t(), 'p256', { headers: { 'content-type': 'application/json' }, body: '{"x":1}' })).status).toBe(201);
    });

    it('the token has the contract claims and verifies against the JWKS', async () => {
      const c = t().client('ed25519');
      const tok = await c.fetchToken();
      expect(tok.token_type).toBe('Bearer');
      expect(tok.expires_in).toBe(t().gate.tokenTtlS);
      const jwks = await call(t().agent('none'), `${t().gate.url}${P}/jwks.json`);
      expect(jwks.status).toBe(200);
      const { payload, protectedHeader } = await jwtVerify(tok.access_token, createLocalJWKSet(jwks.json() as never), { issuer: 'agent-gate', audience: 'agent-gate' });
      expect(protectedHeader).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
      expect(payload).toMatchObject({ sub: 'urn:agent:ed', cnf: { 'x5t#S256': c.thumbprint } });
      expect(payload.exp! - payload.iat!).toBe(t().gate.tokenTtlS);
      expect(typeof payload.jti).toBe('string');
    });

    it('the Bearer scheme is case-insensitive', async () => {
      const r = await gated(t(), 'p256', `bEaReR ${await t().token('p256')}`);
      expect(r.status).toBe(200);
      expect(t().gate.seen(r).agentId).toBe('urn:agent:p256');
    });

    it('percent-encoded gate paths are the gate, never the protected side', async () => {
      const before = t().gate.protectedHits?.();
      expect((await call(t().agent('p256'), `${t().gate.url}/%2Eagent-gate/v1/%63hallenge`, { method: 'POST' })).status).toBe(201);
      expect(t().gate.protectedHits?.()).toBe(before);
    });

    it('healthz, readyz and jwks need no certificate, answer HEAD, and are no-store', async () => {
      const a = t().agent('none');
      for (const p of ['healthz', 'readyz', 'jwks.json']) {
        const r = await call(a, `${t().gate.url}${P}/${p}`);
        expect(r.status, p).toBe(200);
        expect(r.headers['cache-control'], p).toBe('no-store');
        expect((await call(a, `${t().gate.url}${P}/${p}`, { method: 'HEAD' })).status, p).toBe(200);
      }
    });

    it('the client SDK surfaces refusals as GateClientError with the code', async () => {
      const err = await t()
        .client('foreign')
        .getToken()
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GateClientError);
      expect(err).toMatchObject({ code: 'client_cert_invalid', status: 403 });
    });
  });

  for (const [endpoint, cases] of Object.entries(REFUSALS)) {
    describe(`${name}: ${endpoint} refusals`, () => {
      for (const c of cases) {
        it(c.name, async () => {
          const before = t().gate.protectedHits?.();
          expectRefusal(await c.send(t()), c.want, c.name);
          await c.after?.(t());
          // A refusal never reaches the protected side.
          expect(t().gate.protectedHits?.()).toBe(before);
        });
      }
    });
  }

  return t;
}
