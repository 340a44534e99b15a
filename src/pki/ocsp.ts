/**
 * OCSP answers of the dev CA (RFC 6960): a BasicOCSPResponse for every CertID of a request,
 * signed by the CA or by a delegated responder certificate, and that responder certificate.
 *
 * pkijs does the ASN.1; the signature is made with node:crypto rather than pkijs's WebCrypto
 * engine because pkijs 3 cannot sign with Ed25519, which the dev PKI offers, and so that the
 * signature algorithm follows the key exactly as for certificates (P-384 signs with SHA-384).
 * @module
 */
import { createHash, createPrivateKey, sign as cryptoSign } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { x509 } from '../lib/x509.js';
import { canonicalSerial, reasonCode } from './ca-db.js';
import { parseIssuer, signCertificate, validityWindow, type KeyAndCert, type ValidityOptions } from './issue.js';
import { keyAlgOf, type KeyAlg } from './keys.js';

const OID_OCSP_BASIC = '1.3.6.1.5.5.7.48.1.1';
const OID_OCSP_NONCE = '1.3.6.1.5.5.7.48.1.2';
const OID_OCSP_NOCHECK = '1.3.6.1.5.5.7.48.1.5';

/** CertID hash algorithms answered for; others get `unknown`, as openssl's responder does. */
const CERT_ID_HASHES: Record<string, string> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/**
 * More CertIDs than any relying party asks about at once (one per certificate of a chain);
 * the cap bounds the work and the response size (PROTOCOL.md section 7: at most 64 KiB).
 */
const MAX_CERT_IDS = 64;
/** RFC 8954 asks for 1-32 octets; longer nonces are answered without an echo rather than refused. */
const MAX_NONCE_BYTES = 128;
const DEFAULT_NEXT_UPDATE_MS = 300_000;
const SIGNER_DAYS = 30;

/** What the CA knows about one serial. */
export type OcspCertStatus =
  | { status: 'good' }
  | { status: 'revoked'; revokedAt: Date; reason?: string }
  | { status: 'unknown' };

/** Looks a serial up; `serialHex` is upper-case hex in `BN_bn2hex` form (even length, no leading zero byte). */
export type OcspLookup = (serialHex: string) => OcspCertStatus;

/** OCSPResponseStatus values other than successful (RFC 6960 4.2.1). */
export type OcspErrorStatus = 'malformedRequest' | 'internalError' | 'tryLater' | 'sigRequired' | 'unauthorized';

const ERROR_STATUS: Record<OcspErrorStatus, number> = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
};

/** DER of an OCSPResponse with an error status and no responseBytes. */
export function buildOcspErrorResponse(status: OcspErrorStatus): Buffer {
  const resp = new pkijs.OCSPResponse({ responseStatus: new asn1js.Enumerated({ value: ERROR_STATUS[status] }) });
  return Buffer.from(resp.toSchema().toBER(false));
}

/** Options of {@link buildOcspResponse}. */
export interface BuildOcspResponseOptions {
  /** DER OCSPRequest. */
  request: Buffer;
  /** The CA the request's CertIDs must name; others are answered `unknown`. */
  issuer: KeyAndCert;
  /** Delegated responder (see {@link issueOcspSignerCert}); signs instead of the issuer and goes in `certs`. */
  signer?: KeyAndCert;
  lookup: OcspLookup;
  /** Default now. */
  thisUpdate?: Date;
  /** Default five minutes after thisUpdate; null leaves nextUpdate out. */
  nextUpdate?: Date | null;
  /** Forgery for tests: answer (and look up) this serial instead of the one asked about. */
  overrideSerial?: string;
  /** Forgery for tests: sign with this unrelated key, everything else unchanged. */
  signWith?: { keyPem: string };
}

// GeneralizedTime without fractions, as RFC 5280 4.1.2.5.2 asks of certificates and openssl writes.
function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

interface ParsedCert {
  pkijs: pkijs.Certificate;
  /** DER of the subject Name, as encoded in the certificate. */
  subject: Uint8Array;
  /** The subjectPublicKey BIT STRING contents: what CertID's issuerKeyHash and ResponderID byKey hash. */
  keyBits: Uint8Array;
}

function parseCert(der: Buffer): ParsedCert {
  const cert = pkijs.Certificate.fromBER(new Uint8Array(der));
  return {
    pkijs: cert,
    subject: new Uint8Array(cert.subject.valueBeforeDecode),
    keyBits: cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView,
  };
}

