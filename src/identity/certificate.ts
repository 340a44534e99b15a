/**
 * Agent certificate → verified identity, exactly as PROTOCOL.md section 2 says. Pure: no I/O.
 *
 * Path validation itself is not done here: direct mode takes OpenSSL's verdict from the TLS
 * handshake (`direct.ts`), forwarded mode runs pkijs's RFC 5280 validator (`path-validation.ts`).
 * This module holds the contract's own rules, applied to a chain one of those has already
 * accepted ({@link checkAcceptedChain}): limits, key caps, the agent_id, the leaf's key usage,
 * critical extensions outside an allow-list, and the anchor being one of `GATE_CLIENT_CA`.
 * @module
 */
import { createHash, X509Certificate, type KeyObject } from 'node:crypto';
import { pemCertificates } from '../lib/pem.js';
import { x509 } from '../lib/x509.js';
import { GateError } from '../errors.js';
import { proofAlgOf, type ProofAlg } from '../lib/proof-alg.js';

/** Proof algorithms of the contract, one per key type. */
export type { ProofAlg };

/** The verified identity of an agent. */
export interface AgentIdentity {
  /** First SAN URI, else first SAN DNS name, else subject CN. */
  agentId: string;
  /** base64url SHA-256 of the certificate DER (RFC 8705 `x5t#S256`). */
  thumbprint: string;
  /** The key the agent proves possession of. */
  publicKey: KeyObject;
  /** The one proof algorithm allowed for this key type. */
  alg: ProofAlg;
  /** Validity window, Unix milliseconds. */
  notBefore: number;
  notAfter: number;
  /** Serial number, upper-case hex, for logs and revocation. */
  serial: string;
  /** The leaf certificate DER and the issuer that anchored it, for revocation checks. */
  certDer: Buffer;
  issuer: X509Certificate;
}

/** Limits of section 2. */
export const CERT_LIMITS = { maxDerBytes: 16 * 1024, maxSans: 32, maxDepth: 4, maxAgentIdLength: 256 } as const;

const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** base64url (no padding) SHA-256 over DER bytes: the `x5t#S256` thumbprint. */
export function thumbprintOf(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url');
}

/**
 * Caps on every certificate of a chain (leaf, intermediates, anchor), PROTOCOL.md section 2.
 * RSA above 4096 bits or with an exponent beyond 32 bits only makes signature checks slower
 * (the amplification of issue 13 class 4 used both); no public CA issues such keys.
 */
export const KEY_LIMITS = { maxRsaBits: 4096, maxRsaExponent: 2n ** 32n - 1n, ecCurves: ['prime256v1', 'secp384r1', 'secp521r1'] } as const;

/**
 * Extensions a certificate may mark critical. RFC 5280 requires refusing a certificate with a
 * critical extension the validator does not process; these are the ones both OpenSSL and the
 * gate's forwarded-mode validator (pkijs) process. Everything else critical is refused.
 */
export const CRITICAL_EXTENSIONS_ALLOWED: ReadonlySet<string> = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extendedKeyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.30', // nameConstraints
  '2.5.29.32', // certificatePolicies
]);

/** A parsed trust bundle (`GATE_CLIENT_CA`). */
export class TrustBundle {
  readonly anchors: readonly X509Certificate[];
  /** The bundle as read, so a TLS server's `ca` can be recognised as this same bundle. */
  readonly pem: string;
  private readonly prints: ReadonlySet<string>;

  /** Parses every certificate of a PEM bundle; throws TypeError when there is none. */
  constructor(pem: string) {
    const anchors = pemCertificates(pem);
    if (anchors.length === 0) throw new TypeError('no certificate in the trust bundle');
    this.pem = pem;
    this.anchors = anchors;
    this.prints = new Set(this.anchors.map((a) => thumbprintOf(a.raw)));
  }

  /** True when `cert` is byte for byte one of the bundle's certificates. */
  contains(cert: X509Certificate): boolean {
    return this.prints.has(thumbprintOf(cert.raw));
  }

