/**
 * Intermediate CAs over real TLS (PROTOCOL.md section 2): the gate trusts only the root
 * (GATE_CLIENT_CA), the agent certificate is issued by an intermediate, and the agent must
 * present leaf + intermediate. Also checks that identity survives TLS session resumption,
 * where the server does not see the client's certificate chain again.
 */
import { readFileSync } from 'node:fs';
import type { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient, GateClientError } from '../../src/client/index.js';
import { TrustBundle, thumbprintOf } from '../../src/identity/index.js';
import { createIntermediateCa, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, problemOf, tlsAgent, tlsExchange, type TlsExchange } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';
let fx: Fixtures;
let up: RecordingUpstream;
let gw: RunningGate;
let inter: KeyAndCert;
let chained: KeyAndCert;
/** Leaf first, then the intermediate. */
let chainPem: string;
const clients: GateClient[] = [];
const agents: Agent[] = [];

function client(cert: string, key: string): GateClient {
  const c = new GateClient({ baseUrl: gw.url, cert, key, ca: fx.ca.certPem, servername: 'localhost' });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  fx = await makeFixtures();
  inter = await createIntermediateCa(fx.ca, { commonName: 'agent-gate test intermediate CA' });
  chained = await issueAgentCert(inter, 'chained', { alg: 'ec-p256' });
  chainPem = chained.certPem + inter.certPem;
  up = await startUpstream();
  // fx.caFile holds the root only.
  gw = await startGate(testEnv(fx, { GATE_ENV: 'dev', GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url }));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(agents.map((a) => a.close()));
  await gw?.close();
  await up?.close();
});

describe('agent certificate issued by an intermediate, gate trusting only the root', () => {
  it('the gate trust bundle holds exactly the root', () => {
    const bundle = new TrustBundle(readFileSync(fx.caFile, 'utf8'));
    expect(bundle.anchors).toHaveLength(1);
    expect(Buffer.from(bundle.anchors[0]!.raw).equals(fx.ca.certDer)).toBe(true);
  });

  it('leaf + intermediate: the full flow returns 200 and the upstream sees the agent', async () => {
    const c = client(chainPem, chained.keyPem);
    const res = await c.request('/api/chained?x=1');
    expect(res.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.url).toBe('/api/chained?x=1');
    expect(seen.headers['x-agent-id']).toBe('urn:agent:chained');
    // The thumbprint is the leaf's, not the chain's.
    expect(seen.headers['x-agent-thumbprint']).toBe(thumbprintOf(chained.certDer));
    expect(c.thumbprint).toBe(thumbprintOf(chained.certDer));
  });

  it('leaf only: 403 client_cert_invalid on the flow, the challenge and a gated path', async () => {
    // A leaf this gate has never seen with its chain: one verified earlier is remembered by
    // thumbprint (its chain was checked then), which is sound but not this case.
    const lonely = await issueAgentCert(inter, 'chained', { alg: 'ec-p256' });
    const seenBefore = up.seen.length;
    const c = client(lonely.certPem, lonely.keyPem);
    const err = await c.request('/api/leaf-only').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GateClientError);
    expect((err as GateClientError).status).toBe(403);
    expect((err as GateClientError).code).toBe('client_cert_invalid');

    const a = tlsAgent(fx, lonely, { resumeSessions: false });
    agents.push(a);
    const ch = await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(problemOf(ch)).toMatchObject({ status: 403, code: 'client_cert_invalid', contentType: 'application/problem+json' });
    const gated = await call(a, `${gw.url}/api/leaf-only`, { headers: { authorization: 'Bearer x' } });
    expect(problemOf(gated)).toMatchObject({ status: 403, code: 'client_cert_invalid' });
    expect(up.seen.length).toBe(seenBefore);
  });
});

/** One HTTP/1.1 request on a fresh mTLS connection presenting `cert` (PEM chain), resuming `session` when given. */
function exchange(cert: string, key: string, request: string, session?: Buffer): Promise<TlsExchange> {
  return tlsExchange(gw.url, { ca: fx.ca.certPem, cert, key, session }, request);
}

const gatedRequest = (path: string, token: string) =>
  `GET ${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`;

describe('identity on a resumed TLS session', () => {
  it('control: a root-issued agent keeps its identity on a resumed session', async () => {
    const who = fx.agents.p256;
    const token = await client(who.certPem, who.keyPem).getToken();
    const first = await exchange(who.certPem, who.keyPem, gatedRequest('/api/resume-direct/1', token));
    expect(first.reused).toBe(false);
    expect(first.status).toBe(200);
    expect(first.session).toBeInstanceOf(Buffer);
    const second = await exchange(who.certPem, who.keyPem, gatedRequest('/api/resume-direct/2', token), first.session);
    expect(second.reused).toBe(true);
    expect(second.status, second.body).toBe(200);
    expect(up.seen.at(-1)!.headers['x-agent-id']).toBe('urn:agent:p256');
  });

  it('leaf + intermediate: a gated request on the resumed connection is 200', async () => {
    const token = await client(chainPem, chained.keyPem).getToken();
    const first = await exchange(chainPem, chained.keyPem, gatedRequest('/api/resume-chain/1', token));
    expect(first.reused).toBe(false);
    expect(first.status, first.body).toBe(200);
    expect(first.session).toBeInstanceOf(Buffer);

    const second = await exchange(chainPem, chained.keyPem, gatedRequest('/api/resume-chain/2', token), first.session);
    expect(second.reused).toBe(true);
    expect(second.status, `${second.protocol} resumed: ${second.body}`).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.url).toBe('/api/resume-chain/2');
    expect(seen.headers['x-agent-id']).toBe('urn:agent:chained');
    expect(seen.headers['x-agent-thumbprint']).toBe(thumbprintOf(chained.certDer));
  });
});
