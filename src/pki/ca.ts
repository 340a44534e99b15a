/**
 * Root and intermediate CAs of the dev PKI, in memory.
 * @module
 */
import { x509 } from '../lib/x509.js';
import type { KeyAlg } from './keys.js';
import { parseIssuer, signCertificate, validityWindow, type KeyAndCert, type ValidityOptions } from './issue.js';

/** Subject CN of the generated dev CA; prod refuses a trust bundle holding it (PROTOCOL.md section 11). */
export const DEV_CA_COMMON_NAME = 'agent-gate dev CA';

const CA_DAYS = 3650;
const INTERMEDIATE_DAYS = 1825;

/** Options of {@link createCa}. */
export interface CreateCaOptions extends ValidityOptions {
  alg?: KeyAlg;
  commonName?: string;
  /** basicConstraints pathLenConstraint; absent means unlimited. */
  pathLength?: number;
}

/** Options of {@link createIntermediateCa}. */
export interface CreateIntermediateCaOptions extends ValidityOptions {
  alg?: KeyAlg;
  commonName?: string;
}

// RFC 5280 4.2.1.3 and 4.2.1.9: a CA key signs certificates and CRLs; both extensions critical.
function caExtensions(pathLength: number | undefined): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
}

/** In memory: a self-signed CA (basicConstraints CA:true critical, keyUsage keyCertSign+cRLSign, SKI). */
export async function createCa(opts: CreateCaOptions = {}): Promise<KeyAndCert> {
  if (opts.pathLength !== undefined && !(Number.isInteger(opts.pathLength) && opts.pathLength >= 0)) {
    throw new TypeError(`pathLength must be a non-negative integer, got ${opts.pathLength}`);
  }
  return signCertificate(null, {
    commonName: opts.commonName ?? DEV_CA_COMMON_NAME,
    alg: opts.alg ?? 'ec-p256',
    ...validityWindow(opts, CA_DAYS),
    extensions: caExtensions(opts.pathLength),
  });
}

/** In memory: an intermediate CA signed by `issuer` (pathLength 0: it issues end entities only). */
export async function createIntermediateCa(issuer: KeyAndCert, opts: CreateIntermediateCaOptions = {}): Promise<KeyAndCert> {
  const parsed = parseIssuer(issuer);
  return signCertificate(parsed, {
    commonName: opts.commonName ?? 'agent-gate dev intermediate CA',
    alg: opts.alg ?? 'ec-p256',
    ...validityWindow(opts, INTERMEDIATE_DAYS, parsed.cert.notAfter),
    extensions: caExtensions(0),
  });
}
