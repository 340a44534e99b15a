/**
 * Forwarded mode's RFC 5280 path validation of the leaf nginx forwards (defence in depth:
 * nginx already ran OpenSSL's `X509_verify_cert` with `ssl_verify_client`). The path is built
 * and checked by pkijs's `CertificateChainValidationEngine` (signatures, validity, name
 * chaining, basicConstraints cA and keyCertSign on every CA including the anchor, name
 * constraints, policies); the contract's rules then run as in direct mode
 * (`checkAcceptedChain`).
 *
 * Where pkijs 3.4 is weaker than RFC 5280 / OpenSSL, this module closes the gap without
 * matching names itself:
 * - anchors are the self-signed certificates of `GATE_CLIENT_CA`; its other certificates are
 *   offered as intermediates, so the path reaches a root as OpenSSL's does (pkijs would stop at
 *   any trusted certificate and skip the constraints above it);
 * - pkijs drops a leaf that equals a trusted certificate and validates another one in its
 *   place: a leaf that is itself in the bundle is refused before pkijs sees it, and the path
 *   pkijs returns must start with the leaf;
 * - pkijs ignores the anchor's own nameConstraints: they are passed as its initial permitted /
 *   excluded subtrees (its API for trust-anchor constraints);
 * - pkijs unions the subtrees of several constrained CAs instead of intersecting them: a path
 *   with more than one constrained certificate is refused;
 * - pkijs matches URI constraints against URIs without an authority (OpenSSL refuses those),
 *   never checks DNS constraints against a CN when there is no DNS SAN, and skips the subject's
 *   emailAddress when SANs exist: below a constrained CA, certificates must name themselves
 *   only with DNS, IP and `scheme://host` URI SANs, carry no emailAddress, and no hostname-like
 *   CN without a DNS SAN; constraint forms other than DNS, URI and IP are refused;
 * - pkijs does not enforce pathLenConstraint: counted here;
 * - pkijs does not look at critical extensions it can parse (nor at any on the leaf): the
 *   allow-list of `checkAcceptedChain` does.
 * @module
 */
