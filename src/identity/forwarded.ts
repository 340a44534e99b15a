/**
 * Forwarded mode (PROTOCOL.md section 6): identity only from headers nginx signed, checked in
 * the contract's order. Never falls back to the peer address or to unsigned headers.
 * @module
 */
import { BlockList, isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';
import { GateError, type GateReason } from '../errors.js';
import { decodeRequestPath } from '../http/path.js';
import type { GateMetrics, LabelOf } from '../metrics/index.js';
import type { GateStore } from '../store/index.js';
import type { AgentIdentity, TrustBundle } from './certificate.js';
import { AUTHZ_TARGET_HEADERS, AUTHZ_VERSION, canonicalString, certFromHeader, FWD_HEADERS, FWD_VERSION, signatureMatches, signCanonical } from './forwarded-canonical.js';
import { ForwardedPathValidator } from './path-validation.js';

/** Options of {@link ForwardedVerifier}. */
export interface ForwardedOptions {
  keys: Map<string, Buffer>;
  maxSkewS: number;
  /** CIDR list; when set, only these peers may speak for agents. */
  trustedProxies?: string;
  replayCheck: 'all' | 'v1';
  pathPrefix: string;
  /**
   * Authorizer mode (section 13): the route of `P/v1/authorize`, whose requests are signed over
   * the original request's method and URI (`x-gate-fwd-method`, `x-gate-fwd-uri`) and always
   * replay-checked.
   */
  authorizeRoute?: string;
  store: GateStore;
  trust: TrustBundle;
  metrics: GateMetrics;
  now?: () => number;
}

/** Parses a comma-separated CIDR (or single address) list into a BlockList; throws TypeError. */
export function parseTrustedProxies(spec: string): BlockList {
  const list = new BlockList();
  for (const raw of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [addr, bits] = raw.split('/') as [string, string | undefined];
    const family = isIP(addr);
    if (family === 0) throw new TypeError(`"${raw}" is not an IP address or CIDR`);
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else {
      const n = Number(bits);
      if (!/^\d{1,3}$/.test(bits) || n > (family === 6 ? 128 : 32)) throw new TypeError(`"${raw}" has a bad prefix length`);
      list.addSubnet(addr, n, type);
    }
  }
  return list;
}

/** The values of one header across all its occurrences (Node joins duplicates in `headers`). */
function occurrences(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
  return out;
}

/** Verifies signed forwarded headers and returns the agent identity they carry. */
export class ForwardedVerifier {
  private readonly proxies: BlockList | undefined;
  private readonly now: () => number;
  /**
   * Identities whose certificate passed path validation, by thumbprint, so that a keep-alive
   * agent costs one HMAC and one SET NX per request rather than a path validation. Written
   * only after the signature, timestamp and replay checks: unsigned headers leave nothing here.
   */
  private readonly identities = new Map<string, AgentIdentity>();
  /**
   * The thumbprint of each certificate header that gave an identity, by the header's exact
   * text: a keep-alive agent's next request skips decoding and hashing it again. A header is
   * decoded the same way every time, so a hit gives the thumbprint decoding would. Written
   * only when {@link verify} returns an identity: unsigned headers and refused certificates
   * never enter it. At most 1,000 (each holds the header's text, up to ~22 KB for a 16 KiB
   * certificate); a miss only costs the decoding again.
   */
  private readonly certHeaders = new Map<string, string>();
  /** The trusted-proxy verdict of each connection: its peer address does not change. */
  private readonly peers = new WeakMap<object, boolean>();
  /** The RFC 5280 path validator; its `validations` counter shows what reached it. */
  readonly validator: ForwardedPathValidator;

  constructor(private readonly opts: ForwardedOptions) {
    this.proxies = opts.trustedProxies ? parseTrustedProxies(opts.trustedProxies) : undefined;
    this.now = opts.now ?? Date.now;
    this.validator = new ForwardedPathValidator(opts.trust);
  }

  /** Certificates held in memory (verified identities): bounded, and only signed ones. */
  get cachedCertificates(): number {
    return this.identities.size;
  }

  /** Certificate headers remembered with their thumbprint: bounded, and only ones that gave an identity. */
  get cachedCertificateHeaders(): number {
    return this.certHeaders.size;
  }

  private fail(result: LabelOf<'forwardedResult'>, detail: string, reason?: GateReason): GateError {
    this.opts.metrics.forwardedVerifications.inc({ result });
    return new GateError('forwarded_signature_invalid', { detail, reason });
  }

  /** True when `addr` is a trusted proxy (or no list is configured). */
  peerTrusted(addr: string | undefined): boolean {
    if (!this.proxies) return true;
    if (!addr) return false;
    const v4 = addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
    return this.proxies.check(v4, isIP(v4) === 6 ? 'ipv6' : 'ipv4');
  }

  /** nginx's auth_request subrequest is always GET P/v1/authorize: the signed target travels in headers. */
  private authzTarget(raw: string[]): { method: string; requestUri: string } {
    const out: string[] = [];
    for (const name of AUTHZ_TARGET_HEADERS) {
      const vals = occurrences(raw, name);
      if (vals.length !== 1) throw this.fail('missing', `${name} present ${vals.length} times`, 'forwarded_headers_missing');
      out.push(vals[0]!);
    }
    const [method, requestUri] = out as [string, string];
    // nginx's $request_method is a token; nginx refuses a $request_uri that is not printable ASCII.
    if (!/^[A-Z]{1,20}$/.test(method) || !/^\/[\x21-\x7e]*$/.test(requestUri)) throw this.fail('bad_signature', 'signed method or URI malformed');
    return { method, requestUri };
  }

  /** Checks the headers of `request` (section 6 order); throws the contract's refusals. */
  async verify(request: FastifyRequest): Promise<AgentIdentity> {
    let trusted = this.peers.get(request.socket);
    if (trusted === undefined) this.peers.set(request.socket, (trusted = this.peerTrusted(request.socket.remoteAddress)));
    if (!trusted) throw this.fail('untrusted_proxy', `peer ${request.socket.remoteAddress} is not a trusted proxy`);
    const raw = request.raw.rawHeaders;
    const v: Record<string, string> = {};
    for (const name of FWD_HEADERS) {
      const vals = occurrences(raw, name);
      if (vals.length !== 1) throw this.fail('missing', `${name} present ${vals.length} times`, 'forwarded_headers_missing');
      v[name] = vals[0]!;
    }
    const kid = v['x-gate-fwd-kid']!;
    const ts = v['x-gate-fwd-ts']!;
    const id = v['x-gate-fwd-id']!;
    if (!/^[0-9]{1,12}$/.test(ts)) throw this.fail('bad_signature', 'ts is not 1-12 digits');
    if (!/^[0-9a-f]{32}$/i.test(id)) throw this.fail('bad_signature', 'id is not 32 hex digits');
    const secret = this.opts.keys.get(kid);
    if (!secret) throw this.fail('unknown_kid', `unknown kid ${kid}`);
    // Before the signature holds, the certificate header is only decoded and hashed (its
    // thumbprint is part of the signed string), or found among headers that gave an identity
    // before: no X.509 parse, nothing remembered.
    const certHeader = v['x-gate-fwd-cert']!;
    let thumbprint = this.certHeaders.get(certHeader);
    let cert: { der: Buffer; thumbprint: string } | undefined;
    if (thumbprint === undefined) {
      try {
        cert = certFromHeader(certHeader);
      } catch (err) {
        throw this.fail('bad_signature', `certificate header: ${(err as Error).message}`);
      }
      thumbprint = cert?.thumbprint;
    }
    const host = v['x-gate-fwd-host']!;
    const authz = this.opts.authorizeRoute !== undefined && request.routeOptions.url === this.opts.authorizeRoute;
    const target = authz ? this.authzTarget(raw) : { method: request.method, requestUri: request.raw.url ?? '' };
    const canonical = canonicalString(
      { kid, ts, id, ...target, host, addr: v['x-gate-fwd-addr']!, verify: v['x-gate-fwd-verify']!, thumbprint: thumbprint ?? '-' },
      authz ? AUTHZ_VERSION : FWD_VERSION,
    );
    if (!signatureMatches(v['x-gate-fwd-sig']!, signCanonical(secret, canonical))) throw this.fail('bad_signature', 'signature does not match');
    // The signed host must be the host this request was sent to, so a capture cannot be
    // replayed against another virtual host of the same gate.
    const actualHost = (request.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
    if (actualHost !== host.toLowerCase()) throw this.fail('bad_signature', 'signed host differs from Host');
    const skew = this.opts.maxSkewS;
    if (Math.abs(this.now() / 1000 - Number(ts)) > skew) throw this.fail('stale', `ts ${ts} outside ${skew} s`);
    if (authz || this.opts.replayCheck === 'all' || isV1Path(request.raw.url ?? '', this.opts.pathPrefix)) {
      if (!(await this.opts.store.rememberOnce(`fwd:${id}`, (2 * skew + 1) * 1000))) {
        this.opts.metrics.replaysDetected.inc({ kind: 'forwarded' });
        throw this.fail('replayed', `request id ${id} seen before`);
      }
    }
    this.opts.metrics.forwardedVerifications.inc({ result: 'ok' });
    // From here on the certificate is parsed and judged: RFC 5280 path validation against
    // GATE_CLIENT_CA, then the contract's rules as in direct mode.
    const verify = v['x-gate-fwd-verify']!;
    if (verify === 'NONE' || thumbprint === undefined) throw new GateError('client_cert_required', { detail: `nginx verify ${verify}` });
    if (verify !== 'SUCCESS') throw new GateError('client_cert_invalid', { detail: `nginx verify ${verify}` });
    const now = this.now();
    const known = this.identities.get(thumbprint);
    // Only successes are cached, and their validity window is checked on every use.
    if (known && known.notBefore <= now && now <= known.notAfter) {
      this.rememberHeader(certHeader, thumbprint);
      return known;
    }
    // A header known by its text decoded before, so it decodes again (to a certificate).
    cert ??= certFromHeader(certHeader)!;
    const identity = await this.validator.validate(cert.der, now);
    remember(this.identities, thumbprint, identity);
    this.rememberHeader(certHeader, thumbprint);
    return identity;
  }

  private rememberHeader(text: string, thumbprint: string): void {
    if (!this.certHeaders.has(text)) remember(this.certHeaders, text, thumbprint, 1_000);
  }
}

/** Judged on the decoded path, as routing is, so `%76` cannot skip the v1 replay check. */
function isV1Path(rawUrl: string, prefix: string): boolean {
  try {
    return decodeRequestPath(rawUrl).startsWith(`${prefix}/v1/`);
  } catch {
    return true;
  }
}

/** Adds `key` to `map`, dropping the oldest entry when it holds `cap`. */
function remember<V>(map: Map<string, V>, key: string, value: V, cap = 10_000): void {
  if (map.size >= cap) map.delete(map.keys().next().value!);
  map.set(key, value);
}