/** A signature algorithm identifier and the matching signing function, from the key's type. */
function signerFor(keyPem: string): { algorithm: pkijs.AlgorithmIdentifier; sign: (data: Uint8Array) => Buffer } {
  const key = createPrivateKey(keyPem);
  const alg: KeyAlg = keyAlgOf(key);
  let oid: string;
  let hash: string | null;
  let params: asn1js.Null | undefined;
  switch (alg) {
    case 'ec-p256':
      [oid, hash] = ['1.2.840.10045.4.3.2', 'sha256'];
      break;
    case 'ec-p384':
      [oid, hash] = ['1.2.840.10045.4.3.3', 'sha384'];
      break;
    case 'ed25519':
      [oid, hash] = ['1.3.101.112', null];
      break;
    default:
      // sha256WithRSAEncryption; its parameters are an explicit NULL (RFC 4055 section 5).
      [oid, hash, params] = ['1.2.840.113549.1.1.11', 'sha256', new asn1js.Null()];
  }
  const algorithm = new pkijs.AlgorithmIdentifier(params ? { algorithmId: oid, algorithmParams: params } : { algorithmId: oid });
  // ECDSA signatures come out DER-encoded (Node's default), the form X.509 and OCSP carry.
  return { algorithm, sign: (data) => cryptoSign(hash, data, key) };
}

function serialInteger(serialHex: string): asn1js.Integer {
  let hex = canonicalSerial(serialHex);
  // A DER INTEGER is two's complement: a serial with the top bit set needs a zero byte in front.
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return new asn1js.Integer({ valueHex: Buffer.from(hex, 'hex') });
}

function statusOf(answer: OcspCertStatus): asn1js.BaseBlock {
  switch (answer.status) {
    case 'good':
      return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 0 } });
    case 'revoked': {
      const value: asn1js.BaseBlock[] = [new asn1js.GeneralizedTime({ valueDate: wholeSeconds(answer.revokedAt) })];
      const code = answer.reason === undefined ? undefined : reasonCode(answer.reason);
      // RFC 5280 5.3.1: unspecified (0) is better left out; openssl's responder reads it from
      // the same index and leaves it out too.
      if (code !== undefined && code !== 0) {
        value.push(new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [new asn1js.Enumerated({ value: code })] }));
      }
      return new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 1 }, value });
    }
    default:
      return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 2 } });
  }
}

/** The CertID's serial in `BN_bn2hex` form, or undefined for a negative or empty one. */
function certIdSerial(certId: pkijs.CertID): string | undefined {
  const bytes = Buffer.from(certId.serialNumber.valueBlock.valueHexView);
  if (bytes.length === 0 || (bytes[0] ?? 0) & 0x80) return undefined;
  return canonicalSerial(bytes.toString('hex'));
}

/** True when `der` parses as an OCSPRequest asking about 1-64 certificates: what {@link buildOcspResponse} answers. */
export function isOcspRequest(der: Buffer): boolean {
  return parseRequest(der) !== undefined;
}

function parseRequest(der: Buffer): pkijs.OCSPRequest | undefined {
  let request: pkijs.OCSPRequest;
  try {
    request = pkijs.OCSPRequest.fromBER(new Uint8Array(der));
  } catch {
    return undefined;
  }
  const n = request.tbsRequest.requestList.length;
  return n === 0 || n > MAX_CERT_IDS ? undefined : request;
}

/**
 * DER of an OCSPResponse answering every CertID of `request`: `successful`, a BasicOCSPResponse
 * with responderID byKey, the request's nonce echoed when it had one. A request that does not
 * parse (or asks about nothing, or about more than 64 certificates) gets `malformedRequest`
 * instead; a CertID naming another issuer, or hashed with an algorithm other than SHA-1/2, gets
 * `unknown`. Signed requests are answered without checking their signature (nothing here is
 * secret: anyone may ask about any serial).
 */
