/**
 * Key pairs for the dev PKI: generation per {@link KeyAlg}, PKCS#8 PEM export, and loading an
 * issuer's PEM key back as a WebCrypto signing key with the signature algorithm it implies.
 * @module
 */
import { createPrivateKey, webcrypto, type KeyObject } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A key type the dev PKI can generate; the set PROTOCOL.md section 2 allows for agents. */
export type KeyAlg = 'ec-p256' | 'ec-p384' | 'ed25519' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';

/** Every {@link KeyAlg}, for CLI choices and validation. */
export const KEY_ALGS: readonly KeyAlg[] = ['ec-p256', 'ec-p384', 'ed25519', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

/** The WebCrypto parameters for a key: import/generate parameters and certificate signature. */
interface AlgParams {
  key: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | webcrypto.Algorithm;
  signature: webcrypto.Algorithm & { hash?: string };
}

const RSA_EXPONENT = new Uint8Array([1, 0, 1]);

function rsa(modulusLength: number): AlgParams {
  const hash = 'SHA-256';
  return {
    key: { name: 'RSASSA-PKCS1-v1_5', hash, publicExponent: RSA_EXPONENT, modulusLength },
    signature: { name: 'RSASSA-PKCS1-v1_5', hash },
  };
}

function ec(namedCurve: 'P-256' | 'P-384'): AlgParams {
  // Hash strength follows the curve (RFC 5480 section 4), so P-384 signs with SHA-384.
  const hash = namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256';
  return { key: { name: 'ECDSA', namedCurve }, signature: { name: 'ECDSA', hash } };
}

const ED25519: AlgParams = { key: { name: 'Ed25519' }, signature: { name: 'Ed25519' } };

/** The WebCrypto parameters of `alg`; throws a TypeError naming the value when unknown. */
export function algParams(alg: KeyAlg): AlgParams {
  switch (alg) {
    case 'ec-p256':
      return ec('P-256');
    case 'ec-p384':
      return ec('P-384');
    case 'ed25519':
      return ED25519;
    case 'rsa-2048':
      return rsa(2048);
    case 'rsa-3072':
      return rsa(3072);
    case 'rsa-4096':
      return rsa(4096);
    default:
      throw new TypeError(`unknown key algorithm ${JSON.stringify(alg)} (expected one of ${KEY_ALGS.join(', ')})`);
  }
}

/** A fresh key pair with its private half as PKCS#8 PEM. */
export interface GeneratedKey {
  keys: CryptoKeyPair;
  keyPem: string;
}

/** Generates a key pair of `alg`; RSA generation runs off the main thread inside WebCrypto. */
export async function generateKey(alg: KeyAlg): Promise<GeneratedKey> {
  const { key } = algParams(alg);
  // Extractable only so the private key can be written out once as PKCS#8.
  const keys = (await webcrypto.subtle.generateKey(key, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { keys, keyPem: toPem('PRIVATE KEY', pkcs8) };
}

/** PEM armour with 64-column lines, the layout openssl and Node both emit. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The {@link KeyAlg} of an existing key, or a TypeError for types the dev PKI does not issue with. */
export function keyAlgOf(key: KeyObject): KeyAlg {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      return 'ed25519';
    case 'ec':
      if (details.namedCurve === 'prime256v1') return 'ec-p256';
      if (details.namedCurve === 'secp384r1') return 'ec-p384';
      break;
    case 'rsa':
      if (details.modulusLength === 2048) return 'rsa-2048';
      if (details.modulusLength === 3072) return 'rsa-3072';
      if (details.modulusLength === 4096) return 'rsa-4096';
      break;
  }
  const what = [key.asymmetricKeyType, details.namedCurve ?? details.modulusLength].filter(Boolean).join(' ');
  throw new TypeError(`unsupported issuer key type: ${what}`);
}

/** An issuer's signing key, imported from PEM, and the certificate signature algorithm it implies. */
export interface SigningKey {
  privateKey: CryptoKey;
  signature: webcrypto.Algorithm;
}

/** Imports a PEM private key (PKCS#8, or the legacy SEC1/PKCS#1 forms openssl writes) for signing. */
export async function importSigningKey(keyPem: string): Promise<SigningKey> {
  const keyObject = createPrivateKey(keyPem);
  const { key, signature } = algParams(keyAlgOf(keyObject));
  // Re-exported as PKCS#8 so any PEM form openssl or Node accepts can be imported here.
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, key, false, ['sign']);
  return { privateKey, signature };
}
