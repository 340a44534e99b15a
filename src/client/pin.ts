/**
 * Pinning of the gate's certificate by public key, in the format of HPKP (RFC 7469):
 * `sha256/<base64 of SHA-256 over the DER SubjectPublicKeyInfo>`.
 *
 * The pin is checked in addition to normal certificate verification, never instead of it:
 * Node calls `checkServerIdentity` only after the chain has verified against the trust
 * anchors (`ca`, or the system roots), and {@link pinnedServerIdentity} runs Node's own host
 * name check before the pin check.
 *
 * Which certificate may match: the leaf, or any certificate above it in the chain the gate
 * presented (intermediates, and the trust anchor Node appends from `ca`), as HPKP allowed.
 * A certificate above the leaf counts only when every link from the leaf up to it is backed
 * by a valid signature: Node builds the displayed chain by matching names, not signatures, so
 * without that check a server holding any trusted certificate could append a made-up
 * "issuer" carrying the pinned key and pass.
 *
 * Note on Node's peer certificate object: its `pubkey` field is *not* the SPKI for every key
 * type (for EC keys it is the bare curve point, for Ed25519 it is absent), so pins are
 * computed from the SubjectPublicKeyInfo bytes cut out of `raw` (the certificate's DER).
 * @module
 */
import { createHash, X509Certificate } from 'node:crypto';
import { checkServerIdentity, type DetailedPeerCertificate, type PeerCertificate } from 'node:tls';
import { GateClientError } from './client-error.js';

/** The only pin hash of the format, as in HPKP. */
export const PIN_PREFIX = 'sha256/';

/** Longest chain walked above the leaf (the contract's own chains are at most 4 deep). */
const MAX_CHAIN = 10;

interface Tlv {
  tag: number;
  /** Offset of the value. */
  start: number;
  /** Offset just past the value. */
  end: number;
}

function malformed(): never {
  throw new TypeError('certificate DER is malformed');
}

/** One DER tag-length-value at `off`, bounded by `limit`. */
function tlv(der: Uint8Array, off: number, limit: number): Tlv {
  if (off + 2 > limit) malformed();
  const tag = der[off]!;
  let len = der[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) malformed();
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > limit) malformed();
  return { tag, start, end };
}

/**
 * The DER SubjectPublicKeyInfo of a DER certificate, exactly as encoded in it (RFC 5280:
 * Certificate → tbsCertificate → [version], serialNumber, signature, issuer, validity,
 * subject, subjectPublicKeyInfo). Throws TypeError when the DER is not shaped like that.
 */
export function spkiFromCertificateDer(der: Uint8Array): Buffer {
  const cert = tlv(der, 0, der.length);
  if (cert.tag !== 0x30) malformed();
  const tbs = tlv(der, cert.start, cert.end);
  if (tbs.tag !== 0x30) malformed();
  let off = tbs.start;
  if (tlv(der, off, tbs.end).tag === 0xa0) off = tlv(der, off, tbs.end).end; // [0] version
  for (const tag of [0x02, 0x30, 0x30, 0x30, 0x30]) {
    // serialNumber, signature, issuer, validity, subject
    const f = tlv(der, off, tbs.end);
    if (f.tag !== tag) malformed();
    off = f.end;
  }
  const spki = tlv(der, off, tbs.end);
  if (spki.tag !== 0x30) malformed();
  return Buffer.from(der.buffer, der.byteOffset + off, spki.end - off);
}

function pinOfDer(der: Uint8Array): string {
  return PIN_PREFIX + createHash('sha256').update(spkiFromCertificateDer(der)).digest('base64');
}

/**
 * The pin (`sha256/<base64>`) of a certificate: PEM (the first certificate of a bundle), DER,
 * or an `X509Certificate`. Same value as
 * `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`.
 */
export function spkiPin(cert: string | Buffer | X509Certificate): string {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  return pinOfDer(x.raw);
}

/**
 * Validates the `pins` option: a non-empty list of `sha256/` + standard base64 of 32 bytes.
 * Throws TypeError otherwise.
 */
export function parsePins(pins: unknown): ReadonlySet<string> {
  if (!Array.isArray(pins) || pins.length === 0) {
    throw new TypeError('GateClient: pins must be a non-empty array of "sha256/<base64>" strings (omit it to disable pinning)');
  }
  for (const p of pins) {
    const b64 = typeof p === 'string' && p.startsWith(PIN_PREFIX) ? p.slice(PIN_PREFIX.length) : '';
    const raw = /^[A-Za-z0-9+/]{43}=$/.test(b64) ? Buffer.from(b64, 'base64') : undefined;
    if (!raw || raw.length !== 32 || raw.toString('base64') !== b64) {
      throw new TypeError(`GateClient: pin ${JSON.stringify(p)} is not "sha256/" followed by the base64 of a SHA-256 hash`);
    }
  }
  return new Set(pins as string[]);
}

/** True when `child` carries a valid signature made with `parent`'s public key. */
function signedBy(child: PeerCertificate, parent: PeerCertificate): boolean {
  try {
    return new X509Certificate(child.raw).verify(new X509Certificate(parent.raw).publicKey);
  } catch {
    return false;
  }
}

/**
 * The pin check on the chain Node built for a fresh handshake (`getPeerCertificate(true)`):
 * undefined when the leaf, or a certificate linked to it by verified signatures, matches one of
 * `pins`; else the GateClientError `pin_mismatch` (status 0: no HTTP exchange took place).
 */
export function checkPins(peer: PeerCertificate, pins: ReadonlySet<string>): GateClientError | undefined {
  let leafPin: string;
  try {
    leafPin = pinOfDer(peer.raw);
  } catch (err) {
    return new GateClientError('pin_mismatch', 0, { message: "pin_mismatch: the gate's certificate could not be parsed", cause: err });
  }
  if (pins.has(leafPin)) return undefined;
  let child: PeerCertificate = peer;
  const seen = new Set<PeerCertificate>([peer]);
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    const parent = (child as DetailedPeerCertificate).issuerCertificate as PeerCertificate | undefined;
    if (!parent?.raw || seen.has(parent) || !signedBy(child, parent)) break;
    seen.add(parent);
    try {
      if (pins.has(pinOfDer(parent.raw))) return undefined;
    } catch {
      break;
    }
    child = parent;
  }
  return new GateClientError('pin_mismatch', 0, {
    message: `pin_mismatch: no certificate of the gate's chain matches the configured pins (leaf ${leafPin})`,
  });
}

/**
 * A `checkServerIdentity` for `tls.connect` (and undici's `connect` options): Node's host name
 * check first, then {@link checkPins}. Node calls it only after the chain verified, and only
 * for fresh handshakes; a resumed session skips it, which is sound because the client keeps a
 * session (./connector.ts: one per client and server name, so one pin set) only from a
 * connection on which this check passed.
 */
export function pinnedServerIdentity(
  pins: ReadonlySet<string>,
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (hostname, cert) => checkServerIdentity(hostname, cert) ?? checkPins(cert, pins);
}
