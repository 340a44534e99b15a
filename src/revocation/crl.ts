/**
 * CRLs (RFC 5280 section 5): parsed with a minimal DER reader (general ASN.1 libraries cap
 * node counts or take minutes and gigabytes on a million-entry CRL), the signature verified
 * with node:crypto against the issuing CA, revoked serials indexed for O(1) lookups. Pure.
 * @module
 */
import { verify as cryptoVerify, type X509Certificate as NodeX509 } from 'node:crypto';
import { certificateSubject, children, integerHex, oidOf, rawOf, readTlv, timeOf, type Tlv } from '../lib/der.js';
import { x509 } from '../lib/x509.js';

/** A parsed CRL, not yet trusted. */
export interface ParsedCrl {
  /** Issuer Name, raw DER, compared byte for byte with the CA's subject. */
  issuerDer: Buffer;
  thisUpdate: number;
  /** Unix ms; undefined when the CRL names none (then it is only as fresh as the max-stale bound). */
  nextUpdate: number | undefined;
  revoked: ReadonlySet<string>;
  /** Whether `issuer` is this CRL's issuer and its key verifies the signature (cached per CA). */
  verifiedBy(issuer: NodeX509): boolean;
}

/** Signature algorithms accepted on CRLs (node:crypto digest names; null for Ed25519). */
const SIG_ALGS: Record<string, string | null> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null,
};

function toDer(data: Buffer | string): Buffer {
  const text = typeof data === 'string' ? data : data.subarray(0, 64).toString('latin1');
  if (text.includes('-----BEGIN X509 CRL-----')) {
    const pem = typeof data === 'string' ? data : data.toString('latin1');
    const m = /-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/.exec(pem);
    if (!m) throw new Error('CRL: PEM block not closed');
    return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
  }
  if (typeof data === 'string') throw new Error('CRL: neither PEM nor DER');
  return data;
}

/** Parses a PEM or DER CRL; throws on anything that is not one. */
export function parseCrl(data: Buffer | string): ParsedCrl {
  const der = toDer(data);
  let parsed: Omit<ParsedCrl, 'verifiedBy'> & { tbs: Buffer; sigAlg: string; signature: Buffer };
  try {
    parsed = parseDer(der);
  } catch (err) {
    throw new Error(`CRL does not parse: ${(err as Error).message}`);
  }
  const verdicts = new Map<string, boolean>();
  return {
    issuerDer: parsed.issuerDer,
    thisUpdate: parsed.thisUpdate,
    nextUpdate: parsed.nextUpdate,
    revoked: parsed.revoked,
    verifiedBy(issuer: NodeX509): boolean {
      const key = issuer.fingerprint256;
      let v = verdicts.get(key);
      if (v === undefined) {
        // RFC 5280 6.3.3 (f)-(g): the CRL must name this CA and carry its signature.
        v = certificateSubject(issuer.raw).equals(parsed.issuerDer) && verifySignature(parsed.sigAlg, parsed.tbs, parsed.signature, issuer);
        verdicts.set(key, v);
      }
      return v;
    },
  };
}

function verifySignature(alg: string, tbs: Buffer, signature: Buffer, issuer: NodeX509): boolean {
  const hash = SIG_ALGS[alg];
  if (hash === undefined) return false;
  try {
    return cryptoVerify(hash, tbs, issuer.publicKey, signature);
  } catch {
    return false;
  }
}

function parseDer(der: Buffer) {
  const list = readTlv(der, 0);
  if (list.tag !== 0x30 || list.end !== der.length) throw new RangeError('not a single SEQUENCE');
  const [tbsT, algT, sigT] = [...children(der, list)] as (Tlv | undefined)[];
  if (!tbsT || !algT || !sigT || tbsT.tag !== 0x30 || algT.tag !== 0x30 || sigT.tag !== 0x03) throw new RangeError('not a CertificateList');
  const sigAlg = oidOf(der, readTlv(der, algT.valueStart, algT.end));
  // BIT STRING: first content byte is the count of unused bits, 0 for signatures.
  const signature = der.subarray(sigT.valueStart + 1, sigT.end);
  const fields = [...children(der, tbsT)];
  let i = 0;
  if (fields[i]?.tag === 0x02) i++; // version
  i++; // signature AlgorithmIdentifier (must equal the outer one; the outer one is checked)
  const issuerT = fields[i++];
  if (!issuerT || issuerT.tag !== 0x30) throw new RangeError('no issuer');
  const thisUpdate = timeOf(der, fields[i++]!);
  let nextUpdate: number | undefined;
  if (fields[i] && (fields[i]!.tag === 0x17 || fields[i]!.tag === 0x18)) nextUpdate = timeOf(der, fields[i++]!);
  const revoked = new Set<string>();
  if (fields[i]?.tag === 0x30) {
    const entries = fields[i++]!;
    for (let pos = entries.valueStart; pos < entries.end; ) {
      const entry = readTlv(der, pos, entries.end);
      const serial = readTlv(der, entry.valueStart, entry.end);
      revoked.add(integerHex(der, serial));
      pos = entry.end;
    }
  }
  return { issuerDer: Buffer.from(rawOf(der, issuerT)), thisUpdate, nextUpdate, revoked, tbs: rawOf(der, tbsT), sigAlg, signature };
}

/** CRL distribution point URIs (http/https) of a certificate. */
export function crlDistributionPoints(certDer: Buffer): string[] {
  try {
    const cert = new x509.X509Certificate(new Uint8Array(certDer));
    const ext = cert.getExtension(x509.CRLDistributionPointsExtension);
    const out: string[] = [];
    for (const dp of ext?.distributionPoints ?? []) {
      for (const name of dp.distributionPoint?.fullName ?? []) {
        const uri = name.uniformResourceIdentifier;
        if (uri && /^https?:\/\//i.test(uri)) out.push(uri);
      }
    }
    return out;
  } catch {
    // A malformed extension means no usable distribution point, not a crash.
    return [];
  }
}
