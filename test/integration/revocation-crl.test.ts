/**
 * Section 7, CRL source: from files and from an HTTP distribution point served by the test.
 * A CRL that is forged, from another issuer or past nextUpdate is never taken as "good".
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { createCa, createCrl, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let cdp: Server;
let cdpUrl: string;
let cdpBody: Buffer = Buffer.alloc(0);
let cdpHits = 0;
const closers: (() => Promise<void>)[] = [];
const hour = 3600_000;

const serialOf = (k: KeyAndCert) => new X509Certificate(k.certPem).serialNumber;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  cdp = createServer((_req, res) => {
    cdpHits++;
    res.writeHead(200, { 'content-type': 'application/pkix-crl' }).end(cdpBody);
  });
  await new Promise<void>((r) => cdp.listen(0, '127.0.0.1', r));
  const a = cdp.address();
  cdpUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/ca.crl`;
});
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  cdp?.closeAllConnections();
  await new Promise<void>((r) => (cdp ? cdp.close(() => r()) : r()));
  await up?.close();
});

async function gate(extra: Record<string, string>): Promise<RunningGate> {
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_REVOCATION: 'crl', GATE_REVOCATION_FAIL: 'closed', ...extra }));
  closers.push(() => g.close());
  return g;
}
async function challenge(g: RunningGate, who: KeyAndCert): Promise<{ status: number; code: unknown }> {
  const a = tlsAgent(fx, who);
  closers.push(() => a.close());
  const r = await call(a, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
  return { status: r.status, code: r.status === 201 ? undefined : r.json().code };
}
function crlFile(name: string, pem: string): string {
  const p = join(fx.dir, name);
  writeFileSync(p, pem);
  return p;
}

describe('CRL from files', () => {
  it('a revoked serial is refused, others pass (PEM and DER files)', async () => {
    const crl = await createCrl(fx.ca, [{ serial: serialOf(fx.agents.rsa), revokedAt: new Date(Date.now() - hour) }], { nextUpdate: new Date(Date.now() + hour) });
    for (const file of [crlFile('good.pem.crl', crl.pem), (() => { const p = join(fx.dir, 'good.der.crl'); writeFileSync(p, crl.der); return p; })()]) {
      const g = await gate({ GATE_CRL_FILES: file });
      expect(await challenge(g, fx.agents.rsa)).toEqual({ status: 403, code: 'client_cert_revoked' });
      expect(await challenge(g, fx.agents.p256)).toEqual({ status: 201, code: undefined });
    }
  });

  it('a CRL signed by another key (forged) is unknown: fail closed 503, never good', async () => {
    const other = await createCa({ alg: 'ec-p256', commonName: 'agent-gate test CA' }); // same name, other key
    const forged = await createCrl(fx.ca, [], { nextUpdate: new Date(Date.now() + hour), signer: other });
    const g = await gate({ GATE_CRL_FILES: crlFile('forged.crl', forged.pem) });
    expect(await challenge(g, fx.agents.p256)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('a CRL from the wrong issuer does not apply: unknown, 503', async () => {
    const stranger = await createCa({ alg: 'ec-p256', commonName: 'some other CA' });
    const crl = await createCrl(stranger, [], { nextUpdate: new Date(Date.now() + hour) });
    const g = await gate({ GATE_CRL_FILES: crlFile('stranger.crl', crl.pem) });
    expect(await challenge(g, fx.agents.p256)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('a CRL past nextUpdate is unknown, never good: 503 closed, allowed open', async () => {
    const stale = await createCrl(fx.ca, [], { thisUpdate: new Date(Date.now() - 3 * hour), nextUpdate: new Date(Date.now() - hour) });
    const file = crlFile('stale.crl', stale.pem);
    expect(await challenge(await gate({ GATE_CRL_FILES: file }), fx.agents.p256)).toEqual({ status: 503, code: 'revocation_unavailable' });
    expect(await challenge(await gate({ GATE_CRL_FILES: file, GATE_REVOCATION_FAIL: 'open' }), fx.agents.p256)).toEqual({ status: 201, code: undefined });
  });

  it('an unreadable CRL file stops the start, naming GATE_CRL_FILES', async () => {
    const bad = crlFile('garbage.crl', 'not a crl');
    await expect(gate({ GATE_CRL_FILES: bad })).rejects.toThrow(/GATE_CRL_FILES/);
  });
});

describe('CRL from the distribution point', () => {
  it('fetched over HTTP once per period; revoked serial refused, good serial passes', async () => {
    const good = await issueAgentCert(fx.ca, 'cdp-good', { alg: 'ec-p256', crlUrl: cdpUrl });
    const bad = await issueAgentCert(fx.ca, 'cdp-bad', { alg: 'ec-p256', crlUrl: cdpUrl });
    cdpBody = (await createCrl(fx.ca, [{ serial: serialOf(bad), revokedAt: new Date(Date.now() - hour) }], { nextUpdate: new Date(Date.now() + hour) })).der;
    const g = await gate({});
    const before = cdpHits;
    expect(await challenge(g, bad)).toEqual({ status: 403, code: 'client_cert_revoked' });
    const c = new GateClient({ baseUrl: g.url, cert: good.certPem, key: good.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
    closers.push(() => c.close());
    for (let i = 0; i < 20; i++) expect((await c.request(`/cdp/${i}`)).status).toBe(200);
    expect(cdpHits - before).toBe(1);
  });

  it('a forged CRL at the distribution point: 503, never good', async () => {
    const who = await issueAgentCert(fx.ca, 'cdp-forged', { alg: 'ec-p256', crlUrl: cdpUrl.replace('ca.crl', 'forged.crl') });
    const other = await createCa({ alg: 'ec-p256', commonName: 'agent-gate test CA' });
    cdpBody = (await createCrl(fx.ca, [], { nextUpdate: new Date(Date.now() + hour), signer: other })).der;
    const g = await gate({});
    expect(await challenge(g, who)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('ocsp,crl: the CRL answers when OCSP errors', async () => {
    const who = await issueAgentCert(fx.ca, 'fallback', { alg: 'ec-p256', crlUrl: cdpUrl.replace('ca.crl', 'fallback.crl') });
    cdpBody = (await createCrl(fx.ca, [{ serial: serialOf(who), revokedAt: new Date(Date.now() - hour) }], { nextUpdate: new Date(Date.now() + hour) })).der;
    const g = await gate({ GATE_REVOCATION: 'ocsp,crl', GATE_OCSP_URL: 'http://127.0.0.1:9/', GATE_REVOCATION_TIMEOUT_MS: '500' });
    expect(await challenge(g, who)).toEqual({ status: 403, code: 'client_cert_revoked' });
    const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
    expect(text).toMatch(/^agent_gate_revocation_checks_total\{method="ocsp",result="error"\} 1$/m);
    expect(text).toMatch(/^agent_gate_revocation_checks_total\{method="crl",result="revoked"\} 1$/m);
  });
});
