/**
 * RFC 5280 6.3.3 CRL choice (src/revocation/crl-scope.ts crlVerdict) on real signed CRLs: the
 * corners the gate-level tests in test/integration/revocation-crl.test.ts do not reach.
 */
import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { x509 } from '../../src/lib/x509.js';
import { createCa, createCrl, issueAgentCert, type CreateCrlOptions, type CrlEntryInput, type KeyAndCert } from '../../src/pki/index.js';
import { parseCrl, type ParsedCrl } from '../../src/revocation/crl.js';
import { certCrlScope, crlCovers, crlVerdict } from '../../src/revocation/crl-scope.js';

const URL_A = 'http://crl.example/a.crl';
let ca: KeyAndCert;
let agent: KeyAndCert;
let serial: string;
const UNTIL = Date.now() + 3600_000;

beforeAll(async () => {
  ca = await createCa({ alg: 'ec-p256', commonName: 'selection CA' });
  agent = await issueAgentCert(ca, 'sel-unit', { alg: 'ec-p256', crlUrl: URL_A });
  serial = new X509Certificate(agent.certPem).serialNumber;
});

async function crl(entries: CrlEntryInput[], opts: CreateCrlOptions): Promise<ParsedCrl> {
  const parsed = parseCrl((await createCrl(ca, entries, opts)).der);
  expect(parsed.verifiedBy(new X509Certificate(ca.certPem))).toBe(true);
  return parsed;
}
const listed = (): CrlEntryInput[] => [{ serial, revokedAt: new Date(Date.now() - 60_000), reason: 'keyCompromise' }];
const status = (crls: ParsedCrl[], certDer = agent.certDer) => crlVerdict(crls, certCrlScope(certDer), serial, UNTIL).status;

describe('scope (issuingDistributionPoint)', () => {
  it('a distribution point CRL covers the certificates that point at it, no others', async () => {
    const scoped = await crl([], { idp: { uris: [URL_A] } });
    const other = await crl([], { idp: { uris: ['http://crl.example/b.crl'] } });
    expect(crlCovers(scoped, certCrlScope(agent.certDer))).toBe(true);
    expect(crlCovers(other, certCrlScope(agent.certDer))).toBe(false);
    // A certificate without a CRL distribution point is covered by no distribution point CRL.
    const bare = await issueAgentCert(ca, 'sel-bare', { alg: 'ec-p256' });
    expect(crlCovers(scoped, certCrlScope(bare.certDer))).toBe(false);
  });

  it('user-only CRLs do not cover a CA certificate, CA-only CRLs do not cover an agent; indirect CRLs cover nothing here', async () => {
    const userOnly = await crl([], { idp: { onlyContainsUserCerts: true } });
    const caOnly = await crl([], { idp: { onlyContainsCACerts: true } });
    const indirect = await crl([], { idp: { indirectCRL: true } });
    expect(crlCovers(userOnly, certCrlScope(agent.certDer))).toBe(true);
    expect(crlCovers(userOnly, certCrlScope(ca.certDer))).toBe(false);
    expect(crlCovers(caOnly, certCrlScope(ca.certDer))).toBe(true);
    expect(crlCovers(caOnly, certCrlScope(agent.certDer))).toBe(false);
    expect(crlCovers(indirect, certCrlScope(agent.certDer))).toBe(false);
  });

  it('a reason partition never says good, but a revocation it lists counts', async () => {
    const partition = await crl(listed(), { crlNumber: 3, idp: { onlySomeReasons: 0x40 } });
    const emptyPartition = await crl([], { crlNumber: 3, idp: { onlySomeReasons: 0x40 } });
    const full = await crl([], { crlNumber: 2 });
    expect(status([emptyPartition])).toBe('unknown');
    expect(status([full, partition])).toBe('revoked');
    expect(status([full, emptyPartition])).toBe('good');
  });
});

describe('deltas', () => {
  it('applied only on a base of the same scope with BaseCRLNumber <= base number < delta number', async () => {
    const base = await crl([], { crlNumber: 10 });
    const fits = await crl(listed(), { crlNumber: 11, deltaBase: 10 });
    expect(status([base, fits])).toBe('revoked');
    // Needs a newer base than the one at hand: ignored.
    expect(status([base, await crl(listed(), { crlNumber: 12, deltaBase: 11 })])).toBe('good');
    // Not newer than the base: nothing to add.
    expect(status([base, await crl(listed(), { crlNumber: 10, deltaBase: 9 })])).toBe('good');
    // Another scope than the base's.
    expect(status([base, await crl(listed(), { crlNumber: 11, deltaBase: 10, idp: { onlyContainsUserCerts: true } })])).toBe('good');
    // A base without a number cannot have deltas.
    expect(status([await crl([], { crlNumber: null }), fits])).toBe('good');
  });

  it('the newest applicable delta wins', async () => {
    const base = await crl(listed(), { crlNumber: 10 });
    const removes = await crl([{ serial, revokedAt: new Date(), reason: 'removeFromCRL' }], { crlNumber: 11, deltaBase: 10 });
    const reRevokes = await crl(listed(), { crlNumber: 12, deltaBase: 10 });
    expect(status([base, removes])).toBe('good');
    expect(status([base, reRevokes, removes])).toBe('revoked');
  });
});

describe('extensions', () => {
  it('an unknown critical CRL or entry extension marks the CRL unusable; unknown non-critical ones do not', async () => {
    const ext = (critical: boolean) => new x509.Extension('1.3.6.1.4.1.55555.1', critical, new Uint8Array([5, 0]));
    expect((await crl([], { extensions: [ext(true)] })).unusable).toMatch(/unknown critical CRL extension 1\.3\.6\.1\.4\.1\.55555\.1/);
    expect((await crl([{ serial: '01', revokedAt: new Date(), extensions: [ext(true)] }], {})).unusable).toMatch(/unknown critical CRL entry extension/);
    expect((await crl([{ serial: '01', revokedAt: new Date(), reason: 'keyCompromise', extensions: [ext(false)] }], { extensions: [ext(false)] })).unusable).toBeUndefined();
  });

  it('orders by CRL number, not by thisUpdate, when every CRL has one', async () => {
    const higherButOlder = await crl(listed(), { crlNumber: 9, thisUpdate: new Date(Date.now() - 7200_000) });
    const lowerButNewer = await crl([], { crlNumber: 8 });
    expect(status([lowerButNewer, higherButOlder])).toBe('revoked');
  });
});
