/**
 * CRLs (RFC 5280 section 5): the entry list read with a minimal DER reader (general ASN.1
 * libraries cap node counts or take minutes and gigabytes on a million-entry CRL), the few CRL
 * extensions decoded with pkijs/asn1js, the signature verified with node:crypto against the
 * issuing CA, revoked serials indexed for O(1) lookups. The choice among several CRLs for one
 * certificate is crl-scope.ts. Pure.
 * @module
 */
import { verify as cryptoVerify, type X509Certificate as NodeX509 } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
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
  /** Serials listed with reason removeFromCRL (meaningful in delta CRLs: no longer revoked). */
  removed: ReadonlySet<string>;
  /** cRLNumber (5.2.3); undefined when absent. */
  crlNumber: bigint | undefined;
  /** BaseCRLNumber of the deltaCRLIndicator (5.2.4): set only on delta CRLs. */
  deltaBase: bigint | undefined;
  /** The issuingDistributionPoint (5.2.5), decoded; undefined when absent. */
  idp: CrlScope | undefined;
  /**
   * Why this CRL must not be used (an unknown critical CRL or entry extension, an extension
   * that does not decode); undefined when usable.
   */
  unusable: string | undefined;
  /** Whether `issuer` is this CRL's issuer and its key verifies the signature (cached per CA). */
  verifiedBy(issuer: NodeX509): boolean;
}

/** A decoded issuingDistributionPoint. */
export interface CrlScope {
  /** The extension's value bytes: a delta applies only to a base of the very same scope. */
  der: Buffer;
  /** fullName GeneralNames of the distribution point, DER as pkijs re-encodes them. */
  fullNames: Buffer[] | undefined;
  /** The distribution point is a nameRelativeToCRLIssuer (not matched: out of scope). */
  relativeName: boolean;
  onlyUser: boolean;
  onlyCa: boolean;
  onlyAttribute: boolean;
  onlySomeReasons: boolean;
  indirect: boolean;
}

const OID_CRL_NUMBER = '2.5.29.20';
const OID_DELTA_CRL_INDICATOR = '2.5.29.27';
const OID_IDP = '2.5.29.28';
const OID_AKI = '2.5.29.35';
/**
 * CRL extensions this code processes, so may be critical (AKI is covered by matching the
 * issuer's name and verifying with its key). Any other critical one makes the CRL unusable.
 */
const KNOWN_CRL_EXTENSIONS = new Set([OID_CRL_NUMBER, OID_DELTA_CRL_INDICATOR, OID_IDP, OID_AKI]);
/** id-ce arc (2.5.29) last bytes of entry extensions processed: reasonCode (21), invalidityDate (24). */
const ENTRY_REASON_CODE = 0x15;
const ENTRY_INVALIDITY_DATE = 0x18;
const REASON_REMOVE_FROM_CRL = 8;

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
    removed: parsed.removed,
    crlNumber: parsed.crlNumber,
    deltaBase: parsed.deltaBase,
    idp: parsed.idp,
    unusable: parsed.unusable,
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
  const removed = new Set<string>();
  let unusable: string | undefined;
  if (fields[i]?.tag === 0x30) {
    const entries = fields[i++]!;
    for (let pos = entries.valueStart; pos < entries.end; ) {
      const entry = readTlv(der, pos, entries.end);
      const serialT = readTlv(der, entry.valueStart, entry.end);
      const serial = integerHex(der, serialT);
      revoked.add(serial);
      const dateT = readTlv(der, serialT.end, entry.end);
      // Entry extensions are rare: the common entry costs one more header read.
      if (dateT.end < entry.end) {
        const why = entryExtensions(der, readTlv(der, dateT.end, entry.end), serial, removed);
        unusable ??= why;
      }
      pos = entry.end;
    }
  }
  let crlNumber: bigint | undefined;
  let deltaBase: bigint | undefined;
  let idp: CrlScope | undefined;
  if (fields[i]?.tag === 0xa0) {
    const ext = crlExtensions(der, fields[i]!);
    ({ crlNumber, deltaBase, idp } = ext);
    unusable = ext.unusable ?? unusable;
  }
  return { issuerDer: Buffer.from(rawOf(der, issuerT)), thisUpdate, nextUpdate, revoked, removed, crlNumber, deltaBase, idp, unusable, tbs: rawOf(der, tbsT), sigAlg, signature };
}

interface RawExtension {
  oidT: Tlv;
  critical: boolean;
  value: Buffer;
}

