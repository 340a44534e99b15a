/**
 * Strict base64url (RFC 7515 section 2): only the URL-safe alphabet, no padding, and no
 * non-zero unused bits, so one value has exactly one encoding. jose on Node 20 decodes
 * leniently; proofs and tokens are checked with this first.
 * @module
 */

/** True when `s` is the one canonical base64url encoding of its bytes. */
export function isCanonicalBase64url(s: string): boolean {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return false;
  return Buffer.from(s, 'base64url').toString('base64url') === s;
}

/** True when every dot-separated segment of a compact JWS is canonical base64url. */
export function isCanonicalCompactJws(jws: string): boolean {
  const parts = jws.split('.');
  return parts.length === 3 && parts.every(isCanonicalBase64url);
}
