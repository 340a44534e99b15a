/**
 * Certificate pinning (src/client/pin.ts): the HPKP pin format, checked against openssl, and
 * pins enforced on every TLS connection to the real gate, including its own certificate
 * chains (GATE_TLS_CERT with an intermediate) and an attacker's decoy chain.
 */
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GateClient, GateClientError, spkiPin, type GateClientOptions } from '../../src/client/index.js';
import { spkiFromCertificateDer } from '../../src/client/pin.js';
import { createCa, createIntermediateCa, issueServerCert, type KeyAndCert } from '../../src/pki/index.js';
import type { ContractFixtures } from '../conformance/contract.js';
import { makeCert, makeDecoyChain } from '../helpers/openssl-certs.js';
import { caught, clientOf, makeContractFixtures, startClientGate, type ClientGate } from './harness.js';

let fx: ContractFixtures;
let serverCert: string;
/** A server PKI of three levels: root -> intermediate -> the gate's leaf. */
let chain: { root: KeyAndCert; intermediate: KeyAndCert; leaf: KeyAndCert };
const gates: ClientGate[] = [];
const clients: GateClient[] = [];

beforeAll(async () => {
  fx = await makeContractFixtures();
  serverCert = readFileSync(fx.serverCertFile, 'utf8');
  const root = await createCa({ commonName: 'Test Root' });
  const intermediate = await createIntermediateCa(root, { commonName: 'Test Intermediate' });
  chain = { root, intermediate, leaf: await issueServerCert(intermediate) };
});
afterAll(() => rmSync(fx.dir, { recursive: true, force: true }));
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(gates.splice(0).map((g) => g.close()));
});

async function startGate(opts: Parameters<typeof startClientGate>[1] = {}): Promise<ClientGate> {
  const g = await startClientGate(fx, opts);
  gates.push(g);
  return g;
}

function client(g: ClientGate, extra: Partial<GateClientOptions> = {}): GateClient {
  const c = clientOf(fx, g.url, extra);
  clients.push(c);
  return c;
}

/** The HPKP recipe with openssl, independent of the code under test. */
function opensslPin(certPem: string): string {
  const pub = execFileSync('openssl', ['x509', '-pubkey', '-noout'], { input: certPem });
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
  return `sha256/${createHash('sha256').update(der).digest('base64')}`;
}

/** The gate's certificate as a raw TLS client sees it. */
function peerOf(g: ClientGate, ca: string): Promise<{ peer: DetailedPeerCertificate; authorized: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), ca, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem }, () => {
      resolve({ peer: s.getPeerCertificate(true), authorized: s.authorized });
      s.end();
    });
    s.on('error', reject);
  });
}

describe('spkiPin', () => {
  it.each(['p256', 'p384', 'ed25519', 'rsa2048'] as const)('equals the openssl HPKP recipe for %s', (kind) => {
    const c = makeCert(kind, `pin-${kind}`);
    const pin = spkiPin(c.cert);
    expect(pin).toBe(opensslPin(c.cert));
    expect(pin).toMatch(/^sha256\/[A-Za-z0-9+/]{43}=$/);
    expect(spkiPin(Buffer.from(c.cert))).toBe(pin);
    const x = new X509Certificate(c.cert);
    expect(spkiPin(x)).toBe(pin);
    expect(spkiPin(x.raw)).toBe(pin);
    expect(spkiFromCertificateDer(x.raw)).toEqual(x.publicKey.export({ type: 'spki', format: 'der' }));
  });

  it("is not the hash of Node's peer-certificate `pubkey`, which for EC keys is the bare point", async () => {
    const g = await startGate();
    const { peer } = await peerOf(g, fx.ca.certPem);
    expect(peer.pubkey?.length).toBe(65); // 0x04 || x || y, no SPKI wrapping
    expect(`sha256/${createHash('sha256').update(peer.pubkey!).digest('base64')}`).not.toBe(spkiPin(serverCert));
    expect(spkiPin(peer.raw)).toBe(spkiPin(serverCert));
  });

  it('the pins option is validated', async () => {
    const g = await startGate();
    const good = spkiPin(serverCert);
    for (const pins of [[], ['sha256/abc'], [good.replace('sha256/', 'sha1/')], [good.slice(0, -2) + '=='], [`${good} `], [42]]) {
      expect(() => client(g, { pins: pins as string[] })).toThrow(TypeError);
    }
    expect(() => client(g, { pins: [good] })).not.toThrow();
  });
});

