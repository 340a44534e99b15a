/**
 * CRLs (RFC 5280 section 5): parsed once, signature verified against the issuing CA, indexed
 * by serial for O(1) lookups. Pure: no I/O.
 * @module
 */
import type { X509Certificate as NodeX509 } from 'node:crypto';
import { x509 } from '../lib/x509.js';
import { normalizeSerial } from './serial.js';

/** A parsed CRL, not yet trusted. */
export interface ParsedCrl {
  /** Issuer DN as @peculiar/x509 prints it, for matching against certificate issuers. */
  issuer: string;
  thisUpdate: number;
  /** Unix ms; undefined when the CRL names none (then it is only as fresh as the max-stale bound). */
  nextUpdate: number | undefined;
  revoked: ReadonlySet<string>;
  /** Verifies the signature with `issuer`'s key; results are cached per issuer. */
  verifiedBy(issuer: NodeX509): Promise<boolean>;
}

/** Parses a PEM or DER CRL; throws on garbage. */
export function parseCrl(data: Buffer | string): ParsedCrl {
  const crl = new x509.X509Crl(typeof data === 'string' ? data : new Uint8Array(data));
  const revoked = new Set<string>();
  for (const e of crl.entries) revoked.add(normalizeSerial(e.serialNumber));
  const verdicts = new Map<string, Promise<boolean>>();
  return {
    issuer: crl.issuer,
    thisUpdate: crl.thisUpdate.getTime(),
    nextUpdate: crl.nextUpdate?.getTime(),
    revoked,
    verifiedBy(issuer: NodeX509): Promise<boolean> {
      const key = issuer.fingerprint256;
      let v = verdicts.get(key);
      if (!v) {
        const ca = new x509.X509Certificate(new Uint8Array(issuer.raw));
        // The CRL must name this CA as issuer and carry its signature (RFC 5280 6.3.3 (f)-(g)).
        v = ca.subject !== crl.issuer ? Promise.resolve(false) : crl.verify({ publicKey: ca }).catch(() => false);
        verdicts.set(key, v);
      }
      return v;
    },
  };
}

/** Issuer DN of a certificate in the same notation as {@link ParsedCrl.issuer}. */
export function issuerDnOf(cert: NodeX509): string {
  return new x509.X509Certificate(new Uint8Array(cert.raw)).subject;
}

/** CRL distribution point URIs (http/https) of a certificate. */
export function crlDistributionPoints(certDer: Buffer): string[] {
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
}
