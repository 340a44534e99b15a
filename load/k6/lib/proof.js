/* global crypto */
/**
 * The agent side of PROTOCOL.md section 4 inside k6: base64url, the agent key (PKCS#8 PEM,
 * ECDSA P-256) imported into k6's WebCrypto, and the ES256 proof JWS.
 *
 * k6's `crypto.subtle` has no Ed25519, so load-test agents use P-256 certificates; ECDSA
 * `sign` returns the 64-byte r||s that JWS ES256 uses (RFC 7518 section 3.4), no DER to unwrap.
 */
import encoding from 'k6/encoding';

/** The proof's JWS header, serialised once. */
const HEADER_B64 = b64urlString(JSON.stringify({ alg: 'ES256', typ: 'agent-gate-proof+jwt' }));

/** base64url without padding of a string's UTF-8 bytes. */
export function b64urlString(s) {
  return encoding.b64encode(s, 'rawurl');
}

/** base64url without padding of bytes (ArrayBuffer). */
export function b64urlBytes(buf) {
  return encoding.b64encode(buf, 'rawurl');
}

/** Decodes base64url (padding optional) to a string. */
export function b64urlDecodeString(s) {
  return encoding.b64decode(s.replace(/=+$/, ''), 'rawurl', 's');
}

/** ASCII string to bytes (the JWS signing input is base64url, hence ASCII). */
function asciiBytes(s) {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * The DER bytes of a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). SEC1 (`BEGIN EC PRIVATE
 * KEY`) keys are refused with the openssl command that converts them.
 */
export function pkcs8FromPem(pem, where) {
  if (/-----BEGIN EC PRIVATE KEY-----/.test(pem)) {
    throw new Error(`${where}: SEC1 EC key; convert it with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pkcs8.pem`);
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(pem)) throw new Error(`${where}: encrypted keys are not supported; use an unencrypted PKCS#8 key`);
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m) throw new Error(`${where}: no PKCS#8 private key (-----BEGIN PRIVATE KEY-----) found`);
  return encoding.b64decode(m[1].replace(/\s+/g, ''), 'std');
}

/** Imports the agent's P-256 private key for signing (once per VU: callers cache the promise). */
export async function importAgentKey(pkcs8) {
  try {
    return await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  } catch (err) {
    throw new Error(`agent key is not an ECDSA P-256 PKCS#8 key (k6 can only sign ES256 proofs): ${err}`);
  }
}

/**
 * The compact JWS proof for `challenge` (the JSON of `POST P/v1/challenge`):
 * header `{alg: ES256, typ}`, payload `{cid, nonce, aud, iat}` with iat in Unix seconds.
 */
export async function signProof(key, challenge, nowMs = Date.now()) {
  const payload = { cid: challenge.challenge_id, nonce: challenge.nonce, aud: challenge.aud, iat: Math.floor(nowMs / 1000) };
  const input = `${HEADER_B64}.${b64urlString(JSON.stringify(payload))}`;
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, asciiBytes(input));
  return `${input}.${b64urlBytes(sig)}`;
}
