/**
 * End-entity certificates of the dev PKI, in memory: the gate's TLS server certificate and
 * agent client certificates.
 * @module
 */
import { isIP } from 'node:net';
import { x509 } from '../lib/x509.js';
import type { KeyAlg } from './keys.js';
import { parseIssuer, signCertificate, validityWindow, type KeyAndCert, type ValidityOptions } from './issue.js';

const SERVER_DAYS = 365;
// Short-lived agent certificates make revocation mostly unnecessary in dev and staging.
const AGENT_DAYS = 30;

/** The names a dev server certificate covers by default: loopback by name and by both IP families. */
export const DEFAULT_SERVER_NAMES: readonly string[] = ['localhost', '127.0.0.1', '::1'];

/** Options of {@link issueServerCert}. */
export interface ServerCertOptions extends ValidityOptions {
  alg?: KeyAlg;
  /** DNS names and IP addresses; each becomes a SAN of the matching type. */
  names?: string[];
}

/** Options of {@link issueAgentCert}; the odd ones exist to build refusal cases in tests. */
export interface AgentCertOptions extends ValidityOptions {
  alg?: KeyAlg;
  /** SAN URI; default `urn:agent:<name>`, null for none. */
  sanUri?: string | null;
  /** SAN DNS names, after the URI. */
  sanDns?: string[];
  /** Extended key usage; default clientAuth, `none` omits the extension. */
  eku?: 'clientAuth' | 'serverAuth' | 'none';
  /** Adds this many filler DNS SANs (`extra-<i>.invalid`), to test the SAN count limit. */
  extraSans?: number;
  /** Where relying parties fetch the issuer's CRL: a CRL Distribution Points extension (URI). */
  crlUrl?: string;
  /** The issuer's OCSP responder: an Authority Information Access extension (OCSP URI). */
  ocspUrl?: string;
  /** Where the issuer certificate can be downloaded: AIA caIssuers (URI). */
  caIssuersUrl?: string;
}

/**
 * CRL Distribution Points and Authority Information Access for the given URLs, none when unset.
 * Both non-critical (RFC 5280 4.2.1.13 and 4.2.2.1): a verifier that ignores revocation must
 * still accept the certificate.
 */
export function revocationPointers(opts: { crlUrl?: string; ocspUrl?: string; caIssuersUrl?: string }): x509.Extension[] {
  const out: x509.Extension[] = [];
  if (opts.crlUrl) out.push(new x509.CRLDistributionPointsExtension([checkUrl('crlUrl', opts.crlUrl)]));
  if (opts.ocspUrl || opts.caIssuersUrl) {
    out.push(
      new x509.AuthorityInfoAccessExtension({
        ...(opts.ocspUrl ? { ocsp: [checkUrl('ocspUrl', opts.ocspUrl)] } : {}),
        ...(opts.caIssuersUrl ? { caIssuers: [checkUrl('caIssuersUrl', opts.caIssuersUrl)] } : {}),
      }),
    );
  }
  return out;
}

/**
 * Only absolute http(s) URLs: relying parties (the gate among them, PROTOCOL.md section 7)
 * fetch CRLs and ask OCSP over HTTP, and a typo caught here is cheaper than certificates that
 * point nowhere until they expire.
 */
export function checkUrl(what: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`${what} must be an absolute http(s) URL, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`${what} must be an http or https URL, got ${JSON.stringify(value)}`);
  }
  return value;
}

function leafBasics(keyUsage: x509.KeyUsageFlags): x509.Extension[] {
  return [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(keyUsage, true)];
}

/** In memory: a TLS server cert (serverAuth EKU) with DNS and IP SANs. */
export async function issueServerCert(issuer: KeyAndCert, opts: ServerCertOptions = {}): Promise<KeyAndCert> {
  const parsed = parseIssuer(issuer);
  const alg = opts.alg ?? 'ec-p256';
  const names = opts.names ?? [...DEFAULT_SERVER_NAMES];
  if (names.length === 0) throw new TypeError('a server certificate needs at least one name');
  // keyEncipherment only matters for RSA key transport in TLS 1.2; ECDHE suites need just signatures.
  const usage = alg.startsWith('rsa-')
    ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
    : x509.KeyUsageFlags.digitalSignature;
  return signCertificate(parsed, {
    commonName: names[0] ?? 'localhost',
    alg,
    ...validityWindow(opts, SERVER_DAYS, parsed.cert.notAfter),
    extensions: [
      ...leafBasics(usage),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: isIP(n) ? 'ip' : 'dns', value: n }))),
    ],
  });
}

/**
 * In memory: an agent client cert: CN=name, SAN URI `urn:agent:<name>` (unless sanUri/sanDns
 * override), EKU clientAuth, keyUsage digitalSignature, AKI, random 16-byte positive serial;
 * CRL Distribution Points and AIA (OCSP, caIssuers) when their URLs are given.
 */
export async function issueAgentCert(issuer: KeyAndCert, name: string, opts: AgentCertOptions = {}): Promise<KeyAndCert> {
  const parsed = parseIssuer(issuer);
  const extraSans = opts.extraSans ?? 0;
  if (!(Number.isInteger(extraSans) && extraSans >= 0)) throw new TypeError(`extraSans must be a non-negative integer, got ${extraSans}`);

  const sans: x509.JsonGeneralName[] = [];
  const uri = opts.sanUri === undefined ? `urn:agent:${name}` : opts.sanUri;
  if (uri !== null) sans.push({ type: 'url', value: uri });
  for (const dns of opts.sanDns ?? []) sans.push({ type: 'dns', value: dns });
  for (let i = 0; i < extraSans; i++) sans.push({ type: 'dns', value: `extra-${i}.invalid` });

  const extensions = leafBasics(x509.KeyUsageFlags.digitalSignature);
  const eku = opts.eku ?? 'clientAuth';
  if (eku !== 'none') extensions.push(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage[eku]]));
  // No SAN at all is legal (RFC 5280 4.2.1.6 with a non-empty subject): agent_id falls back to CN.
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  extensions.push(...revocationPointers(opts));

  return signCertificate(parsed, {
    commonName: name,
    alg: opts.alg ?? 'ec-p256',
    ...validityWindow(opts, AGENT_DAYS, parsed.cert.notAfter),
    extensions,
  });
}
