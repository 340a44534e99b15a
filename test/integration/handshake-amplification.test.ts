/**
 * Issue 13 class 4, functional side (the CPU figures are load/handshake-bench.ts's): a client
 * presenting its own long chain of RSA CAs with huge public exponents is refused with 403
 * client_cert_invalid, and the gate does no chain or signature work of its own for it (OpenSSL
 * already refused it in the handshake). A huge-exponent CA that does chain to GATE_CLIENT_CA
 * is refused by the key caps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { codeIn, RAW_CHALLENGE, tlsExchange } from '../helpers/http.js';
import { caExt, hugeExponentRsaKey, leafExt, OpensslPki } from '../helpers/openssl-pki.js';

let fx: Fixtures;
let gw: RunningGate;
const o = new OpensslPki();
/** Leaf first, then its own CAs up to a self-signed root nobody trusts. */
let untrusted: KeyAndCert[];
/** Leaf, then a huge-exponent intermediate issued by the trusted CA. */
let anchored: KeyAndCert[];

beforeAll(async () => {
  fx = await makeFixtures();
  // RSA-3072 (OpenSSL allows exponents beyond 64 bits up to 3072-bit moduli) with ~3000-bit e.
  const keys = [0, 1, 2].map(() => hugeExponentRsaKey(3072, 3000));
  const root = await o.cert({ subj: '/CN=agent-gate test CA', ext: caExt(), keyPem: keys[0]! });
  const mid = await o.cert({ subj: '/CN=amplifier 2', ext: caExt(), keyPem: keys[1]!, issuer: root });
  const low = await o.cert({ subj: '/CN=amplifier 1', ext: caExt(), keyPem: keys[2]!, issuer: mid });
  const leaf = await o.cert({ subj: '/CN=amplified', ext: leafExt('URI:urn:agent:amplified'), keyPem: await o.key(), issuer: low });
  untrusted = [leaf, low, mid, root];
  const big = await o.cert({ subj: '/CN=huge exponent sub-CA', ext: caExt(), keyPem: keys[1]!, issuer: fx.ca });
  const leaf2 = await o.cert({ subj: '/CN=anchored', ext: leafExt('URI:urn:agent:anchored'), keyPem: await o.key(), issuer: big });
  anchored = [leaf2, big];
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: 'http://127.0.0.1:9' }));
}, 90_000);

afterAll(async () => {
  await gw?.close();
});

async function challenge(chain: KeyAndCert[]): Promise<{ status: number; code?: string }> {
  const r = await tlsExchange(gw.url, { ca: fx.ca.certPem, cert: chain.map((c) => c.certPem).join(''), key: chain[0]!.keyPem, timeoutMs: 20_000 }, RAW_CHALLENGE);
  return { status: r.status, code: codeIn(r.body) };
}

describe('handshake amplification (class 4)', () => {
  it('an untrusted chain of huge-exponent RSA CAs: 403 client_cert_invalid, no chain work of the gate', async () => {
    const resolver = gw.gate.services.identity.direct!;
    const before = { ...resolver.stats };
    for (let i = 0; i < 3; i++) expect(await challenge(untrusted)).toEqual({ status: 403, code: 'client_cert_invalid' });
    expect(resolver.stats).toEqual(before);
  });

  it('a huge-exponent CA under GATE_CLIENT_CA (OpenSSL accepts it): refused by the key caps', async () => {
    const resolver = gw.gate.services.identity.direct!;
    const before = resolver.stats.chainChecks;
    expect(await challenge(anchored)).toEqual({ status: 403, code: 'client_cert_invalid' });
    expect(resolver.stats.chainChecks).toBe(before + 1);
  });

  it('control: an ordinary agent gets its challenge', async () => {
    expect(await challenge([fx.agents.p256])).toMatchObject({ status: 201 });
  });
});
