/**
 * CRLs of the dev CA (RFC 5280 section 5): v2, with CRL Number and Authority Key Identifier,
 * signed with @peculiar/x509's generator like the certificates, so every key type the dev PKI
 * issues with can sign them too.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { x509 } from '../lib/x509.js';
import { canonicalSerial, readCaDatabase, reasonCode, withDatabaseLock } from './ca-db.js';
import { PUBLIC_FILE_MODE, loadKeyAndCert, writeFileAtomic } from './files.js';
import { authorityKeyId, parseIssuer, type KeyAndCert } from './issue.js';
import { importSigningKey, toPem } from './keys.js';

const OID_CRL_NUMBER = '2.5.29.20';
const OID_DELTA_CRL_INDICATOR = '2.5.29.27';
const OID_IDP = '2.5.29.28';
const DAY_MS = 86_400_000;
const DEFAULT_CRL_DAYS = 7;
const MAX_CRL_DAYS = 3650;

/** One revoked certificate as a CRL lists it. */
export interface CrlEntryInput {
  /** Hex serial; colons allowed. */
  serial: string;
  revokedAt: Date;
  /** RFC 5280 reason name (`keyCompromise`, ...; openssl's aliases accepted). `unspecified` is left out of the CRL, as 5.3.1 asks. */
  reason?: string;
  /** Extra crlEntryExtensions (tests: an unknown critical one). */
  extensions?: x509.Extension[];
}

/** The issuingDistributionPoint of a CRL (RFC 5280 5.2.5); the extension is critical. */
export interface CrlIdpInput {
  /** fullName URIs of the distribution point. */
  uris?: string[];
  onlyContainsUserCerts?: boolean;
  onlyContainsCACerts?: boolean;
  /** ReasonFlags as the BIT STRING's bits, e.g. 0x40 for keyCompromise. */
  onlySomeReasons?: number;
  indirectCRL?: boolean;
}

/** Options of {@link createCrl}. */
export interface CreateCrlOptions {
  /** Default now. */
  thisUpdate?: Date;
  /** Default seven days after thisUpdate. */
  nextUpdate?: Date;
  /**
   * Default: thisUpdate in seconds since the epoch, which grows with every CRL a CA issues
   * without any state to keep (RFC 5280 5.2.3 asks only that it increase). `null` leaves the
   * extension out (tests of verifiers that must then order CRLs by thisUpdate).
   */
  crlNumber?: bigint | number | null;
  /**
   * Signs with this key instead of the CA's while keeping the CA's name and key identifier:
   * a forged CRL, for tests that verifiers reject it.
   */
  signer?: KeyAndCert;
  /** Makes this a delta CRL (5.2.4): the critical deltaCRLIndicator with this BaseCRLNumber. */
  deltaBase?: bigint | number;
  /** Adds a critical issuingDistributionPoint (5.2.5). */
  idp?: CrlIdpInput;
  /** Extra crlExtensions, appended after the standard ones (tests: an unknown critical one). */
  extensions?: x509.Extension[];
}

// X.509 times hold whole seconds; cutting here keeps what we return equal to what we encode.
function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

