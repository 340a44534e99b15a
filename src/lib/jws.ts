/**
 * The compact-JWS pieces of the hot path on node:crypto (proof verification, access-token
 * signing and verification), decoding exactly as jose 6 does so that both paths accept and
 * refuse the same input: strict base64url (no padding, no whitespace, no non-zero unused
 * bits), a UTF-8 decoder that is fatal on invalid bytes and drops a leading BOM (jose's
 * `strictDecoder`), and plain JSON objects only. Pure.
 * @module
 */
import { constants, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { ProofAlg } from './proof-alg.js';

/** The three decoded parts of a compact JWS and the bytes its signature covers. */
export interface CompactJws {
  /** The first segment, still base64url (the signing input is built from it). */
  headerB64: string;
  header: Buffer;
  payload: Buffer;
  signature: Buffer;
  /** ASCII `header.payload`. */
  signingInput: Buffer;
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * The bytes of `s` when it is the one canonical base64url encoding of them, else undefined.
 * Same verdict as a decode/re-encode round trip, without the re-encode: the last character
 * must not carry bits past the end of the data.
 */
export function decodeCanonicalBase64url(s: string): Buffer | undefined {
  const rem = s.length % 4;
  if (rem === 1 || !B64URL.test(s)) return undefined;
  if (rem !== 0) {
    const last = B64URL_ALPHABET.indexOf(s[s.length - 1]!);
    // 2 chars carry 8 bits (4 unused), 3 chars carry 16 bits (2 unused).
    if ((last & (rem === 2 ? 0x0f : 0x03)) !== 0) return undefined;
  }
  return Buffer.from(s, 'base64url');
}

/** Splits and decodes a compact JWS; undefined unless it is exactly three canonical base64url segments. */
export function parseCompactJws(jws: string): CompactJws | undefined {
  const d1 = jws.indexOf('.');
  if (d1 === -1) return undefined;
  const d2 = jws.indexOf('.', d1 + 1);
  if (d2 === -1 || jws.indexOf('.', d2 + 1) !== -1) return undefined;
  const headerB64 = jws.slice(0, d1);
  const header = decodeCanonicalBase64url(headerB64);
  const payload = decodeCanonicalBase64url(jws.slice(d1 + 1, d2));
  const signature = decodeCanonicalBase64url(jws.slice(d2 + 1));
  if (!header || !payload || !signature) return undefined;
  // A canonical segment is ASCII, so latin1 is the exact byte form of the signing input.
  return { headerB64, header, payload, signature, signingInput: Buffer.from(jws.slice(0, d2), 'latin1') };
}

// jose 6 decodes JOSE headers and JWT claims with exactly this decoder.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Whether `v` is a plain JSON object (jose's `isObject` for JSON.parse output). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `bytes` as a JSON object decoded the way jose decodes a header or a claims set, else undefined. */
export function parseJsonObjectStrict(bytes: Uint8Array): Record<string, unknown> | undefined {
  let v: unknown;
  try {
    v = JSON.parse(strictUtf8.decode(bytes));
  } catch {
    return undefined;
  }
  return isJsonObject(v) ? v : undefined;
}

// PS256 is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (RFC 7518 section 3.5;
// jose passes saltLength 32 to WebCrypto). Node's default for verify is RSA_PSS_SALTLEN_AUTO,
// which would also accept other salt lengths, so the length is always given.
const PS256_SALT_LENGTH = 32;

/** Raw (IEEE P1363 / RFC 8032) signature lengths; RSA's is the modulus length, left to OpenSSL. */
const FIXED_SIG_LENGTH: Partial<Record<ProofAlg, number>> = { EdDSA: 64, ES256: 64, ES384: 96 };

type VerifyKey = KeyObject | { key: KeyObject; dsaEncoding: 'ieee-p1363' } | { key: KeyObject; padding: number; saltLength: number };

/** node:crypto's digest and key arguments for `alg`. */
function verifyArgs(alg: ProofAlg, key: KeyObject): [string | null, VerifyKey] | undefined {
  switch (alg) {
    case 'EdDSA':
      return [null, key];
    case 'ES256':
      return ['sha256', { key, dsaEncoding: 'ieee-p1363' }];
    case 'ES384':
      return ['sha384', { key, dsaEncoding: 'ieee-p1363' }];
    case 'PS256':
      return ['sha256', { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: PS256_SALT_LENGTH }];
    default:
      return undefined;
  }
}

/**
 * Whether `signature` is a valid `alg` signature of `data` by `key` (a public KeyObject of the
 * type `alg` belongs to; the caller has matched them). Never throws: malformed is false.
 */
export function verifyJwsSignature(alg: ProofAlg, key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  const fixed = FIXED_SIG_LENGTH[alg];
  if (fixed !== undefined && signature.length !== fixed) return false;
  const args = verifyArgs(alg, key);
  if (!args) return false;
  try {
    return cryptoVerify(args[0], data, args[1], signature);
  } catch {
    return false;
  }
}

/**
 * {@link verifyJwsSignature} on libuv's thread pool (node:crypto's callback form), for the
 * algorithms too slow to run on the event loop. Never rejects.
 */
export function verifyJwsSignatureOffLoop(alg: ProofAlg, key: KeyObject, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const fixed = FIXED_SIG_LENGTH[alg];
  const args = verifyArgs(alg, key);
  if ((fixed !== undefined && signature.length !== fixed) || !args) return Promise.resolve(false);
  return new Promise((resolve) => {
    try {
      cryptoVerify(args[0], data, args[1], signature, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

/** An EdDSA (Ed25519) compact JWS of `payload` under the already-encoded protected header. */
export function signEdDsaCompact(headerB64: string, payload: string, privateKey: KeyObject): string {
  const input = `${headerB64}.${Buffer.from(payload, 'utf8').toString('base64url')}`;
  return `${input}.${cryptoSign(null, Buffer.from(input, 'latin1'), privateKey).toString('base64url')}`;
}