  /** True when some anchor's subject matches `pattern` (used to spot the dev CA in prod). */
  hasSubjectName(pattern: RegExp): boolean {
    return this.anchors.some((a) => pattern.test(a.subject));
  }
}

function invalid(detail: string): GateError {
  return new GateError('client_cert_invalid', { detail });
}

function checkValidity(cert: X509Certificate, now: number, what: string): void {
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (!(from <= now)) throw invalid(`${what} not yet valid`);
  if (!(now <= to)) throw invalid(`${what} expired`);
}

/** The proof algorithm for a key, or `client_cert_invalid` for a key type outside the allow-list. */
export function algForKey(key: KeyObject): ProofAlg {
  const r = proofAlgOf(key);
  if ('refused' in r) throw invalid(r.refused);
  return r.alg;
}

function agentIdOf(der: Buffer): { agentId: string; sanCount: number } {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch (err) {
    throw new GateError('client_cert_invalid', { detail: 'certificate extensions do not parse', cause: err });
  }
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const names = san?.names.items ?? [];
  const id =
    names.find((n) => n.type === 'url')?.value ??
    names.find((n) => n.type === 'dns')?.value ??
    cert.subjectName.getField('CN')[0];
  if (!id) throw invalid('no SAN URI, SAN DNS name or subject CN');
  if (id.length > CERT_LIMITS.maxAgentIdLength || !/^[\x20-\x7e]+$/.test(id)) throw invalid('agent id is not 1-256 printable ASCII characters');
  return { agentId: id, sanCount: names.length };
}

/** Options of {@link checkAcceptedChain}. */
export interface AcceptedChainOptions {
  /**
   * Verify each link's signature. Needed only when the chain was accepted against a trust
   * store broader than `GATE_CLIENT_CA` (an embedding server's own `ca`): Node exposes the
   * presented certificates linked by name, which is not proof that they are the chain OpenSSL
   * verified. Never set for chains nobody accepted.
   */
  verifyLinks?: boolean;
}

/**
 * The contract's own rules on a chain a path validator (OpenSSL in the handshake, pkijs in
 * forwarded mode) has accepted, leaf first and ending at the anchor: at most `maxDepth` links,
 * the anchor one of `trust` (the leaf not one), key caps and the critical-extension allow-list on every certificate,
 * validity, `clientAuth` where a CA restricts its EKU, then the leaf rules. Returns the identity;
 * throws `client_cert_invalid` with the reason in `detail`.
 */
export function checkAcceptedChain(chain: readonly X509Certificate[], trust: TrustBundle, now: number, opts: AcceptedChainOptions = {}): AgentIdentity {
  try {
    return acceptedChain(chain, trust, now, opts);
  } catch (err) {
    if (err instanceof GateError) throw err;
    throw new GateError('client_cert_invalid', { detail: 'certificate does not decode', cause: err });
  }
}

