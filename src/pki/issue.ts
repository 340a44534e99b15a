/**
 * The signing step shared by every certificate of the dev PKI: serial, validity window,
 * key identifiers and the issuer checks, so each certificate kind only lists its extensions.
 * @module
 */
import { X509Certificate as NodeX509, createPrivateKey, randomBytes } from 'node:crypto';
import { x509 } from '../lib/x509.js';
import { algParams, generateKey, importSigningKey, type KeyAlg } from './keys.js';

/** A certificate with its private key: PEM for files and TLS options, DER for hashing. */
export interface KeyAndCert {
  certPem: string;
  keyPem: string;
  certDer: Buffer;
}

/** A validity window as callers pass it. */
export interface ValidityOptions {
  notBefore?: Date;
  notAfter?: Date;
}

const DAY_MS = 86_400_000;
// Back-dating absorbs clock skew between the machine that issues and the one that verifies.
const BACKDATE_MS = 5 * 60_000;

/**
 * A random 16-byte serial (RFC 5280 section 4.1.2.2: positive, at most 20 octets). The top bit
 * is cleared so the DER INTEGER stays positive without a pad byte, and the next one set so
 * the serial never shrinks: always exactly 16 octets, 126 random bits.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

/**
 * The window of a new certificate: explicit dates win; the default end is `days` after now,
 * cut back to the issuer's end so a default never outlives its chain.
 */
export function validityWindow(opts: ValidityOptions, days: number, issuerNotAfter?: Date): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  const notBefore = opts.notBefore ?? new Date(now - BACKDATE_MS);
  let notAfter = opts.notAfter ?? new Date(now + days * DAY_MS);
  if (!opts.notAfter && issuerNotAfter && issuerNotAfter < notAfter) notAfter = issuerNotAfter;
  if (!(notBefore < notAfter)) {
    throw new TypeError(`notBefore (${notBefore.toISOString()}) must be before notAfter (${notAfter.toISOString()})`);
  }
  return { notBefore, notAfter };
}

/** A parsed issuer: its certificate and the key to sign with. */
export interface Issuer {
  cert: x509.X509Certificate;
  keyPem: string;
}

/** Parses and checks an issuer: its key must match its certificate and it must be a CA. */
export function parseIssuer(issuer: KeyAndCert): Issuer {
  const nodeCert = new NodeX509(issuer.certDer);
  if (!nodeCert.checkPrivateKey(createPrivateKey(issuer.keyPem))) {
    throw new TypeError('issuer key does not match the issuer certificate');
  }
  if (!nodeCert.ca) throw new TypeError(`issuer ${nodeCert.subject} is not a CA (basicConstraints CA:false or absent)`);
  return { cert: new x509.X509Certificate(issuer.certDer), keyPem: issuer.keyPem };
}

/** What a certificate kind decides: its subject, key type, window and extensions. */
export interface IssueRequest {
  commonName: string;
  alg: KeyAlg;
  notBefore: Date;
  notAfter: Date;
  /** Extensions besides SKI and AKI, which are derived here from the keys. */
  extensions: x509.Extension[];
}

/** Generates a key and signs a certificate for it, self-signed when `issuer` is null. */
export async function signCertificate(issuer: Issuer | null, req: IssueRequest): Promise<KeyAndCert> {
  const { keys, keyPem } = await generateKey(req.alg);
  const subject = [{ CN: [req.commonName] }];
  const extensions = [...req.extensions, await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)];

  let signingKey = keys.privateKey;
  let signingAlgorithm = algParams(req.alg).signature;
  if (issuer) {
    ({ privateKey: signingKey, signature: signingAlgorithm } = await importSigningKey(issuer.keyPem));
    extensions.push(await authorityKeyId(issuer.cert));
  }

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    // The issuer's own encoded name, not a rebuilt one: chain building compares names byte-wise.
    issuer: issuer ? issuer.cert.subjectName : subject,
    notBefore: req.notBefore,
    notAfter: req.notAfter,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm,
    extensions,
  });
  const certDer = Buffer.from(cert.rawData);
  return { certPem: cert.toString('pem') + '\n', keyPem, certDer };
}

/** The AKI of certificates and CRLs `issuer` signs: its SKI when present, so both match exactly (RFC 5280 4.2.1.1). */
export async function authorityKeyId(issuer: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return new x509.AuthorityKeyIdentifierExtension(ski.keyId);
  return x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey);
}
