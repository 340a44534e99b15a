/**
 * PEM certificate bundles. node:crypto's `X509Certificate` reads one certificate, and Node's TLS
 * takes an empty `ca` to mean the system roots and silently skips what it cannot read in one, so
 * a bundle is checked here before it is trusted.
 * @module
 */
import { X509Certificate } from 'node:crypto';

const BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM bundle, in order; throws when a block is not a certificate. Text outside the blocks is ignored. */
export function pemCertificates(pem: string): X509Certificate[] {
  return (pem.match(BLOCK) ?? []).map((block) => new X509Certificate(block));
}

/**
 * Throws a TypeError saying what is wrong with `pem` as a CA bundle to trust (`holds no PEM
 * certificate`, `holds a PEM block that is not a certificate`), for the caller to prefix with
 * where the bundle came from.
 */
export function checkCaBundle(pem: string): void {
  let certificates: number;
  try {
    certificates = pemCertificates(pem).length;
  } catch (err) {
    throw new TypeError('holds a PEM block that is not a certificate', { cause: err });
  }
  if (certificates === 0) throw new TypeError('holds no PEM certificate');
}
