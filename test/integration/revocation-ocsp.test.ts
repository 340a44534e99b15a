/**
 * Section 7 with a real `openssl ocsp` responder: good passes, revoked is refused on
 * challenge, token and gated requests, a dead responder fails closed or open as configured,
 * and the cache keeps the responder off the hot path.
 */
import { describe, expect, inject, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startOpensslOcsp } from '../helpers/openssl-ocsp.js';
import { gateSuite } from '../helpers/suite.js';

const suite = gateSuite({ ocsp: true });

async function gate(extra: Record<string, string>): Promise<RunningGate> {
  const g = await startGate(testEnv(suite.fx, { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: suite.up.url, GATE_REVOCATION: 'ocsp', GATE_REVOCATION_FAIL: 'closed', ...extra }));
  suite.closers.push(() => g.close());
  return g;
}
function client(g: RunningGate, who: KeyAndCert): GateClient {
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: suite.fx.ca.certPem, servername: 'localhost' });
  suite.closers.push(() => c.close());
  return c;
}
async function metric(g: RunningGate, line: RegExp): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  return Number(line.exec(text)?.[1] ?? NaN);
}

describe('OCSP against openssl ocsp', () => {
  it('good certificate: the whole flow passes, counted as ocsp/good', async () => {
    const g = await gate({ GATE_OCSP_URL: suite.ocsp.url });
    const r = await client(g, suite.fx.agents.ed25519).request('/ok');
    expect(r.status).toBe(200);
    expect(await metric(g, /^agent_gate_revocation_checks_total\{method="ocsp",result="good"\} (\d+)/m)).toBe(1);
  });

  it('revoked: 403 client_cert_revoked on challenge, token and gated requests', async () => {
    const who = await issueAgentCert(suite.fx.ca, 'soon-revoked', { alg: 'ec-p256' });
    suite.ocsp.add(who);
    const g = await gate({ GATE_OCSP_URL: suite.ocsp.url, GATE_REVOCATION_MAX_STALE_S: '1' });
    const c = client(g, who);
    const token = await c.getToken();
    const ch = await c.challenge();
    const proof = await c.signProof(ch);
    suite.ocsp.revoke(who);
    const a = tlsAgent(suite.fx, who);
    suite.closers.push(() => a.close());
    // The cache period is 1 s: the next request after it expires sees the revocation.
    await waitFor(async () => (await call(a, `${g.url}/after`, { headers: { authorization: `Bearer ${token}` } })).status === 403, 10_000, 'revocation seen on the proxy path');
    const gated = await call(a, `${g.url}/after`, { headers: { authorization: `Bearer ${token}` } });
    expect(gated.json().code).toBe('client_cert_revoked');
    const chRes = await call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([chRes.status, chRes.json().code]).toEqual([403, 'client_cert_revoked']);
    const tokRes = await c.submitProof({ challenge_id: ch.challenge_id, proof });
    expect([tokRes.status, (tokRes.json() as { code: string }).code]).toEqual([403, 'client_cert_revoked']);
    expect(await metric(g, /^agent_gate_revocation_checks_total\{method="ocsp",result="revoked"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
  });

  it('responder down, fail closed: 503 revocation_unavailable with Retry-After', async () => {
    const g = await gate({ GATE_OCSP_URL: 'http://127.0.0.1:9/', GATE_REVOCATION_TIMEOUT_MS: '500' });
    const r = await call(tlsAgent(suite.fx, suite.fx.agents.p256), `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r.status, r.json().code]).toEqual([503, 'revocation_unavailable']);
    expect(r.headers['retry-after']).toBeDefined();
    expect(await metric(g, /^agent_gate_revocation_checks_total\{method="ocsp",result="error"\} (\d+)/m)).toBe(1);
  });

  it('responder hanging, fail closed: 503 within the revocation timeout', async () => {
    const hanging = await startOpensslOcsp(suite.fx.ca);
    hanging.hang = true;
    suite.closers.push(() => hanging.close());
    const g = await gate({ GATE_OCSP_URL: hanging.url, GATE_REVOCATION_TIMEOUT_MS: '400' });
    const t0 = Date.now();
    const r = await call(tlsAgent(suite.fx, suite.fx.agents.p256), `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r.status, r.json().code]).toEqual([503, 'revocation_unavailable']);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('responder down, fail open: allowed, and counted as an error', async () => {
    const g = await gate({ GATE_OCSP_URL: 'http://127.0.0.1:9/', GATE_REVOCATION_FAIL: 'open', GATE_REVOCATION_TIMEOUT_MS: '500' });
    const c = client(g, suite.fx.agents.p256);
    for (let i = 0; i < 3; i++) expect((await c.request(`/open${i}`)).status).toBe(200);
    expect(await metric(g, /^agent_gate_revocation_checks_total\{method="ocsp",result="error"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
    // Every request let through counts (challenge, token, 3 gated), also those answered in the
    // back-off after the failed lookup.
    expect(await metric(g, /^agent_gate_revocation_fail_open_total (\d+)/m)).toBeGreaterThanOrEqual(5);
  });

  it('1,000 sequential gated requests by one agent: at most one OCSP request per cache period', async () => {
    const who = await issueAgentCert(suite.fx.ca, 'busy', { alg: 'ec-p256' });
    suite.ocsp.add(who);
    const g = await gate({ GATE_OCSP_URL: suite.ocsp.url, GATE_REVOCATION_MAX_STALE_S: '300' });
    const c = client(g, who);
    await c.getToken();
    const before = suite.ocsp.requests;
    for (let i = 0; i < 1000; i++) {
      const r = await c.request(`/n/${i}`);
      if (r.status !== 200) throw new Error(`request ${i}: ${r.status}`);
    }
    expect(suite.ocsp.requests - before).toBeLessThanOrEqual(1);
    expect(await metric(g, /^agent_gate_revocation_cache_hits_total\{method="ocsp"\} (\d+)/m)).toBeGreaterThanOrEqual(1000);
  });

  it('a delegated responder certificate without OCSPSigning is not believed', async () => {
    const rogue = await issueAgentCert(suite.fx.ca, 'rogue-responder', { alg: 'ec-p256' });
    const bad = await startOpensslOcsp(suite.fx.ca, { signer: rogue });
    for (const a of Object.values(suite.fx.agents)) bad.add(a);
    suite.closers.push(() => bad.close());
    const g = await gate({ GATE_OCSP_URL: bad.url });
    const r = await call(tlsAgent(suite.fx, suite.fx.agents.p256), `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r.status, r.json().code]).toEqual([503, 'revocation_unavailable']);
  });
});
