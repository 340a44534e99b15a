/**
 * The forwarded-header signature of PROTOCOL.md section 6: canonical string, HMAC, key list.
 * Pure: no I/O. nginx/gate_sign.js implements the same string; test/vectors/forwarded.json
 * holds the vectors both are checked against.
 * @module
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { thumbprintOf } from './certificate.js';

/** The eight headers nginx sets, in the contract's order. */
export const FWD_HEADERS = [
  'x-gate-fwd-kid',
  'x-gate-fwd-ts',
  'x-gate-fwd-id',
  'x-gate-fwd-host',
  'x-gate-fwd-addr',
  'x-gate-fwd-verify',
  'x-gate-fwd-cert',
  'x-gate-fwd-sig',
] as const;

/**
 * Authorizer mode (section 13): the original request's method and `$request_uri`, sent with the
 * eight headers above on nginx's `auth_request` subrequest to `P/v1/authorize`.
 */
export const AUTHZ_TARGET_HEADERS = ['x-gate-fwd-method', 'x-gate-fwd-uri'] as const;

/** First line of the canonical string in forwarded mode. */
export const FWD_VERSION = 'agent-gate-fwd-v1';
/**
 * First line in authorizer mode: a signature made for a decision can never verify as a
 * forwarded request (or the reverse), even under the same key.
 */
export const AUTHZ_VERSION = 'agent-gate-authz-v1';

/** The signed fields. */
export interface ForwardedFields {
  kid: string;
  ts: string;
  id: string;
  method: string;
  /** `$request_uri`, raw. */
  requestUri: string;
  host: string;
  addr: string;
  verify: string;
  /** Thumbprint of the client certificate, or `-` when none. */
  thumbprint: string;
}

/** The canonical string: the fields joined by `\n`, no trailing newline. */
export function canonicalString(f: ForwardedFields, version: typeof FWD_VERSION | typeof AUTHZ_VERSION = FWD_VERSION): string {
  return [version, f.kid, f.ts, f.id, f.method, f.requestUri, f.host, f.addr, f.verify, f.thumbprint].join('\n');
}

/** base64url(HMAC-SHA256(secret, canonical)). */
export function signCanonical(secret: Buffer, canonical: string): string {
  return createHmac('sha256', secret).update(canonical, 'utf8').digest('base64url');
}

/** Constant-time comparison of a presented signature with the expected one. */
export function signatureMatches(presented: string, expected: string): boolean {
  // Pad both to the same length first, so the comparison time does not reveal the length.
  const a = Buffer.alloc(64);
  const b = Buffer.alloc(64);
  const pa = Buffer.from(presented, 'utf8');
  const pb = Buffer.from(expected, 'utf8');
  pa.copy(a, 0, 0, 64);
  pb.copy(b, 0, 0, 64);
  return timingSafeEqual(a, b) && pa.length === pb.length;
}

/** Minimum HMAC secret length (section 6). */
export const MIN_SECRET_BYTES = 32;

/**
 * Parses `kid1:<base64>,kid2:<base64>`; throws TypeError naming the problem by entry number,
 * never by its text: with kid and secret swapped (an easy mistake) the "kid" is the secret.
 */
export function parseHmacKeys(spec: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const parts = spec.split(',').map((s) => s.trim()).filter(Boolean);
  for (const [n, part] of parts.entries()) {
    const entry = `entry ${n + 1}`;
    const i = part.indexOf(':');
    if (i <= 0) throw new TypeError(`${entry}: must be kid:<base64 secret>`);
    const kid = part.slice(0, i);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(kid)) throw new TypeError(`${entry}: the kid must be 1-64 of [A-Za-z0-9._-]`);
    const b64 = part.slice(i + 1);
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(b64)) throw new TypeError(`${entry}: the secret is not base64`);
    const secret = Buffer.from(b64, 'base64');
    if (secret.length < MIN_SECRET_BYTES) throw new TypeError(`${entry}: the secret is ${secret.length} bytes; at least ${MIN_SECRET_BYTES} required (kid first, then the secret)`);
    if (keys.has(kid)) throw new TypeError(`${entry}: its kid is listed twice`);
    keys.set(kid, secret);
  }
  if (keys.size === 0) throw new TypeError('no keys');
  return keys;
}

const PEM_BLOCK = /^-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----\r?\n?$/;

/**
 * The DER bytes and thumbprint of an `x-gate-fwd-cert` value (`$ssl_client_escaped_cert`),
 * or undefined for `-`. This runs before the HMAC check, so it only decodes: exactly one PEM
 * certificate block and nothing after it, strict base64; the bytes are not parsed as a
 * certificate here (that happens after the signature holds). No size rule here: the request's
 * header limit bounds this work, and section 2's 16 KiB limit is judged after the signature, so
 * nginx's honest signature over a too-large certificate gets `client_cert_invalid` as in direct
 * mode, not a signature error. Throws TypeError.
 */
export function certFromHeader(value: string): { der: Buffer; thumbprint: string } | undefined {
  if (value === '-') return undefined;
  let pem: string;
  try {
    pem = decodeURIComponent(value);
  } catch {
    throw new TypeError('certificate header is not URL-encoded');
  }
  const m = PEM_BLOCK.exec(pem);
  if (!m) throw new TypeError('certificate header is not exactly one PEM certificate');
  const b64 = m[1]!.replace(/\r?\n/g, '');
  if (b64.length === 0 || b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new TypeError('certificate header is not base64');
  const der = Buffer.from(b64, 'base64');
  // Node's decoder skips what it does not understand; insist the text was exactly this DER.
  if (der.toString('base64') !== b64) throw new TypeError('certificate header is not canonical base64');
  return { der, thumbprint: thumbprintOf(der) };
}
