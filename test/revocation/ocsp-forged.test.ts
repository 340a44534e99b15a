/**
 * The gate's OCSP response verification (src/revocation/ocsp.ts) against forged answers built
 * with the project's responder code: only an answer signed by the issuer (or its certified
 * OCSPSigning delegate), about the certificate asked for, with a live nextUpdate, counts.
 */
import { X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildOcspRequest, OcspResponseError, verifyOcspResponse, type OcspQuestion } from '../../src/revocation/index.js';
import { buildOcspResponse, createCa, issueAgentCert, issueOcspSignerCert, type KeyAndCert } from '../../src/pki/index.js';

let ca: KeyAndCert;
let agent: KeyAndCert;
let other: KeyAndCert;
let issuer: X509Certificate;
let q: OcspQuestion;
const good = () => ({ status: 'good' as const });

beforeAll(async () => {
  ca = await createCa({ alg: 'ec-p256', commonName: 'ocsp forge test CA' });
  agent = await issueAgentCert(ca, 'ocsp-agent', { alg: 'ec-p256' });
  other = await issueAgentCert(ca, 'ocsp-other', { alg: 'ec-p256' });
  issuer = new X509Certificate(ca.certPem);
  q = await buildOcspRequest(agent.certDer, issuer);
});

const verify = (der: Buffer) => verifyOcspResponse(der, q, issuer, Date.now());

describe('forged OCSP responses are refused, genuine ones accepted', () => {
  it('a genuine answer from the issuer: good; revoked when revoked', () => {
    expect(verify(buildOcspResponse({ request: q.der, issuer: ca, lookup: good })).status).toBe('good');
    const revoked = buildOcspResponse({ request: q.der, issuer: ca, lookup: () => ({ status: 'revoked', revokedAt: new Date(Date.now() - 60_000) }) });
    expect(verify(revoked).status).toBe('revoked');
  });

  it('a delegated responder certified by the issuer for OCSPSigning is believed', async () => {
    const signer = await issueOcspSignerCert(ca);
    expect(verify(buildOcspResponse({ request: q.der, issuer: ca, signer, lookup: good })).status).toBe('good');
  });

  it('signed by an unrelated key: refused', async () => {
    const stranger = await createCa({ alg: 'ec-p256', commonName: 'ocsp forge test CA' });
    expect(() => verify(buildOcspResponse({ request: q.der, issuer: ca, lookup: good, signWith: { keyPem: stranger.keyPem } }))).toThrow(OcspResponseError);
  });

  it('a delegate certified by another CA: refused', async () => {
    const stranger = await createCa({ alg: 'ec-p256', commonName: 'another CA' });
    const signer = await issueOcspSignerCert(stranger);
    expect(() => verify(buildOcspResponse({ request: q.der, issuer: ca, signer, lookup: good }))).toThrow(/signature/);
  });

  it('an answer about another serial: refused', () => {
    const otherSerial = new X509Certificate(other.certPem).serialNumber;
    expect(() => verify(buildOcspResponse({ request: q.der, issuer: ca, lookup: good, overrideSerial: otherSerial }))).toThrow(/no answer/);
  });

  it('a stale answer (nextUpdate passed): refused, never good', () => {
    const hour = 3600_000;
    expect(() =>
      verify(buildOcspResponse({ request: q.der, issuer: ca, lookup: good, thisUpdate: new Date(Date.now() - 3 * hour), nextUpdate: new Date(Date.now() - hour) })),
    ).toThrow(/stale/);
  });

  it('no nextUpdate and no nonce: believed only while thisUpdate is within the max age (a captured answer cannot be replayed for ever)', () => {
    // A request without a nonce, so the answer echoes none.
    const bare = new pkijs.OCSPRequest();
    bare.tbsRequest.requestList = [new pkijs.Request({ reqCert: q.certId })];
    const bareDer = Buffer.from(bare.toSchema(true).toBER(false));
    const maxAge = 300_000;
    const old = buildOcspResponse({ request: bareDer, issuer: ca, lookup: good, thisUpdate: new Date(Date.now() - 2 * 3600_000), nextUpdate: null });
    expect(() => verifyOcspResponse(old, q, issuer, Date.now(), 60_000, maxAge)).toThrow(/stale/);
    const recent = buildOcspResponse({ request: bareDer, issuer: ca, lookup: good, thisUpdate: new Date(Date.now() - 60_000), nextUpdate: null });
    expect(verifyOcspResponse(recent, q, issuer, Date.now(), 60_000, maxAge).status).toBe('good');
    // Our nonce echoed: made for this request, however old its thisUpdate claims to be.
    const echoed = buildOcspResponse({ request: q.der, issuer: ca, lookup: good, thisUpdate: new Date(Date.now() - 2 * 3600_000), nextUpdate: null });
    expect(verifyOcspResponse(echoed, q, issuer, Date.now(), 60_000, maxAge).status).toBe('good');
  });

  it('an answer from the future (thisUpdate ahead beyond skew): refused', () => {
    expect(() => verify(buildOcspResponse({ request: q.der, issuer: ca, lookup: good, thisUpdate: new Date(Date.now() + 3600_000) }))).toThrow(/future/);
  });

  it('an answer to another request (nonce echoed from a different request): refused', async () => {
    const otherQ = await buildOcspRequest(agent.certDer, issuer);
    expect(() => verify(buildOcspResponse({ request: otherQ.der, issuer: ca, lookup: good }))).toThrow(/nonce/);
  });

  it('garbage and error statuses: refused', () => {
    expect(() => verify(Buffer.from('not ocsp'))).toThrow(OcspResponseError);
  });
});
