import { createHash, createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient, proofAlgFor, solvePow, type Challenge } from '../../src/client/index.js';
import { checkPow, solvePowAsync } from '../../src/client/pow.js';
import { makeCert, type CertPair, type KeyKind } from '../helpers/openssl-certs.js';

function leadingZeroBits(buf: Buffer): number {
  let n = 0;
  for (const byte of buf) {
    if (byte === 0) {
      n += 8;
      continue;
    }
    n += Math.clz32(byte) - 24;
    break;
  }
  return n;
}

describe('proofAlgFor', () => {
  it('maps the allowed agent key types', () => {
    expect(proofAlgFor(generateKeyPairSync('ed25519').privateKey)).toBe('EdDSA');
    expect(proofAlgFor(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)).toBe('ES256');
    expect(proofAlgFor(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey)).toBe('ES384');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(proofAlgFor(rsa.privateKey)).toBe('PS256');
    expect(proofAlgFor(rsa.publicKey)).toBe('PS256');
  });

  it('refuses other keys with TypeError', () => {
    expect(() => proofAlgFor(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey)).toThrow(TypeError);
    expect(() => proofAlgFor(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey)).toThrow(TypeError);
    expect(() => proofAlgFor(generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey)).toThrow(TypeError);
    expect(() => proofAlgFor(generateKeyPairSync('x25519').privateKey)).toThrow(TypeError);
    expect(() => proofAlgFor(generateKeyPairSync('ed448').privateKey)).toThrow(TypeError);
    expect(() => proofAlgFor(createSecretKey(randomBytes(32)))).toThrow(TypeError);
  });
});

describe('signProof', () => {
  const kinds: [KeyKind, string][] = [
    ['ed25519', 'EdDSA'],
    ['p256', 'ES256'],
    ['p384', 'ES384'],
    ['rsa2048', 'PS256'],
  ];
  const certs = new Map<KeyKind, CertPair>();
  const clients: GateClient[] = [];

  beforeAll(() => {
    for (const [kind] of kinds) certs.set(kind, makeCert(kind, `agent-${kind}`));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
  });

  function clientFor(kind: KeyKind): GateClient {
    const pair = certs.get(kind)!;
    const c = new GateClient({ baseUrl: 'https://127.0.0.1:1', cert: pair.cert, key: pair.key });
    clients.push(c);
    return c;
  }

  const ch: Challenge = {
    challenge_id: randomBytes(16).toString('base64url'),
    nonce: randomBytes(32).toString('base64url'),
    aud: 'gate-aud',
    issued_at: Date.now(),
    expires_at: Date.now() + 3000,
    algs: ['EdDSA', 'ES256', 'ES384', 'PS256'],
    pow: null,
  };

  it.each(kinds)('%s proof verifies with jose as %s', async (kind, alg) => {
    const client = clientFor(kind);
    expect(client.proofAlg).toBe(alg);
    const jws = await client.signProof(ch);
    const header = decodeProtectedHeader(jws);
    expect(header).toEqual({ alg, typ: 'agent-gate-proof+jwt' });
    expect(header).not.toHaveProperty('kid');
    expect(header).not.toHaveProperty('jwk');
    const publicKey = createPublicKey(createPrivateKey(certs.get(kind)!.key));
    const before = Math.floor(Date.now() / 1000);
    const { payload, protectedHeader } = await jwtVerify(jws, publicKey, {
      algorithms: [alg],
      typ: 'agent-gate-proof+jwt',
      audience: 'gate-aud',
    });
    expect(protectedHeader.typ).toBe('agent-gate-proof+jwt');
    expect(Object.keys(payload).sort()).toEqual(['aud', 'cid', 'iat', 'nonce']);
    expect(payload.cid).toBe(ch.challenge_id);
    expect(payload.nonce).toBe(ch.nonce);
    expect(payload.aud).toBe('gate-aud');
    expect(Number.isInteger(payload.iat)).toBe(true);
    expect(Math.abs(payload.iat! - before)).toBeLessThanOrEqual(1);
  });

  it('applies overrides and removes fields set to undefined', async () => {
    const client = clientFor('p256');
    const jws = await client.signProof(ch, { header: { kid: 'x' }, payload: { aud: 'other', iat: undefined } });
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', typ: 'agent-gate-proof+jwt', kid: 'x' });
    const publicKey = createPublicKey(createPrivateKey(certs.get('p256')!.key));
    const { payload } = await jwtVerify(jws, publicKey, { algorithms: ['ES256'] });
    expect(payload.aud).toBe('other');
    expect(payload).not.toHaveProperty('iat');
  });

  it('refuses a key that does not match the certificate', () => {
    const other = makeCert('p256', 'other');
    expect(
      () => new GateClient({ baseUrl: 'https://127.0.0.1:1', cert: certs.get('p256')!.cert, key: other.key }),
    ).toThrow(TypeError);
  });

  it('refuses a non-https baseUrl', () => {
    const pair = certs.get('p256')!;
    for (const baseUrl of ['http://127.0.0.1:8443', 'ftp://x', 'not a url', 'https://127.0.0.1:8443/base']) {
      expect(() => new GateClient({ baseUrl, cert: pair.cert, key: pair.key })).toThrow(TypeError);
    }
  });
});

describe('solvePow', () => {
  const nonce = randomBytes(32).toString('base64url');

  it.each([0, 1, 8, 13, 16])('finds work with %i leading zero bits', (difficulty) => {
    const work = solvePow(nonce, difficulty);
    expect(work.length).toBeGreaterThan(0);
    expect(work.length).toBeLessThanOrEqual(64);
    expect(work).toMatch(/^[0-9a-z]+$/);
    const digest = createHash('sha256').update(`${nonce}.${work}`).digest();
    expect(leadingZeroBits(digest)).toBeGreaterThanOrEqual(difficulty);
    expect(checkPow(nonce, difficulty, work)).toBe(true);
  });

  it('difficulty 0 accepts the first candidate', () => {
    expect(solvePow(nonce, 0)).toBe('0');
  });

  it('async variant agrees with the sync one', async () => {
    expect(await solvePowAsync(nonce, 12)).toBe(solvePow(nonce, 12));
  });

  it('refuses bad difficulties and gives up after maxIterations', () => {
    expect(() => solvePow(nonce, -1)).toThrow(RangeError);
    expect(() => solvePow(nonce, 1.5)).toThrow(RangeError);
    expect(() => solvePow(nonce, 33)).toThrow(RangeError);
    expect(() => solvePow(nonce, 32, 100)).toThrow(/within 100 iterations/);
  });

  it('checkPow rejects wrong and over-long work', () => {
    for (let i = 0; i < 200; i++) {
      const w = i.toString(36);
      const bits = leadingZeroBits(createHash('sha256').update(`${nonce}.${w}`).digest());
      expect(checkPow(nonce, 4, w)).toBe(bits >= 4);
    }
    const work = solvePow(nonce, 8);
    expect(checkPow(nonce, 8, work)).toBe(true);
    expect(checkPow(nonce, 8, work.padStart(65, '0'))).toBe(false);
  });
});
