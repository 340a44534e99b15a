/**
 * OCSP (RFC 6960): request building and response verification. Pure: no I/O. pkijs does the
 * ASN.1; signatures are checked with node:crypto against the issuer or a delegated responder
 * that the issuer certified for OCSPSigning (section 4.2.2.2).
 * @module
 */
import { randomBytes, verify as cryptoVerify, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

const OID_OCSP_BASIC = '1.3.6.1.5.5.7.48.1.1';
const OID_OCSP_NONCE = '1.3.6.1.5.5.7.48.1.2';
const OID_OCSP_SIGNING = '1.3.6.1.5.5.7.3.9';

/** Signature algorithms accepted on OCSP responses; SHA-1 signatures are not. */
const SIG_ALGS: Record<string, { hash: string | null; pss?: boolean }> = {
  '1.2.840.113549.1.1.11': { hash: 'sha256' },
  '1.2.840.113549.1.1.12': { hash: 'sha384' },
  '1.2.840.113549.1.1.13': { hash: 'sha512' },
  '1.2.840.10045.4.3.2': { hash: 'sha256' },
  '1.2.840.10045.4.3.3': { hash: 'sha384' },
  '1.2.840.10045.4.3.4': { hash: 'sha512' },
  '1.3.101.112': { hash: null },
};

/** A prepared OCSP question about one certificate. */
export interface OcspQuestion {
  certId: pkijs.CertID;
  nonce: Buffer;
  /** DER of the OCSPRequest to POST. */
  der: Buffer;
}

/** The verified answer about one certificate. */
export interface OcspAnswer {
  status: 'good' | 'revoked' | 'unknown';
  thisUpdate: number;
  nextUpdate: number | undefined;
}

/** Why a response was not believed. */
export class OcspResponseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OcspResponseError';
  }
}

function toPkijs(cert: NodeX509): pkijs.Certificate {
  return pkijs.Certificate.fromBER(new Uint8Array(cert.raw));
}

/** Builds the OCSPRequest for `leaf` issued by `issuer` (SHA-1 CertID, the RFC 6960 default, and a nonce). */
export async function buildOcspRequest(leafDer: Buffer, issuer: NodeX509): Promise<OcspQuestion> {
  const certId = new pkijs.CertID();
  await certId.createForCertificate(pkijs.Certificate.fromBER(new Uint8Array(leafDer)), { hashAlgorithm: 'SHA-1', issuerCertificate: toPkijs(issuer) });
  const nonce = randomBytes(16);
  const req = new pkijs.OCSPRequest();
  req.tbsRequest.requestList = [new pkijs.Request({ reqCert: certId })];
  req.tbsRequest.requestExtensions = [
    new pkijs.Extension({ extnID: OID_OCSP_NONCE, extnValue: new asn1js.OctetString({ valueHex: nonce }).toBER(false) }),
  ];
  return { certId, nonce, der: Buffer.from(req.toSchema(true).toBER(false)) };
}

function verifySig(alg: string, data: Uint8Array, sig: Uint8Array, key: KeyObject): boolean {
  const a = SIG_ALGS[alg];
  if (!a) return false;
  try {
    return cryptoVerify(a.hash, data, key, sig);
  } catch {
    return false;
  }
}

function validAt(cert: NodeX509, now: number): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/** How far a revocation answer's times (OCSP thisUpdate/nextUpdate, a CRL's thisUpdate) may be off the gate's clock. */
export const REVOCATION_SKEW_MS = 60_000;

/**
 * Parses and verifies `der` as the answer to `q` about a certificate of `issuer`; throws
 * {@link OcspResponseError} for anything not to be believed (bad signature, other CertID,
 * stale or future times, wrong nonce, error status). An answer with neither nextUpdate nor our
 * nonce says nothing of when it was made but its thisUpdate: older than `maxAgeMs`, it is stale
 * (else a captured "good" could be replayed for ever on a plain-HTTP responder path).
 */
