import type { TLSSocket } from 'node:tls';
import { GateError } from '../errors.js';
import { thumbprintOf, verifyAgentCertificate, type AgentIdentity, type TrustBundle } from './certificate.js';

interface PeerCert {
  raw?: Buffer;
  issuerCertificate?: PeerCert;
}

/**
 * Direct mode: the identity of the TLS peer. The verdict is computed once per connection
 * (certificates cannot change on a connection) and the validity window rechecked per
 * request, because a keep-alive connection may outlive the certificate.
 */
export class DirectIdentityResolver {
  private readonly verdicts = new WeakMap<object, AgentIdentity | GateError>();
  /**
   * Intermediates seen in full handshakes, by leaf thumbprint. A resumed TLS session carries
   * only the leaf (OpenSSL keeps no peer chain in the session), and resumption is only
   * possible after a full handshake with this process, so the chain is here for it.
   */
  private readonly chains = new Map<string, Buffer[]>();
  private static readonly CHAINS_MAX = 50_000;
  /**
   * Identities verified on earlier connections, by leaf thumbprint: verification parses the
   * chain (milliseconds), and agents reconnect. Only successes are kept; the validity window
   * is checked on every use.
   */
  private readonly verified = new Map<string, { identity: AgentIdentity; verifiedAt: number }>();
  /** Chains are verified again after this long, so an intermediate's expiry is noticed. */
  private static readonly REVERIFY_MS = 10 * 60_000;

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
    const peer = socket.getPeerCertificate(true) as PeerCert;
    if (!peer || !peer.raw) return new GateError('client_cert_required', { detail: 'no client certificate presented' });
    // Node links the chain OpenSSL saw through issuerCertificate; the root links to itself.
    const chain: Buffer[] = [];
    const seen = new Set<PeerCert>([peer]);
    for (let c = peer.issuerCertificate; c && !seen.has(c) && chain.length < 8; c = c.issuerCertificate) {
      seen.add(c);
      if (c.raw) chain.push(c.raw);
    }
    const resumed = typeof socket.isSessionReused === 'function' && socket.isSessionReused();
    const leafPrint = thumbprintOf(peer.raw);
    const known = this.verified.get(leafPrint);
    if (known && known.verifiedAt + DirectIdentityResolver.REVERIFY_MS > this.now()) return known.identity;
    if (resumed && chain.length === 0) chain.push(...(this.chains.get(leafPrint) ?? []));
    try {
      const identity = verifyAgentCertificate(peer.raw, chain, this.trust, this.now());
      if (this.verified.size >= DirectIdentityResolver.CHAINS_MAX) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(leafPrint, { identity, verifiedAt: this.now() });
      if (!resumed && chain.length > 0) {
        if (this.chains.size >= DirectIdentityResolver.CHAINS_MAX) this.chains.delete(this.chains.keys().next().value!);
        this.chains.set(leafPrint, chain);
      }
      return identity;
    } catch (err) {
      if (err instanceof GateError) return err;
      return new GateError('client_cert_invalid', { detail: 'certificate verification failed', cause: err });
    }
  }
}