describe('certificate pinning', () => {
  it('refuses a gate certificate that does not match the pin: pin_mismatch, nothing sent, no retry', async () => {
    const g = await startGate();
    const other = makeCert('p256', 'other-gate');
    const c = client(g, { pins: [spkiPin(other.cert)] });
    const err = await caught(c.getToken());
    expect(err).toBeInstanceOf(GateClientError);
    expect(err).toMatchObject({ name: 'GateClientError', code: 'pin_mismatch', status: 0 });
    expect((err as Error).message).toContain(spkiPin(serverCert)); // names the pin it saw
    expect(g.tcp).toBe(1);
    // A GET, which is retried after connection errors, is not retried after a pin failure.
    const err2 = await caught(c.request('/x'));
    expect(err2).toMatchObject({ code: 'pin_mismatch' });
    expect(g.tcp).toBe(2);
    expect(g.calls).toEqual({ challenge: 0, token: 0, gated: 0 });
  });

  it('accepts a matching leaf pin, among others (backup pins), and still resumes TLS sessions', async () => {
    // The fault proxy in front of the gate resets the connection after the first request.
    const g = await startGate({ proxy: true });
    const c = client(g, { pins: [spkiPin(makeCert('p256', 'backup').cert), spkiPin(serverCert)] });
    expect((await c.request('/bye')).status).toBe(200);
    g.proxy!.mode = 'reset';
    g.proxy!.mode = 'pass';
    expect((await c.request('/after')).status).toBe(200);
    expect(g.tls).toEqual({ connections: 2, resumed: 1 });
  });

  it.each([
    ['intermediate', () => spkiPin(chain.intermediate.certPem)],
    ['root (trust anchor)', () => spkiPin(chain.root.certPem)],
    ['leaf', () => spkiPin(chain.leaf.certPem)],
  ])('accepts a pin of the %s of a verified chain', async (_what, pin) => {
    const g = await startGate({ tls: { cert: chain.leaf.certPem + chain.intermediate.certPem, key: chain.leaf.keyPem } });
    const c = client(g, { ca: chain.root.certPem, pins: [pin()] });
    expect((await c.request('/chained')).status).toBe(200);
  });

  it('a wrong CA is still refused even with a matching pin (the pin adds to verification)', async () => {
    const g = await startGate();
    const other = await createCa({ commonName: 'some other CA' });
    const c = client(g, { ca: other.certPem, pins: [spkiPin(serverCert)] });
    const err = await caught(c.getToken());
    expect(err).not.toBeInstanceOf(GateClientError);
    expect((err as { code?: string }).code).toMatch(/CERT|SIGNATURE|ISSUER/);
    expect(g.calls.challenge).toBe(0);
  });

  it('the host name is still checked with a matching pin', async () => {
    const g = await startGate();
    const c = client(g, { servername: 'not-the-gate.example', pins: [spkiPin(serverCert)] });
    const err = await caught(c.getToken());
    expect((err as { code?: string }).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(g.calls.challenge).toBe(0);
  });

  it('refuses a decoy "issuer" that carries the pinned key without having signed the leaf', async () => {
    // The attacker holds a certificate from a CA the agent trusts (rogue.ca) and appends a
    // made-up certificate with the pinned intermediate's public key to its chain; the real
    // gate serves that chain (GATE_TLS_CERT).
    const rogue = makeDecoyChain(chain.intermediate.certPem);
    const g = await startGate({ tls: { cert: rogue.chain, key: rogue.leaf.key } });
    const ca = chain.root.certPem + rogue.ca.cert;
    // Precondition: TLS verification passes and Node's displayed chain shows the pinned key
    // right above the leaf, so a check that trusted that chain would be fooled.
    const { peer, authorized } = await peerOf(g, ca);
    expect(authorized).toBe(true);
    expect(spkiPin(peer.issuerCertificate.raw)).toBe(spkiPin(chain.intermediate.certPem));

    const c = client(g, { ca, pins: [spkiPin(chain.intermediate.certPem)] });
    expect(await caught(c.getToken())).toMatchObject({ code: 'pin_mismatch', status: 0 });
    expect(g.calls.challenge).toBe(0);
    // Without pins, the same client setup connects (the refusal is the pin's).
    expect((await client(g, { ca }).request('/x')).status).toBe(200);
  });
});