export function verifyOcspResponse(der: Buffer, q: OcspQuestion, issuer: NodeX509, now: number, skewMs = REVOCATION_SKEW_MS, maxAgeMs = Number.POSITIVE_INFINITY): OcspAnswer {
  let resp: pkijs.OCSPResponse;
  try {
    resp = pkijs.OCSPResponse.fromBER(new Uint8Array(der));
  } catch {
    throw new OcspResponseError('response does not parse');
  }
  const status = resp.responseStatus.valueBlock.valueDec;
  if (status !== 0) throw new OcspResponseError(`responder status ${status}`);
  if (!resp.responseBytes || resp.responseBytes.responseType !== OID_OCSP_BASIC) throw new OcspResponseError('not a basic OCSP response');
  let basic: pkijs.BasicOCSPResponse;
  try {
    basic = pkijs.BasicOCSPResponse.fromBER(resp.responseBytes.response.valueBlock.valueHexView);
  } catch {
    throw new OcspResponseError('basic response does not parse');
  }
  const tbs = basic.tbsResponseData.tbsView;
  const sig = basic.signature.valueBlock.valueHexView;
  const alg = basic.signatureAlgorithm.algorithmId;
  if (!verifySig(alg, tbs, sig, issuer.publicKey) && !delegatedSignerVerifies(basic, alg, tbs, sig, issuer, now)) {
    throw new OcspResponseError('signature not by the issuer or an authorised responder');
  }
  const nonceExt = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === OID_OCSP_NONCE);
  let fresh = false;
  if (nonceExt) {
    // Responders that pre-sign answers omit the nonce; one that echoes it must echo ours.
    const echoed = Buffer.from(nonceExt.extnValue.valueBlock.valueHexView);
    const want = Buffer.from(new asn1js.OctetString({ valueHex: q.nonce }).toBER(false));
    if (!echoed.equals(want) && !echoed.equals(q.nonce)) throw new OcspResponseError('nonce mismatch');
    fresh = true;
  }
  const single = basic.tbsResponseData.responses.find((r) => r.certID.isEqual(q.certId));
  if (!single) throw new OcspResponseError('no answer for the certificate asked about');
  const thisUpdate = single.thisUpdate.getTime();
  const nextUpdate = single.nextUpdate?.getTime();
  if (thisUpdate > now + skewMs) throw new OcspResponseError('thisUpdate in the future');
  if (nextUpdate !== undefined && nextUpdate < now - skewMs) throw new OcspResponseError('stale: nextUpdate has passed');
  if (nextUpdate === undefined && !fresh && thisUpdate < now - maxAgeMs - skewMs) throw new OcspResponseError('stale: no nextUpdate, no nonce, and thisUpdate older than GATE_REVOCATION_MAX_STALE_S');
  const tag = (single.certStatus as { idBlock?: { tagNumber?: number } }).idBlock?.tagNumber;
  const s = tag === 0 ? 'good' : tag === 1 ? 'revoked' : 'unknown';
  return { status: s, thisUpdate, nextUpdate };
}

function delegatedSignerVerifies(basic: pkijs.BasicOCSPResponse, alg: string, tbs: Uint8Array, sig: Uint8Array, issuer: NodeX509, now: number): boolean {
  for (const c of (basic.certs ?? []).slice(0, 4)) {
    let cert: NodeX509;
    try {
      cert = new NodeX509(Buffer.from(c.toSchema().toBER(false)));
    } catch {
      continue;
    }
    // Delegated responder: certified by this very CA, for OCSPSigning, valid now.
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) continue;
    if (!(cert.keyUsage ?? []).includes(OID_OCSP_SIGNING) || !validAt(cert, now)) continue;
    if (verifySig(alg, tbs, sig, cert.publicKey)) return true;
  }
  return false;
}

/** OCSP responder URLs from the certificate's Authority Information Access extension. */
export function ocspResponderUrls(leafDer: Buffer): string[] {
  const info = new NodeX509(leafDer).infoAccess;
  if (!info) return [];
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const m = /^OCSP - URI:(https?:\/\/\S+)$/i.exec(line.trim());
    if (m) out.push(m[1]!);
  }
  return out;
}