/** The Extension SEQUENCEs of an Extensions SEQUENCE, by the fast reader. */
function* rawExtensions(der: Buffer, seq: Tlv): Generator<RawExtension> {
  if (seq.tag !== 0x30) throw new RangeError('extensions are not a SEQUENCE');
  for (const ext of children(der, seq)) {
    const parts = [...children(der, ext)];
    const oidT = parts[0];
    if (oidT?.tag !== 0x06) throw new RangeError('extension without an OID');
    let k = 1;
    let critical = false;
    if (parts[k]?.tag === 0x01) critical = der[parts[k++]!.valueStart] !== 0;
    const valueT = parts[k];
    if (valueT?.tag !== 0x04 || k + 1 !== parts.length) throw new RangeError('extension without an OCTET STRING value');
    yield { oidT, critical, value: der.subarray(valueT.valueStart, valueT.end) };
  }
}

/** One entry's extensions: notes removeFromCRL; returns why the CRL is unusable, if it is. */
function entryExtensions(der: Buffer, seq: Tlv, serial: string, removed: Set<string>): string | undefined {
  let why: string | undefined;
  for (const e of rawExtensions(der, seq)) {
    // id-ce (2.5.29 = 55 1D) with one more arc byte: compared on the bytes, no OID string per entry.
    const idCe = e.oidT.end - e.oidT.valueStart === 3 && der[e.oidT.valueStart] === 0x55 && der[e.oidT.valueStart + 1] === 0x1d;
    const arc = idCe ? der[e.oidT.valueStart + 2] : -1;
    if (arc === ENTRY_REASON_CODE) {
      // ENUMERATED (0A 01 nn)
      if (e.value.length === 3 && e.value[0] === 0x0a && e.value[1] === 1 && e.value[2] === REASON_REMOVE_FROM_CRL) removed.add(serial);
    } else if (e.critical && arc !== ENTRY_INVALIDITY_DATE) {
      // certificateIssuer (indirect CRLs) included: this gate does not process indirect CRLs.
      why ??= `unknown critical CRL entry extension ${oidOf(der, e.oidT)}`;
    }
  }
  return why;
}

function integerValue(value: Buffer, name: string): bigint {
  const asn = asn1js.fromBER(new Uint8Array(value));
  if (asn.offset === -1 || !(asn.result instanceof asn1js.Integer) || asn.offset !== value.length) throw new RangeError(`${name} is not an INTEGER`);
  const n = asn.result.toBigInt();
  if (n < 0n) throw new RangeError(`${name} is negative`);
  return n;
}

/** A GeneralName's DER as pkijs encodes it: both sides of a comparison go through here. */
/** A GeneralName in the DER encoding pkijs gives it (for comparing names). */
export function generalNameDer(n: pkijs.GeneralName): Buffer {
  return Buffer.from((n.toSchema() as asn1js.BaseBlock).toBER());
}

function decodeIdp(value: Buffer): CrlScope {
  const idp = pkijs.IssuingDistributionPoint.fromBER(new Uint8Array(value));
  const dp = idp.distributionPoint;
  const fullNames = Array.isArray(dp) ? dp.map(generalNameDer) : undefined;
  return {
    der: Buffer.from(value),
    fullNames,
    relativeName: dp !== undefined && !Array.isArray(dp),
    onlyUser: idp.onlyContainsUserCerts === true,
    onlyCa: idp.onlyContainsCACerts === true,
    onlyAttribute: idp.onlyContainsAttributeCerts === true,
    onlySomeReasons: idp.onlySomeReasons !== undefined,
    indirect: idp.indirectCRL === true,
  };
}

/** crlExtensions ([0] EXPLICIT Extensions): number, delta base, scope, and unknown critical ones. */
function crlExtensions(der: Buffer, wrapper: Tlv) {
  let crlNumber: bigint | undefined;
  let deltaBase: bigint | undefined;
  let idp: CrlScope | undefined;
  let unusable: string | undefined;
  const seen = new Set<string>();
  for (const e of rawExtensions(der, readTlv(der, wrapper.valueStart, wrapper.end))) {
    const oid = oidOf(der, e.oidT);
    if (seen.has(oid)) {
      unusable ??= `CRL extension ${oid} appears twice`;
      continue;
    }
    seen.add(oid);
    try {
      if (oid === OID_CRL_NUMBER) crlNumber = integerValue(e.value, 'cRLNumber');
      else if (oid === OID_DELTA_CRL_INDICATOR) deltaBase = integerValue(e.value, 'BaseCRLNumber');
      else if (oid === OID_IDP) idp = decodeIdp(e.value);
    } catch (err) {
      // What cannot be read cannot be honoured: the whole CRL is unusable, not read without it.
      unusable ??= `CRL extension ${oid} does not decode (${(err as Error).message})`;
    }
    if (e.critical && !KNOWN_CRL_EXTENSIONS.has(oid)) unusable ??= `unknown critical CRL extension ${oid}`;
  }
  return { crlNumber, deltaBase, idp, unusable };
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