export function buildOcspResponse(opts: BuildOcspResponseOptions): Buffer {
  const request = parseRequest(opts.request);
  if (!request) return buildOcspErrorResponse('malformedRequest');
  const list = request.tbsRequest.requestList;

  const issuer = parseCert(opts.issuer.certDer);
  const signerCert = opts.signer ? parseCert(opts.signer.certDer) : issuer;
  const signing = signerFor((opts.signWith ?? opts.signer ?? opts.issuer).keyPem);

  const thisUpdate = wholeSeconds(opts.thisUpdate ?? new Date());
  const nextUpdate =
    opts.nextUpdate === null ? undefined : wholeSeconds(opts.nextUpdate ?? new Date(thisUpdate.getTime() + DEFAULT_NEXT_UPDATE_MS));

  const issuerHashes = new Map<string, { name: Buffer; key: Buffer }>();
  const hashesFor = (hash: string): { name: Buffer; key: Buffer } => {
    let h = issuerHashes.get(hash);
    if (!h) {
      h = { name: createHash(hash).update(issuer.subject).digest(), key: createHash(hash).update(issuer.keyBits).digest() };
      issuerHashes.set(hash, h);
    }
    return h;
  };

  const responses = list.map(({ reqCert }) => {
    const hash = CERT_ID_HASHES[reqCert.hashAlgorithm.algorithmId];
    const ours =
      hash !== undefined &&
      hashesFor(hash).name.equals(Buffer.from(reqCert.issuerNameHash.valueBlock.valueHexView)) &&
      hashesFor(hash).key.equals(Buffer.from(reqCert.issuerKeyHash.valueBlock.valueHexView));
    let certID = reqCert;
    let serial = certIdSerial(reqCert);
    if (opts.overrideSerial !== undefined) {
      serial = canonicalSerial(opts.overrideSerial);
      certID = new pkijs.CertID({
        hashAlgorithm: reqCert.hashAlgorithm,
        issuerNameHash: reqCert.issuerNameHash,
        issuerKeyHash: reqCert.issuerKeyHash,
        serialNumber: serialInteger(serial),
      });
    }
    const answer: OcspCertStatus = ours && serial !== undefined ? opts.lookup(serial) : { status: 'unknown' };
    return new pkijs.SingleResponse({ certID, certStatus: statusOf(answer), thisUpdate, ...(nextUpdate ? { nextUpdate } : {}) });
  });

  const nonce = request.tbsRequest.requestExtensions?.find((e) => e.extnID === OID_OCSP_NONCE);
  const responseData = new pkijs.ResponseData({
    // byKey (RFC 6960 4.2.2.3): SHA-1 of the signer's public key bits, whatever else is used.
    responderID: new asn1js.OctetString({ valueHex: createHash('sha1').update(signerCert.keyBits).digest() }),
    producedAt: wholeSeconds(new Date()),
    responses,
    ...(nonce && nonce.extnValue.valueBlock.valueHexView.byteLength <= MAX_NONCE_BYTES
      ? // Echoed byte for byte: clients compare the extension value, whatever its inner encoding.
        { responseExtensions: [new pkijs.Extension({ extnID: OID_OCSP_NONCE, extnValue: nonce.extnValue.valueBlock.valueHexView.slice().buffer })] }
      : {}),
  });
  const tbs = responseData.toSchema(true).toBER(false);
  // BasicOCSPResponse re-encodes from tbsView: the signed bytes are the bytes sent.
  responseData.tbsView = new Uint8Array(tbs);

  const basic = new pkijs.BasicOCSPResponse({
    tbsResponseData: responseData,
    signatureAlgorithm: signing.algorithm,
    signature: new asn1js.BitString({ valueHex: signing.sign(new Uint8Array(tbs)) }),
    ...(opts.signer ? { certs: [signerCert.pkijs] } : {}),
  });
  const response = new pkijs.OCSPResponse({
    responseStatus: new asn1js.Enumerated({ value: 0 }),
    responseBytes: new pkijs.ResponseBytes({
      responseType: OID_OCSP_BASIC,
      response: new asn1js.OctetString({ valueHex: basic.toSchema().toBER(false) }),
    }),
  });
  return Buffer.from(response.toSchema().toBER(false));
}

/** Options of {@link issueOcspSignerCert}. */
export interface OcspSignerCertOptions extends ValidityOptions {
  alg?: KeyAlg;
  commonName?: string;
}

/**
 * In memory: a delegated OCSP responder certificate signed by `issuer` (RFC 6960 4.2.2.2):
 * EKU OCSPSigning, keyUsage digitalSignature, CA:false, and id-pkix-ocsp-nocheck so clients do
 * not ask about the responder's own status. Thirty days by default: nocheck means it cannot be
 * revoked in practice, so its lifetime is the exposure if its key leaks (4.2.2.2.1).
 */
export async function issueOcspSignerCert(issuer: KeyAndCert, opts: OcspSignerCertOptions = {}): Promise<KeyAndCert> {
  const parsed = parseIssuer(issuer);
  return signCertificate(parsed, {
    commonName: opts.commonName ?? 'agent-gate dev OCSP responder',
    alg: opts.alg ?? 'ec-p256',
    ...validityWindow(opts, SIGNER_DAYS, parsed.cert.notAfter),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.ocspSigning]),
      new x509.Extension(OID_OCSP_NOCHECK, false, new Uint8Array([0x05, 0x00])),
    ],
  });
}
