/**
 * Token-signing keys (PROTOCOL.md section 11): `GATE_SIGNING_JWK`, then
 * `GATE_SIGNING_KEY_FILE`, then (dev only) a generated key. Only Ed25519 (EdDSA) signs tokens.
 * @module
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';

/** One signing key: the private half only for the key that signs. */
export interface SigningKey {
  kid: string;
  publicKey: KeyObject;
  privateKey?: KeyObject;
  publicJwk: JWK;
}

/** A problem with a key source, naming the variable to change. */
export class KeySourceError extends Error {
  constructor(readonly variable: string, why: string) {
    super(why);
    this.name = 'KeySourceError';
  }
}

/** The loaded key set: `keys[0]` signs, all verify. */
export interface SigningKeySet {
  keys: SigningKey[];
  /** Where they came from: 'jwk', 'file' or 'ephemeral'. */
  source: 'jwk' | 'file' | 'ephemeral';
}

const MAX_KEYS = 10;

/** Loads the signing keys from the configured source. */
export async function loadSigningKeys(opts: { jwk?: string; keyFile?: string; allowEphemeral: boolean }): Promise<SigningKeySet> {
  if (opts.jwk) return { keys: await parseKeyText(opts.jwk, 'GATE_SIGNING_JWK'), source: 'jwk' };
  if (opts.keyFile) {
    let text: string;
    try {
      text = readFileSync(opts.keyFile, 'utf8');
    } catch (err) {
      throw new KeySourceError('GATE_SIGNING_KEY_FILE', `cannot read ${opts.keyFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    return { keys: await parseKeyText(text, 'GATE_SIGNING_KEY_FILE'), source: 'file' };
  }
  if (!opts.allowEphemeral) throw new KeySourceError('GATE_SIGNING_KEY_FILE', 'no signing key configured, and ephemeral keys are dev-only');
  const { privateKey } = generateKeyPairSync('ed25519');
  return { keys: [await toSigningKey(privateKey, undefined, 'ephemeral')], source: 'ephemeral' };
}

/** A new Ed25519 private JWK with `kid` = its RFC 7638 thumbprint, for `agent-gate keygen`. */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'EdDSA', use: 'sig' };
}

async function parseKeyText(text: string, variable: string): Promise<SigningKey[]> {
  const trimmed = text.trim();
  if (trimmed.startsWith('-----BEGIN')) {
    let key: KeyObject;
    try {
      key = createPrivateKey(trimmed);
    } catch {
      throw new KeySourceError(variable, 'PEM does not hold a private key');
    }
    return [await toSigningKey(key, undefined, variable)];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(trimmed);
  } catch {
    throw new KeySourceError(variable, 'neither a JWK, a JWK Set nor a PEM private key');
  }
  const list = isObject(parsed) && Array.isArray(parsed.keys) ? (parsed.keys as unknown[]) : [parsed];
  if (list.length === 0 || list.length > MAX_KEYS) throw new KeySourceError(variable, `a JWK Set must hold 1 to ${MAX_KEYS} keys`);
  const keys: SigningKey[] = [];
  for (const [i, jwk] of list.entries()) {
    if (!isObject(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
      throw new KeySourceError(variable, `key ${i} is not an Ed25519 (OKP) JWK`);
    }
    if (i === 0 && typeof jwk.d !== 'string') throw new KeySourceError(variable, 'the first key signs, so it must be private (have "d")');
    let key: KeyObject;
    try {
      key = typeof jwk.d === 'string' ? createPrivateKey({ key: jwk as never, format: 'jwk' }) : createPublicKey({ key: jwk as never, format: 'jwk' });
    } catch {
      throw new KeySourceError(variable, `key ${i} does not import`);
    }
    // Node builds an OKP private key from "d" alone; an "x" of another key would publish a
    // public key under this kid that does not verify what "d" signs.
    if (key.type === 'private' && createPublicKey(key).export({ format: 'jwk' }).x !== jwk.x) {
      throw new KeySourceError(variable, `key ${i}: "x" is not the public half of "d"`);
    }
    keys.push(await toSigningKey(key, typeof jwk.kid === 'string' ? jwk.kid : undefined, variable));
  }
  if (new Set(keys.map((k) => k.kid)).size !== keys.length) throw new KeySourceError(variable, 'duplicate kid in the JWK Set');
  // One key under two kids: tokens it signed would verify under either, and a rotation step that
  // drops one kid would not retire the key.
  const xs = list.map((jwk) => (jwk as { x: string }).x);
  if (new Set(xs).size !== xs.length) throw new KeySourceError(variable, 'the same key is listed twice (under two kids)');
  return keys;
}

async function toSigningKey(key: KeyObject, kid: string | undefined, variable: string): Promise<SigningKey> {
  const isPrivate = key.type === 'private';
  const publicKey = isPrivate ? createPublicKey(key) : key;
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new KeySourceError(variable, `token-signing keys must be Ed25519, got ${publicKey.asymmetricKeyType}`);
  const jwk = await exportJWK(publicKey);
  const id = kid ?? (await calculateJwkThumbprint(jwk));
  return { kid: id, publicKey, privateKey: isPrivate ? key : undefined, publicJwk: { ...jwk, kid: id, alg: 'EdDSA', use: 'sig' } };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
