/**
 * Direct mode: the identity of the TLS peer. OpenSSL's own verdict (`X509_verify_cert`, run in
 * the handshake against the listener's `ca`) is the first gate; the contract's own rules then
 * run on the chain it accepted. A chain OpenSSL refused costs nothing here beyond reading
 * its error code.
 * @module
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { GateError } from '../errors.js';
import { CERT_LIMITS, checkAcceptedChain, thumbprintOf, type AgentIdentity, type TrustBundle } from './certificate.js';

interface PeerCert {
  raw?: Buffer;
  issuerCertificate?: PeerCert;
}

/** What a test or an operator can read about the resolver's work (no secrets). */
export interface DirectResolverStats {
  /** Chains the contract's rules ran on (only chains OpenSSL accepted). */
  chainChecks: number;
  /** Chains whose link signatures the gate verified itself (embedding with a broader `ca`). */
  linkVerifications: number;
  /** Connections whose chain the gate read and parsed (a returning agent's leaf needs none). */
  chainReads: number;
}

/**
 * The verdict is computed once per connection (certificates cannot change on a connection)
 * and the validity window rechecked per request, because a keep-alive connection may outlive
 * the certificate.
 */
export class DirectIdentityResolver {
  private readonly verdicts = new WeakMap<object, AgentIdentity | GateError>();
  /**
   * Certificates above the leaf in accepted full handshakes, by leaf thumbprint. A resumed TLS
   * session carries only the leaf (OpenSSL keeps its verdict in the session, not the chain),
   * and resumption is only possible after a full handshake with this process.
   */
  private readonly chains = new Map<string, X509Certificate[]>();
  private static readonly CHAINS_MAX = 50_000;
  /** Identities whose chain passed the contract's rules, by leaf thumbprint (agents reconnect). */
  private readonly verified = new Map<string, { identity: AgentIdentity; verifiedAt: number }>();
  /** Chains are checked again after this long, so an intermediate's expiry is noticed. */
  private static readonly REVERIFY_MS = 10 * 60_000;
  readonly stats: DirectResolverStats = { chainChecks: 0, linkVerifications: 0, chainReads: 0 };

  constructor(private readonly trust: TrustBundle, private readonly now: () => number = Date.now) {}

  /** The verified identity of the peer of `socket`; throws `client_cert_required` or `client_cert_invalid`. */
  resolve(socket: object): AgentIdentity {
    let verdict = this.verdicts.get(socket);
    if (verdict === undefined) {
      verdict = this.verify(socket as Partial<TLSSocket>);
      this.verdicts.set(socket, verdict);
    }
    if (verdict instanceof GateError) throw new GateError(verdict.code, { detail: verdict.detail });
    const now = this.now();
    if (now > verdict.notAfter || now < verdict.notBefore) throw new GateError('client_cert_invalid', { detail: 'certificate outside its validity window' });
    return verdict;
  }

  private verify(socket: Partial<TLSSocket>): AgentIdentity | GateError {
    if (typeof socket.getPeerCertificate !== 'function') return new GateError('client_cert_required', { detail: 'not a TLS connection' });
    // OpenSSL's verdict, also on resumed sessions (it travels in the session). Fail closed
    // on anything but an explicit true; no parse or signature work on refused chains, only
    // the look whether there was a certificate at all. (getPeerX509Certificate is not used:
    // on Node 20 calling it first empties getPeerCertificate(true)'s chain.)
    if (socket.authorized !== true) {
      if (!socket.getPeerCertificate(false)?.raw) return new GateError('client_cert_required', { detail: 'no client certificate presented' });
      const code = typeof socket.authorizationError === 'string' ? socket.authorizationError : String(socket.authorizationError ?? 'not authorized');
      return new GateError('client_cert_invalid', { detail: `TLS verification: ${code.slice(0, 80)}` });
    }
    // Presence counts even here: a TLS 1.3 session resumed from one without a certificate
    // reads as authorized in Node, with no peer certificate.
    // A returning agent (a verified leaf) costs only the leaf's DER and a hash: the chain view
    // (getPeerCertificate(true)) and an X509Certificate parse cost ~20x more per connection.
    // On a resumed session the leaf comes from getPeerX509Certificate, a fifth of the cost of
    // getPeerCertificate(false)'s object: the chain it would empty holds only the leaf there.
    const resumed = typeof socket.isSessionReused === 'function' && socket.isSessionReused();
    const der = resumed && typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate()?.raw : (socket.getPeerCertificate(false) as PeerCert | undefined)?.raw;
    if (!der) return new GateError('client_cert_required', { detail: 'no client certificate presented' });
    if (der.length > CERT_LIMITS.maxDerBytes) return new GateError('client_cert_invalid', { detail: `certificate is ${der.length} bytes, over ${CERT_LIMITS.maxDerBytes}` });
    const leafPrint = thumbprintOf(der);
    const known = this.verified.get(leafPrint);
    if (known && known.verifiedAt + DirectIdentityResolver.REVERIFY_MS > this.now()) return known.identity;
    this.stats.chainReads++;
    const peer = socket.getPeerCertificate(true) as PeerCert | undefined;
    if (!peer?.raw) return new GateError('client_cert_required', { detail: 'no client certificate presented' });
    const leaf = new X509Certificate(peer.raw);
    let above = peerChain(peer);
    if (above === undefined) return new GateError('client_cert_invalid', { detail: `chain longer than ${CERT_LIMITS.maxDepth}` });
    const last = above.at(-1);
    if (resumed && (!last || !this.trust.contains(last))) above = this.chains.get(leafPrint) ?? above;
    const verifyLinks = !serverTrustIsBundle(socket, this.trust);
    this.stats.chainChecks++;
    if (verifyLinks) this.stats.linkVerifications++;
    try {
      const identity = checkAcceptedChain([leaf, ...above], this.trust, this.now(), { verifyLinks });
      remember(this.verified, leafPrint, { identity, verifiedAt: this.now() });
      if (!resumed) remember(this.chains, leafPrint, above);
      return identity;
    } catch (err) {
      if (err instanceof GateError) return err;
      return new GateError('client_cert_invalid', { detail: 'certificate verification failed', cause: err });
    }
  }
}

/**
 * The certificates above the leaf as Node shows them: the presented chain linked by name and
 * completed from the server's `ca`, the root linking to itself. Undefined when longer than the
 * contract allows.
 */
function peerChain(peer: PeerCert): X509Certificate[] | undefined {
  const out: X509Certificate[] = [];
  const seen = new Set<PeerCert>([peer]);
  for (let c = peer.issuerCertificate; c && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    if (!c.raw) break;
    if (out.length >= CERT_LIMITS.maxDepth) return undefined;
    out.push(new X509Certificate(c.raw));
  }
  return out;
}

/**
 * True when the listener's `ca` is this very bundle (the standalone gate), so a chain OpenSSL
 * accepted ends at one of its certificates and Node's name-linked view of it needs no
 * signature checks. Any doubt (an embedding server, another `ca`) means checking the links.
 */
function serverTrustIsBundle(socket: Partial<TLSSocket>, trust: TrustBundle): boolean {
  const ca = (socket as { server?: { ca?: unknown } }).server?.ca;
  if (typeof ca === 'string') return ca === trust.pem;
  if (Buffer.isBuffer(ca)) return ca.toString('utf8') === trust.pem;
  return false;
}

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.size >= 50_000 && !map.has(key)) map.delete(map.keys().next().value!);
  map.set(key, value);
}