/** DER INTEGER of a non-negative bigint. */
function derInteger(n: bigint): Uint8Array {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  const body = Buffer.from(hex, 'hex');
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/**
 * DER of an IssuingDistributionPoint value. Built with asn1js field by field: pkijs's own
 * encoder writes onlySomeReasons without the BIT STRING's unused-bits octet (openssl then
 * cannot read the extension).
 */
function idpValue(idp: CrlIdpInput): Uint8Array {
  const ctx = (tagNumber: number) => ({ tagClass: 3, tagNumber });
  const flag = (tagNumber: number) => new asn1js.Primitive({ idBlock: ctx(tagNumber), valueHex: new Uint8Array([0xff]) });
  const fields: asn1js.AsnType[] = [];
  if (idp.uris) {
    const names = idp.uris.map((uri) => new pkijs.GeneralName({ type: 6, value: uri }).toSchema() as asn1js.AsnType);
    fields.push(new asn1js.Constructed({ idBlock: ctx(0), value: [new asn1js.Constructed({ idBlock: ctx(0), value: names })] }));
  }
  if (idp.onlyContainsUserCerts) fields.push(flag(1));
  if (idp.onlyContainsCACerts) fields.push(flag(2));
  if (idp.onlySomeReasons !== undefined) {
    const bits = idp.onlySomeReasons & 0xff;
    let unused = 0;
    while (unused < 7 && bits !== 0 && !(bits & (1 << unused))) unused++;
    fields.push(new asn1js.Primitive({ idBlock: ctx(3), valueHex: new Uint8Array([unused, bits]) }));
  }
  if (idp.indirectCRL) fields.push(flag(4));
  return new Uint8Array(new asn1js.Sequence({ value: fields }).toBER());
}

/** In memory: a CRL of `ca` listing `revoked`. */
export async function createCrl(
  ca: KeyAndCert,
  revoked: readonly CrlEntryInput[],
  opts: CreateCrlOptions = {},
): Promise<{ pem: string; der: Buffer }> {
  // The key/certificate match is only worth checking when the CA's own key is what signs.
  const caCert = opts.signer ? new x509.X509Certificate(ca.certDer) : parseIssuer(ca).cert;
  const thisUpdate = wholeSeconds(opts.thisUpdate ?? new Date());
  const nextUpdate = wholeSeconds(opts.nextUpdate ?? new Date(thisUpdate.getTime() + DEFAULT_CRL_DAYS * DAY_MS));
  if (!(nextUpdate > thisUpdate)) throw new TypeError('nextUpdate must be after thisUpdate');
  const crlNumber = opts.crlNumber === null ? undefined : BigInt(opts.crlNumber ?? Math.floor(thisUpdate.getTime() / 1000));
  // RFC 5280 5.2.3: non-negative, at most 20 octets.
  if (crlNumber !== undefined && (crlNumber < 0n || crlNumber >= 1n << 159n)) throw new RangeError(`crlNumber out of range: ${crlNumber}`);

  const entries = revoked.map((e) => {
    const code = e.reason === undefined ? undefined : reasonCode(e.reason);
    if (e.reason !== undefined && code === undefined) throw new TypeError(`unknown revocation reason ${JSON.stringify(e.reason)}`);
    // Code 0 (unspecified) is falsy, so the generator omits the extension for it, as wanted.
    return { serialNumber: canonicalSerial(e.serial), revocationDate: wholeSeconds(e.revokedAt), reason: code, extensions: e.extensions };
  });
  const extensions: x509.Extension[] = [await authorityKeyId(caCert)];
  if (crlNumber !== undefined) extensions.push(new x509.Extension(OID_CRL_NUMBER, false, derInteger(crlNumber)));
  if (opts.deltaBase !== undefined) extensions.push(new x509.Extension(OID_DELTA_CRL_INDICATOR, true, derInteger(BigInt(opts.deltaBase))));
  if (opts.idp) extensions.push(new x509.Extension(OID_IDP, true, idpValue(opts.idp)));
  extensions.push(...(opts.extensions ?? []));

  const { privateKey, signature } = await importSigningKey((opts.signer ?? ca).keyPem);
  const crl = await x509.X509CrlGenerator.create({
    // The CA's encoded name, not a rebuilt one: verifiers match CRL issuer and CA subject byte-wise.
    issuer: caCert.subjectName,
    thisUpdate,
    nextUpdate,
    signingKey: privateKey,
    signingAlgorithm: signature,
    extensions,
    entries,
  });
  const der = Buffer.from(crl.rawData);
  // `X509 CRL`, the label RFC 7468 section 9 and openssl use; the library writes plain `CRL`.
  return { pem: toPem('X509 CRL', der), der };
}

/** Options of {@link writeCrl}. */
export interface WriteCrlOptions {
  /** Days until nextUpdate; default 7. */
  days?: number;
  /** Where to write; default `<dir>/ca.crl`. */
  out?: string;
}

/**
 * Files: a PEM CRL of the CA in `dir` listing every revoked certificate of its database, written
 * to `<dir>/ca.crl` (or `out`). The CRL number comes from `<dir>/crlnumber`, the counter file
 * of `openssl ca -gencrl` (hex, the next number to use), so both tools can take turns.
 * Returns the absolute path written.
 */
export async function writeCrl(dir: string, opts: WriteCrlOptions = {}): Promise<string> {
  const days = opts.days ?? DEFAULT_CRL_DAYS;
  if (!(Number.isFinite(days) && days > 0 && days <= MAX_CRL_DAYS)) {
    throw new TypeError(`days must be a number of days in (0, ${MAX_CRL_DAYS}], got ${days}`);
  }
  const root = resolve(dir);
  const ca = await loadKeyAndCert(join(root, 'ca.crt'), join(root, 'ca.key'));
  const out = resolve(opts.out ?? join(root, 'ca.crl'));
  return withDatabaseLock(root, async () => {
    const revoked = (await readCaDatabase(root))
      .filter((e) => e.status === 'revoked' && e.revokedAt)
      .map((e) => ({ serial: e.serial, revokedAt: e.revokedAt ?? new Date(0), reason: e.reason }));
    const counterPath = join(root, 'crlnumber');
    const crlNumber = await readCounter(counterPath);
    const thisUpdate = new Date();
    const { pem } = await createCrl(ca, revoked, {
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + days * DAY_MS),
      crlNumber,
    });
    // Counter first: a number is never used twice, even if writing the CRL then fails.
    await writeFileAtomic(counterPath, `${hexCounter(crlNumber + 1n)}\n`, PUBLIC_FILE_MODE);
    await writeFileAtomic(out, pem, PUBLIC_FILE_MODE);
    return out;
  });
}

async function readCounter(path: string): Promise<bigint> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 1n;
    throw err;
  }
  if (!/^[0-9A-Fa-f]{1,40}$/.test(text)) throw new Error(`${path} must hold a hex number, as openssl writes it`);
  return BigInt(`0x${text}`);
}

// openssl writes the counter as even-length upper-case hex (BN_bn2hex), e.g. `01`.
function hexCounter(n: bigint): string {
  const hex = n.toString(16).toUpperCase();
  return hex.length % 2 === 1 ? `0${hex}` : hex;
}
