/**
 * checkAcceptedChain: the contract's own rules (section 2) on a chain a path validator has
 * accepted, driven with real certificates made by the openssl CLI. Each refusal is asserted
 * by its reason, with a control that differs only in the rule under test.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateError } from '../../src/errors.js';
import { checkAcceptedChain, CRITICAL_EXTENSIONS_ALLOWED, TrustBundle } from '../../src/identity/certificate.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { caExt, hugeExponentRsaKey, leafExt, OpensslPki } from '../helpers/openssl-pki.js';

const o = new OpensslPki();
let root: KeyAndCert;
let trust: TrustBundle;
const x = (c: KeyAndCert) => new X509Certificate(c.certDer);

function reason(chain: KeyAndCert[], bundle = trust): string {
  try {
    checkAcceptedChain(chain.map(x), bundle, Date.now());
  } catch (err) {
    expect(err).toBeInstanceOf(GateError);
    expect((err as GateError).code).toBe('client_cert_invalid');
    return (err as GateError).detail ?? '';
  }
  return 'accepted';
}

const leafUnder = async (issuer: KeyAndCert, san: string, extra: string[] = [], ku?: string, keyKind = 'ec') =>
  o.cert({ subj: '/CN=accepted-chain agent', ext: leafExt(san, extra, ku), keyPem: await o.key(keyKind), issuer });

beforeAll(async () => {
  root = await o.cert({ subj: '/CN=accepted-chain root', ext: caExt(), keyPem: await o.key() });
  trust = new TrustBundle(root.certPem);
}, 60_000);

afterAll(() => {
  // OpensslPki's scratch directory lives in the OS temp dir; nothing else is held.
});

describe('checkAcceptedChain', () => {
  it('accepts a plain chain and names the agent and its issuer', async () => {
    const leaf = await leafUnder(root, 'URI:urn:agent:plain');
    const id = checkAcceptedChain([x(leaf), x(root)], trust, Date.now());
    expect(id.agentId).toBe('urn:agent:plain');
    expect(Buffer.from(id.issuer.raw).equals(root.certDer)).toBe(true);
  });

  it('key caps on every certificate: RSA over 4096 bits and a huge exponent, on the leaf and on a CA', async () => {
    const big = await leafUnder(root, 'URI:urn:agent:rsa4160', [], undefined, 'rsa:4160');
    expect(reason([big, root])).toMatch(/^certificate: RSA key of 4160 bits, over 4096/);
    const hugeE = await o.cert({ subj: '/CN=huge exponent CA', ext: caExt(), keyPem: hugeExponentRsaKey(2048, 100), issuer: root });
    const below = await leafUnder(hugeE, 'URI:urn:agent:below-huge-e');
    expect(reason([below, hugeE, root])).toMatch(/^chain certificate 1: RSA public exponent outside/);
    const ok4096 = await leafUnder(root, 'URI:urn:agent:rsa4096', [], undefined, 'rsa:4096');
    expect(reason([ok4096, root])).toBe('accepted');
  }, 120_000);

  it('critical extensions: the allow-list passes, anything else critical is refused on the leaf and on a CA', async () => {
    expect([...CRITICAL_EXTENSIONS_ALLOWED]).toContain('2.5.29.30');
    const allowed = await leafUnder(root, 'URI:urn:agent:crit-ok', ['certificatePolicies=critical,1.3.6.1.4.1.55555.2']);
    expect(reason([allowed, root])).toBe('accepted');
    const unknownLeaf = await leafUnder(root, 'URI:urn:agent:crit-unknown', ['1.3.6.1.4.1.55555.9=critical,ASN1:NULL']);
    expect(reason([unknownLeaf, root])).toBe('certificate: unsupported critical extension 1.3.6.1.4.1.55555.9');
    const nonCritical = await leafUnder(root, 'URI:urn:agent:noncrit', ['1.3.6.1.4.1.55555.9=ASN1:NULL']);
    expect(reason([nonCritical, root])).toBe('accepted');
    // A known extension outside the list, critical: policyConstraints on a CA.
    const ca = await o.cert({ subj: '/CN=policy-constrained CA', ext: caExt(['policyConstraints=critical,requireExplicitPolicy:0']), keyPem: await o.key(), issuer: root });
    const below = await leafUnder(ca, 'URI:urn:agent:below-pc');
    expect(reason([below, ca, root])).toBe('chain certificate 1: unsupported critical extension 2.5.29.36');
  });

  it('digitalSignature: a leaf with keyUsage must allow it (keyAgreement-only and keyEncipherment-only refused); no keyUsage is fine', async () => {
    expect(reason([await leafUnder(root, 'URI:urn:agent:ka', [], 'critical,keyAgreement'), root])).toBe('key usage present without digitalSignature');
    expect(reason([await leafUnder(root, 'URI:urn:agent:ke', [], 'critical,keyEncipherment'), root])).toBe('key usage present without digitalSignature');
    expect(reason([await leafUnder(root, 'URI:urn:agent:no-ku', [], ''), root])).toBe('accepted');
    expect(reason([await leafUnder(root, 'URI:urn:agent:ds-ke', [], 'critical,digitalSignature,keyEncipherment'), root])).toBe('accepted');
  });

  it('depth: at most 4 links from the leaf to the anchor', async () => {
    const ints: KeyAndCert[] = [];
    let issuer = root;
    for (let i = 1; i <= 4; i++) ints.push((issuer = await o.cert({ subj: `/CN=depth ${i}`, ext: caExt(), keyPem: await o.key(), issuer })));
    const up = (n: number) => ints.slice(0, n).reverse();
    expect(reason([await leafUnder(ints[2]!, 'URI:urn:agent:d4'), ...up(3), root])).toBe('accepted');
    expect(reason([await leafUnder(ints[3]!, 'URI:urn:agent:d5'), ...up(4), root])).toBe('chain longer than 4');
  });

  it('anchor in the bundle: a chain ending elsewhere, a bare leaf, and a bundle certificate as the agent are refused', async () => {
    const foreign = await o.cert({ subj: '/CN=accepted-chain root', ext: caExt(), keyPem: await o.key() });
    const leaf = await leafUnder(foreign, 'URI:urn:agent:foreign');
    expect(reason([leaf, foreign])).toBe('chain does not end at a GATE_CLIENT_CA certificate');
    expect(reason([leaf])).toBe('chain does not reach a trusted CA');
    // A leaf the operator put in the bundle next to its root: never an agent.
    const pinned = await leafUnder(root, 'URI:urn:agent:pinned');
    expect(reason([pinned, root], new TrustBundle(root.certPem + pinned.certPem))).toBe('the agent certificate is itself in GATE_CLIENT_CA');
    expect(reason([pinned, root])).toBe('accepted');
  });

  it('a CA restricting its EKU without clientAuth, and a CA certificate as the leaf, are refused', async () => {
    const ca = await o.cert({ subj: '/CN=server-only CA', ext: caExt(['extendedKeyUsage=serverAuth']), keyPem: await o.key(), issuer: root });
    expect(reason([await leafUnder(ca, 'URI:urn:agent:under-server-ca'), ca, root])).toBe('chain certificate 1 restricts its extended key usage without clientAuth');
    const sub = await o.cert({ subj: '/CN=sub CA as leaf', ext: caExt(), keyPem: await o.key(), issuer: root });
    expect(reason([sub, root])).toBe('a CA certificate cannot be an agent certificate');
  });
});