import { webcrypto, X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import { GateError } from '../errors.js';
import { x509 } from '../lib/x509.js';
import { CERT_LIMITS, checkAcceptedChain, checkKeyCaps, type AgentIdentity, type TrustBundle } from './certificate.js';

const OID_NAME_CONSTRAINTS = '2.5.29.30';
const OID_SAN = '2.5.29.17';
const OID_EMAIL_ADDRESS = '1.2.840.113549.1.9.1';
const OID_CN = '2.5.4.3';
/** GeneralName tags pkijs judges like OpenSSL: dNSName, URI, iPAddress. */
const GN_DNS = 2;
const GN_URI = 6;
const GN_IP = 7;
const CONSTRAINT_FORMS_SUPPORTED = new Set([GN_DNS, GN_URI, GN_IP]);

const engine = new pkijs.CryptoEngine({ name: 'node-webcrypto', crypto: webcrypto as unknown as ConstructorParameters<typeof pkijs.CryptoEngine>[0]['crypto'] });

function invalid(detail: string): GateError {
  return new GateError('client_cert_invalid', { detail });
}

interface Parsed {
  node: X509Certificate;
  pki: pkijs.Certificate;
}

function parse(der: Buffer): Parsed {
  return { node: new X509Certificate(der), pki: pkijs.Certificate.fromBER(new Uint8Array(der)) };
}

function extension(c: pkijs.Certificate, oid: string): pkijs.Extension | undefined {
  return c.extensions?.find((e) => e.extnID === oid);
}

/** Validates forwarded leaf certificates against `GATE_CLIENT_CA`. */
export class ForwardedPathValidator {
  private readonly roots: Parsed[];
  private readonly intermediates: Parsed[];
  /** Leaf certificates parsed and validated so far (tests read it: nothing before the HMAC). */
  validations = 0;

  constructor(private readonly trust: TrustBundle) {
    const all = trust.anchors.map((a) => parse(a.raw));
    const selfSigned = (p: Parsed) => p.node.checkIssued(p.node) && p.node.verify(p.node.publicKey);
    this.roots = all.filter(selfSigned);
    this.intermediates = all.filter((p) => !selfSigned(p));
  }

  /** The identity in `leafDer` at `now`; throws `client_cert_invalid` naming the reason. */
  async validate(leafDer: Buffer, now: number): Promise<AgentIdentity> {
    this.validations++;
    if (leafDer.length > CERT_LIMITS.maxDerBytes) throw invalid(`certificate is ${leafDer.length} bytes, over ${CERT_LIMITS.maxDerBytes}`);
    let leaf: Parsed;
    try {
      leaf = parse(leafDer);
    } catch (err) {
      throw new GateError('client_cert_invalid', { detail: 'certificate does not decode', cause: err });
    }
    if (!leaf.node.raw.equals(leafDer)) throw invalid('not exactly one DER certificate');
    if (this.trust.contains(leaf.node)) throw invalid('the agent certificate is itself in GATE_CLIENT_CA');
    // Bounds the cost of the signature checks pkijs is about to make with the leaf's issuer
    // chain (bundle certificates) and of anything keyed on the leaf.
    checkKeyCaps(leaf.node);
    // Section 2's SAN limit before the path engine walks the names (it is checked again with
    // the other leaf rules): a 1,000-SAN certificate costs pkijs seconds, not a refusal's microseconds.
    const sanCount = (extension(leaf.pki, OID_SAN)?.parsedValue as pkijs.AltName | undefined)?.altNames.length ?? 0;
    if (sanCount > CERT_LIMITS.maxSans) throw invalid(`${sanCount} SANs, over ${CERT_LIMITS.maxSans}`);
    let path: Parsed[];
    try {
      path = await this.buildAndVerify(leaf, now);
      // Decoders (pkijs, @peculiar/x509) throw plain errors on hostile extensions, also of a
      // bundle certificate: every one of them is a refused certificate, never a 500.
      this.checkPathLengths(path);
    } catch (err) {
      if (err instanceof GateError) throw err;
      throw new GateError('client_cert_invalid', { detail: 'path validation failed', cause: err });
    }
    return checkAcceptedChain(
      path.map((p) => p.node),
      this.trust,
      now,
    );
  }

  private async run(leaf: Parsed, now: number, anchorConstraints?: pkijs.NameConstraints): Promise<pkijs.CertificateChainValidationEngineVerifyResult> {
    const nodeOf = new Map<pkijs.Certificate, X509Certificate>([leaf, ...this.intermediates, ...this.roots].map((p) => [p.pki, p.node]));
    const chainEngine = new pkijs.CertificateChainValidationEngine({
      trustedCerts: this.roots.map((r) => r.pki),
      // pkijs takes the last of `certs` as the certificate to validate.
      certs: [...this.intermediates.map((i) => i.pki), leaf.pki],
      checkDate: new Date(now),
      findIssuer: (cert: pkijs.Certificate, eng: pkijs.CertificateChainValidationEngine) => Promise.resolve(findIssuer(cert, eng, nodeOf)),
    });
    return chainEngine.verify(
      {
        initialPermittedSubtreesSet: anchorConstraints?.permittedSubtrees ?? [],
        initialExcludedSubtreesSet: anchorConstraints?.excludedSubtrees ?? [],
      },
      engine,
    );
  }

  private async buildAndVerify(leaf: Parsed, now: number): Promise<Parsed[]> {
    let result = await this.run(leaf, now);
    if (!result.result) throw invalid(`path validation: ${result.resultMessage}`);
    let path = this.toParsed(result.certificatePath ?? [], leaf);
    const anchor = path.at(-1)!;
    const anchorNc = extension(anchor.pki, OID_NAME_CONSTRAINTS);
    const constrained = path.filter((p) => extension(p.pki, OID_NAME_CONSTRAINTS));
    if (constrained.length > 1) throw invalid('more than one name-constrained CA in the path');
    if (constrained.length === 1) {
      const at = path.indexOf(constrained[0]!);
      if (at === 0) throw invalid('name constraints on the agent certificate');
      const nc = constrained[0]!.pki.extensions!.find((e) => e.extnID === OID_NAME_CONSTRAINTS)!.parsedValue as pkijs.NameConstraints | undefined;
      if (!nc) throw invalid('name constraints do not decode');
      for (const t of [...(nc.permittedSubtrees ?? []), ...(nc.excludedSubtrees ?? [])]) {
        if (!CONSTRAINT_FORMS_SUPPORTED.has(t.base.type)) throw invalid(`name constraint of form ${t.base.type} not supported`);
      }
      for (const p of path.slice(0, at)) checkNameForms(p.pki);
      if (anchorNc) {
        // Same path again, now with the anchor's constraints as pkijs's initial subtrees.
        result = await this.run(leaf, now, nc);
        if (!result.result) throw invalid(`path validation: ${result.resultMessage}`);
        path = this.toParsed(result.certificatePath ?? [], leaf);
        if (path.at(-1)!.node.raw.compare(anchor.node.raw) !== 0) throw invalid('path changed between validations');
      }
    }
    return path;
  }

  private toParsed(path: pkijs.Certificate[], leaf: Parsed): Parsed[] {
    if (path[0] !== leaf.pki) throw invalid('path does not start at the agent certificate');
    const all = [leaf, ...this.intermediates, ...this.roots];
    return path.map((c) => {
      const p = all.find((a) => a.pki === c);
      if (!p) throw invalid('path holds an unknown certificate');
      return p;
    });
  }

  /** RFC 5280 4.2.1.9: no more non-self-issued CAs below a CA than its pathLenConstraint. */
  private checkPathLengths(path: Parsed[]): void {
    for (let i = 1; i < path.length; i++) {
      const bc = new x509.X509Certificate(new Uint8Array(path[i]!.node.raw)).getExtension(x509.BasicConstraintsExtension);
      if (bc?.pathLength === undefined) continue;
      const below = path.slice(1, i).filter((c) => !c.pki.subject.isEqual(c.pki.issuer)).length;
      if (below > bc.pathLength) throw invalid(`chain certificate ${i} path length ${bc.pathLength} exceeded`);
    }
  }
}

/**
 * pkijs's issuer search with OpenSSL's link checks (Node's `checkIssued`: names and key
 * identifiers; `verify`: the signature): pkijs's own WebCrypto verification cannot check
 * Ed25519 signatures, so it would refuse every agent of an Ed25519 CA. Path building, the
 * CA checks and name constraints stay pkijs's.
 */
function findIssuer(cert: pkijs.Certificate, eng: pkijs.CertificateChainValidationEngine, nodeOf: Map<pkijs.Certificate, X509Certificate>): pkijs.Certificate[] {
  const node = nodeOf.get(cert);
  if (!node) return [];
  if (node.checkIssued(node) && node.verify(node.publicKey)) return [cert];
  return [...eng.trustedCerts, ...eng.certs].filter((c) => {
    const candidate = nodeOf.get(c);
    return candidate !== undefined && c !== cert && node.checkIssued(candidate) && node.verify(candidate.publicKey);
  });
}

/**
 * Below a name-constrained CA: only the name forms pkijs matches like OpenSSL (see the
 * module comment). Refuses; never matches a name against a constraint.
 */
function checkNameForms(c: pkijs.Certificate): void {
  const san = extension(c, OID_SAN)?.parsedValue as pkijs.AltName | undefined;
  const names = san?.altNames ?? [];
  for (const n of names) {
    if (n.type === GN_URI) {
      if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]/.test(String(n.value))) throw invalid('URI SAN without an authority below a name-constrained CA');
    } else if (n.type !== GN_DNS && n.type !== GN_IP) throw invalid(`SAN of form ${n.type} below a name-constrained CA`);
  }
  for (const tv of c.subject.typesAndValues) {
    if (tv.type === OID_EMAIL_ADDRESS) throw invalid('emailAddress in the subject below a name-constrained CA');
    if (tv.type === OID_CN && !names.some((n) => n.type === GN_DNS)) {
      const cn = String((tv.value.valueBlock as { value?: unknown }).value ?? '');
      if (/^[A-Za-z0-9_.-]+$/.test(cn) && cn.includes('.')) throw invalid('hostname-like CN without a DNS SAN below a name-constrained CA');
    }
  }
}