function acceptedChain(chain: readonly X509Certificate[], trust: TrustBundle, now: number, opts: AcceptedChainOptions): AgentIdentity {
  const leaf = chain[0];
  if (!leaf || chain.length < 2) throw invalid('chain does not reach a trusted CA');
  if (chain.length - 1 > CERT_LIMITS.maxDepth) throw invalid(`chain longer than ${CERT_LIMITS.maxDepth}`);
  const anchor = chain[chain.length - 1]!;
  if (!trust.contains(anchor)) throw invalid('chain does not end at a GATE_CLIENT_CA certificate');
  // A bundle certificate is an issuer, never an agent: OpenSSL trusts a self-signed bundle
  // certificate presented alone, without any issuer's signature.
  if (trust.contains(leaf)) throw invalid('the agent certificate is itself in GATE_CLIENT_CA');
  const leafDer = leaf.raw;
  if (leafDer.length > CERT_LIMITS.maxDerBytes) throw invalid(`certificate is ${leafDer.length} bytes, over ${CERT_LIMITS.maxDerBytes}`);
  // Key caps first: they bound the cost of the signature checks below.
  chain.forEach((c, i) => checkKeyCaps(c, i === 0 ? 'certificate' : `chain certificate ${i}`));
  const parsed = chain.map((c) => new x509.X509Certificate(new Uint8Array(c.raw)));
  parsed.forEach((c, i) => {
    const what = i === 0 ? 'certificate' : `chain certificate ${i}`;
    checkCriticalExtensions(c, what);
    checkValidity(chain[i]!, now, what);
    if (i > 0) {
      const eku = c.getExtension(x509.ExtendedKeyUsageExtension);
      if (eku && !eku.usages.map(String).includes(OID_CLIENT_AUTH)) throw invalid(`${what} restricts its extended key usage without clientAuth`);
    }
  });
  if (opts.verifyLinks) {
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) throw invalid(`chain link ${i} does not verify`);
    }
  }
  return leafIdentity(leaf, parsed[0]!, chain[1]!);
}

/** The leaf rules of section 2 on a leaf whose chain is already accepted. */
function leafIdentity(leaf: X509Certificate, parsed: x509.X509Certificate, issuer: X509Certificate): AgentIdentity {
  if (leaf.ca) throw invalid('a CA certificate cannot be an agent certificate');
  const eku = leaf.keyUsage; // Node names the extended key usage list `keyUsage`.
  if (eku !== undefined && eku.length > 0 && !eku.includes(OID_CLIENT_AUTH)) throw invalid('extended key usage present without clientAuth');
  // The agent signs proofs with this key: OpenSSL's sslclient purpose also takes keyAgreement.
  const ku = parsed.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.digitalSignature) === 0) throw invalid('key usage present without digitalSignature');
  const alg = algForKey(leaf.publicKey);
  const { agentId, sanCount } = agentIdOf(leaf.raw);
  if (sanCount > CERT_LIMITS.maxSans) throw invalid(`${sanCount} SANs, over ${CERT_LIMITS.maxSans}`);
  return {
    agentId,
    thumbprint: thumbprintOf(leaf.raw),
    publicKey: leaf.publicKey,
    alg,
    notBefore: Date.parse(leaf.validFrom),
    notAfter: Date.parse(leaf.validTo),
    serial: leaf.serialNumber.toUpperCase(),
    certDer: leaf.raw,
    issuer,
  };
}

/**
 * {@link KEY_LIMITS} on one certificate's key: read from the SubjectPublicKeyInfo, no
 * arithmetic, so it is cheap enough to run before any signature check.
 */
export function checkKeyCaps(cert: X509Certificate, what = 'certificate'): void {
  const key = cert.publicKey;
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      if ((d.modulusLength ?? Infinity) > KEY_LIMITS.maxRsaBits) throw invalid(`${what}: RSA key of ${d.modulusLength} bits, over ${KEY_LIMITS.maxRsaBits}`);
      if (d.publicExponent === undefined || d.publicExponent > KEY_LIMITS.maxRsaExponent || d.publicExponent < 3n) throw invalid(`${what}: RSA public exponent outside 3..2^32-1`);
      return;
    case 'ec':
      if (!(KEY_LIMITS.ecCurves as readonly string[]).includes(d.namedCurve ?? '')) throw invalid(`${what}: EC curve ${d.namedCurve ?? 'unnamed'} not allowed`);
      return;
    case 'ed25519':
    case 'ed448':
      return;
    default:
      throw invalid(`${what}: key type ${key.asymmetricKeyType ?? 'unknown'} not allowed`);
  }
}

function checkCriticalExtensions(cert: x509.X509Certificate, what: string): void {
  for (const ext of cert.extensions) {
    if (ext.critical && !CRITICAL_EXTENSIONS_ALLOWED.has(ext.type)) throw invalid(`${what}: unsupported critical extension ${ext.type}`);
  }
}
