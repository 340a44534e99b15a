/**
 * The choice among several CRLs for one certificate (RFC 5280 6.3.3): which CRLs' scope covers
 * it, the newest complete one, deltas on top of their base. Pure.
 * @module
 */
import * as pkijs from 'pkijs';
import { generalNameDer, type ParsedCrl } from './crl.js';
import { normalizeSerial } from './serial.js';

/** What RFC 5280 6.3.3 needs to know about the certificate being checked. */
export interface CertCrlScope {
  /** basicConstraints cA. */
  isCa: boolean;
  /** Per CRL distribution point: its fullName GeneralNames and its cRLIssuer names (DER, pkijs encoding). */
  points: { fullNames: Buffer[] | undefined; crlIssuer: Buffer[] | undefined }[];
}

/** Reads the certificate's basicConstraints and CRL distribution points. */
export function certCrlScope(certDer: Buffer): CertCrlScope {
  const cert = pkijs.Certificate.fromBER(new Uint8Array(certDer));
  let isCa = false;
  const points: CertCrlScope['points'] = [];
  for (const ext of cert.extensions ?? []) {
    if (ext.extnID === '2.5.29.19' && ext.parsedValue instanceof pkijs.BasicConstraints) isCa = ext.parsedValue.cA === true;
    if (ext.extnID === '2.5.29.31' && ext.parsedValue instanceof pkijs.CRLDistributionPoints) {
      for (const dp of ext.parsedValue.distributionPoints) {
        const name = dp.distributionPoint;
        points.push({
          fullNames: Array.isArray(name) ? name.map(generalNameDer) : undefined,
          crlIssuer: dp.cRLIssuer?.map(generalNameDer),
        });
      }
    }
  }
  return { isCa, points };
}

function anyEqual(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.some((x) => b.some((y) => x.equals(y)));
}

/**
 * Whether `crl`'s scope provably includes the certificate (6.3.3 (b)(2)); anything this code
 * cannot prove (indirect CRLs, relative names, attribute-certificate CRLs) is out of scope.
 */
export function crlCovers(crl: ParsedCrl, cert: CertCrlScope): boolean {
  const idp = crl.idp;
  if (!idp) return true;
  if (idp.onlyAttribute || idp.indirect || idp.relativeName) return false;
  if (idp.onlyUser && cert.isCa) return false;
  if (idp.onlyCa && !cert.isCa) return false;
  if (idp.fullNames === undefined) return true;
  // A CRL of one distribution point covers only certificates that point at it.
  return cert.points.some((p) => (p.fullNames ? anyEqual(idp.fullNames!, p.fullNames) : p.crlIssuer ? anyEqual(idp.fullNames!, p.crlIssuer) : false));
}

/** The verdict of {@link crlVerdict}. */
export type CrlVerdict =
  | { status: 'good' | 'revoked'; until: number; crlNumber: bigint | undefined; delta: bigint | undefined }
  | { status: 'unknown'; detail: string };

/** Orders complete CRLs newest first: by cRLNumber when all have one, else by thisUpdate. */
function newestFirst(list: ParsedCrl[]): ParsedCrl[] {
  const byNumber = list.every((c) => c.crlNumber !== undefined);
  return [...list].sort((a, b) => {
    if (byNumber && a.crlNumber !== b.crlNumber) return a.crlNumber! > b.crlNumber! ? -1 : 1;
    if (a.thisUpdate !== b.thisUpdate) return b.thisUpdate - a.thisUpdate;
    return (b.crlNumber ?? -1n) > (a.crlNumber ?? -1n) ? 1 : (b.crlNumber ?? -1n) < (a.crlNumber ?? -1n) ? -1 : 0;
  });
}

function sameScope(a: ParsedCrl, b: ParsedCrl): boolean {
  return a.idp === undefined ? b.idp === undefined : b.idp !== undefined && a.idp.der.equals(b.idp.der);
}

/**
 * RFC 5280 6.3.3 over CRLs already checked as fresh, signed by the certificate's issuer and
 * usable: the newest complete CRL whose scope covers the certificate decides, with the newest
 * delta of the same scope applied on top when its BaseCRLNumber is at most the base's number
 * (a delta alone is never an answer). CRLs partitioned by reason (onlySomeReasons) never say
 * good, but a revocation they list counts. `defaultUntil` bounds CRLs without nextUpdate.
 */
export function crlVerdict(crls: readonly ParsedCrl[], cert: CertCrlScope, serial: string, defaultUntil: number): CrlVerdict {
  const s = normalizeSerial(serial);
  const inScope = crls.filter((c) => crlCovers(c, cert));
  const untilOf = (c: ParsedCrl) => c.nextUpdate ?? defaultUntil;
  for (const c of inScope) {
    if (c.deltaBase === undefined && c.idp?.onlySomeReasons && c.revoked.has(s) && !c.removed.has(s)) {
      return { status: 'revoked', until: untilOf(c), crlNumber: c.crlNumber, delta: undefined };
    }
  }
  const complete = newestFirst(inScope.filter((c) => c.deltaBase === undefined && !c.idp?.onlySomeReasons));
  const base = complete[0];
  if (!base) {
    const deltas = inScope.filter((c) => c.deltaBase !== undefined).length;
    return { status: 'unknown', detail: deltas > 0 ? 'only delta CRLs: no complete CRL to apply them to' : 'no complete CRL whose scope covers the certificate' };
  }
  let status: 'good' | 'revoked' = base.revoked.has(s) ? 'revoked' : 'good';
  let until = untilOf(base);
  let applied: ParsedCrl | undefined;
  if (base.crlNumber !== undefined) {
    for (const d of inScope) {
      if (d.deltaBase === undefined || d.crlNumber === undefined || !sameScope(d, base)) continue;
      if (d.deltaBase <= base.crlNumber && d.crlNumber > base.crlNumber && (!applied || d.crlNumber > applied.crlNumber!)) applied = d;
    }
  }
  if (applied) {
    if (applied.removed.has(s)) status = 'good';
    else if (applied.revoked.has(s)) status = 'revoked';
    until = Math.min(until, untilOf(applied));
  }
  return { status, until, crlNumber: base.crlNumber, delta: applied?.crlNumber };
}
