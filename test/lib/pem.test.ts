import { describe, expect, it } from 'vitest';
import { pemCertificates } from '../../src/lib/pem.js';
import { createCa } from '../../src/pki/index.js';

describe('pemCertificates', () => {
  it('reads every certificate of a bundle in order, ignoring text around the blocks', async () => {
    const [a, b] = await Promise.all([createCa({ commonName: 'pem A' }), createCa({ commonName: 'pem B' })]);
    const certs = pemCertificates(`# bundle\n${a.certPem}\nsome comment\n${b.certPem}`);
    expect(certs.map((c) => c.subject)).toEqual(['CN=pem A', 'CN=pem B']);
  });

  it('finds nothing in empty text, a key or base64 without the armour, and throws on a block that is not a certificate', async () => {
    const ca = await createCa({ commonName: 'pem C' });
    expect(pemCertificates('')).toEqual([]);
    expect(pemCertificates(ca.keyPem)).toEqual([]);
    expect(pemCertificates(ca.certPem.replace(/-----[^-]+-----/g, ''))).toEqual([]);
    expect(() => pemCertificates(`${ca.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`)).toThrow();
  });
});
