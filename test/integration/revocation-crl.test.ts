/**
 * Section 7, CRL source: from files and from an HTTP distribution point served by the test.
 * A CRL that is forged, from another issuer or past nextUpdate is never taken as "good"; among
 * several CRLs the newest complete one whose scope covers the certificate decides (RFC 5280
 * 6.3.3), deltas only on top of their base, and a CRL with an unknown critical extension is unusable.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { x509 } from '../../src/lib/x509.js';
import { createCa, createCrl, issueAgentCert, type CreateCrlOptions, type CrlEntryInput, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { closeAll } from '../helpers/suite.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let cdp: Server;
let cdpUrl: string;
let cdpBody: Buffer = Buffer.alloc(0);
/** Per-path bodies for the selection tests; other paths get `cdpBody`. */
const cdpBodies = new Map<string, Buffer>();
let cdpHits = 0;
const closers: (() => Promise<void>)[] = [];
const hour = 3600_000;

const serialOf = (k: KeyAndCert) => new X509Certificate(k.certPem).serialNumber;

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  cdp = createServer((_req, res) => {
    cdpHits++;
    res.writeHead(200, { 'content-type': 'application/pkix-crl' }).end(cdpBodies.get(_req.url ?? '') ?? cdpBody);
  });
  await new Promise<void>((r) => cdp.listen(0, '127.0.0.1', r));
  const a = cdp.address();
  cdpUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/ca.crl`;
});
afterAll(async () => {
  await closeAll(closers.reverse());
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

describe('CRL selection (RFC 5280 6.3.3): newest complete CRL in scope, deltas on their base, critical extensions', () => {
  const future = () => new Date(Date.now() + hour);
  const past = () => new Date(Date.now() - hour);
  let n = 0;
  async function pair(label: string): Promise<{ revoked: KeyAndCert; good: KeyAndCert; entry: CrlEntryInput }> {
    const revoked = await issueAgentCert(fx.ca, `sel-${label}-bad`, { alg: 'ec-p256' });
    const good = await issueAgentCert(fx.ca, `sel-${label}-good`, { alg: 'ec-p256' });
    return { revoked, good, entry: { serial: serialOf(revoked), revokedAt: past(), reason: 'keyCompromise' } };
  }
  async function file(entries: CrlEntryInput[], opts: CreateCrlOptions): Promise<string> {
    const crl = await createCrl(fx.ca, entries, { nextUpdate: future(), ...opts });
    return crlFile(`sel-${++n}.crl`, crl.pem);
  }
  const unknownCritical = () => new x509.Extension('1.3.6.1.4.1.55555.1', true, new Uint8Array([0x05, 0x00]));

  it('a CA-only CRL (IDP onlyContainsCACerts) listed first, newer than the full one, does not clear an agent', async () => {
    const { revoked, good, entry } = await pair('caonly');
    const caOnly = await file([], { crlNumber: 20, idp: { onlyContainsCACerts: true } });
    const full = await file([entry], { crlNumber: 10 });
    const g = await gate({ GATE_CRL_FILES: `${caOnly},${full}` });
    expect(await challenge(g, revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
    expect(await challenge(g, good)).toEqual({ status: 201, code: undefined });
    // Alone, a CA-only CRL says nothing about an agent: unknown, fail closed.
    expect(await challenge(await gate({ GATE_CRL_FILES: caOnly }), good)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('a CRL of another distribution point (IDP fullName) listed first does not clear an agent', async () => {
    const { revoked, entry } = await pair('otherdp');
    const otherDp = await file([], { crlNumber: 20, idp: { uris: ['http://crl.example/partition-7.crl'] } });
    const full = await file([entry], { crlNumber: 10 });
    expect(await challenge(await gate({ GATE_CRL_FILES: `${otherDp},${full}` }), revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
  });

  it('a delta CRL alone is never a complete answer: fail closed 503, fail open allows', async () => {
    const { revoked, entry } = await pair('deltaonly');
    void entry; // revoked in a base CRL the gate is not given
    const delta = await file([], { crlNumber: 11, deltaBase: 10 });
    expect(await challenge(await gate({ GATE_CRL_FILES: delta }), revoked)).toEqual({ status: 503, code: 'revocation_unavailable' });
    expect(await challenge(await gate({ GATE_CRL_FILES: delta, GATE_REVOCATION_FAIL: 'open' }), revoked)).toEqual({ status: 201, code: undefined });
  });

  it('a delta listed before its full CRL does not clear an agent the full CRL revokes', async () => {
    const { revoked, good, entry } = await pair('deltafirst');
    const delta = await file([], { crlNumber: 11, deltaBase: 10 });
    const full = await file([entry], { crlNumber: 10 });
    const g = await gate({ GATE_CRL_FILES: `${delta},${full}` });
    expect(await challenge(g, revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
    expect(await challenge(g, good)).toEqual({ status: 201, code: undefined });
  });

  it('a delta is applied on top of its base: a revocation it adds is refused, removeFromCRL lifts a hold', async () => {
    const { revoked, good, entry } = await pair('deltaapply');
    const held = await issueAgentCert(fx.ca, 'sel-deltaapply-held', { alg: 'ec-p256' });
    const full = await file([{ serial: serialOf(held), revokedAt: past(), reason: 'certificateHold' }], { crlNumber: 10 });
    const delta = await file([entry, { serial: serialOf(held), revokedAt: past(), reason: 'removeFromCRL' }], { crlNumber: 12, deltaBase: 9 });
    const g = await gate({ GATE_CRL_FILES: `${full},${delta}` });
    expect(await challenge(g, revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
    expect(await challenge(g, held)).toEqual({ status: 201, code: undefined });
    expect(await challenge(g, good)).toEqual({ status: 201, code: undefined });
  });

  it('an older still-valid CRL listed before the newer full one does not clear an agent (by CRL number)', async () => {
    const { revoked, good, entry } = await pair('older');
    const older = await file([], { crlNumber: 5, thisUpdate: new Date(Date.now() - 2 * hour) });
    const newer = await file([entry], { crlNumber: 6 });
    const g = await gate({ GATE_CRL_FILES: `${older},${newer}` });
    expect(await challenge(g, revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
    expect(await challenge(g, good)).toEqual({ status: 201, code: undefined });
  });

  it('without CRL numbers the newest thisUpdate decides', async () => {
    const { revoked, entry } = await pair('nonumber');
    const older = await file([], { crlNumber: null, thisUpdate: new Date(Date.now() - 2 * hour) });
    const newer = await file([entry], { crlNumber: null, thisUpdate: new Date(Date.now() - 60_000) });
    expect(await challenge(await gate({ GATE_CRL_FILES: `${older},${newer}` }), revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
  });

  it('an unknown critical CRL extension makes that CRL unusable: 503 closed, allowed and counted as an error open', async () => {
    const { good } = await pair('critical');
    const bad = await file([], { crlNumber: 30, extensions: [unknownCritical()] });
    expect(await challenge(await gate({ GATE_CRL_FILES: bad }), good)).toEqual({ status: 503, code: 'revocation_unavailable' });
    const open = await gate({ GATE_CRL_FILES: bad, GATE_REVOCATION_FAIL: 'open' });
    expect(await challenge(open, good)).toEqual({ status: 201, code: undefined });
    const text = await (await fetch(`${open.adminUrl}/metrics`)).text();
    expect(text).toMatch(/^agent_gate_revocation_checks_total\{method="crl",result="error"\} 1$/m);
  });

  it('an unknown critical CRL entry extension makes that CRL unusable: 503 closed', async () => {
    const { good, revoked } = await pair('entrycritical');
    const bad = await file([{ serial: serialOf(revoked), revokedAt: past(), extensions: [unknownCritical()] }], { crlNumber: 30 });
    expect(await challenge(await gate({ GATE_CRL_FILES: bad }), good)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('a CRL dated in the future (thisUpdate past the 60 s skew) is unusable: it never clears what the CRL in force lists, and alone it is 503', async () => {
    const { revoked, good, entry } = await pair('notyetvalid');
    const ahead = await file([], { crlNumber: 40, thisUpdate: new Date(Date.now() + 10 * 60_000), nextUpdate: new Date(Date.now() + 2 * hour) });
    const full = await file([entry], { crlNumber: 10 });
    expect(await challenge(await gate({ GATE_CRL_FILES: `${ahead},${full}` }), revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
    expect(await challenge(await gate({ GATE_CRL_FILES: ahead }), good)).toEqual({ status: 503, code: 'revocation_unavailable' });
  });

  it('an unusable newer CRL leaves the usable one to answer', async () => {
    const { revoked, entry } = await pair('unusablenewer');
    const bad = await file([], { crlNumber: 30, extensions: [unknownCritical()] });
    const full = await file([entry], { crlNumber: 10 });
    expect(await challenge(await gate({ GATE_CRL_FILES: `${bad},${full}` }), revoked)).toEqual({ status: 403, code: 'client_cert_revoked' });
  });

  it('distribution point: a delta alone there is refused closed; a full CRL whose IDP names that point applies', async () => {
    const deltaUrl = cdpUrl.replace('ca.crl', 'sel-delta.crl');
    const scopedUrl = cdpUrl.replace('ca.crl', 'sel-scoped.crl');
    const a = await issueAgentCert(fx.ca, 'sel-cdp-delta', { alg: 'ec-p256', crlUrl: deltaUrl });
    const b = await issueAgentCert(fx.ca, 'sel-cdp-scoped', { alg: 'ec-p256', crlUrl: scopedUrl });
    cdpBodies.set(new URL(deltaUrl).pathname, (await createCrl(fx.ca, [], { nextUpdate: future(), crlNumber: 11, deltaBase: 10 })).der);
    cdpBodies.set(new URL(scopedUrl).pathname, (await createCrl(fx.ca, [{ serial: serialOf(b), revokedAt: past() }], { nextUpdate: future(), crlNumber: 10, idp: { uris: [scopedUrl], onlyContainsUserCerts: true } })).der);
    const g = await gate({});
    expect(await challenge(g, a)).toEqual({ status: 503, code: 'revocation_unavailable' });
    expect(await challenge(g, b)).toEqual({ status: 403, code: 'client_cert_revoked' });
  });
});
