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
