/**
 * Access tokens (PROTOCOL.md section 4 response, section 5 checks): EdDSA JWTs bound to the
 * agent certificate with `cnf.x5t#S256` (RFC 8705 section 3.1).
 * @module
 */
import type { JWK } from 'jose';
import { GateError } from '../errors.js';
import { RandomPool } from '../lib/random.js';
import { parseCompactJws, parseJsonObjectStrict, signEdDsaCompact, verifyJwsSignature } from '../lib/jws.js';
import type { SigningKey, SigningKeySet } from './keys.js';

type SignerKey = SigningKey & { privateKey: NonNullable<SigningKey['privateKey']> };

/** What a verified token says. */
export interface VerifiedToken {
  sub: string;
  jti: string;
  exp: number;
  iat: number;
  thumbprint: string;
  att?: number;
}

/** Options of {@link TokenService}. */
export interface TokenServiceOptions {
  keys: SigningKeySet;
  issuer: string;
  audience: string;
  ttlS: number;
  skewS: number;
  /** Most verified tokens remembered (each verify costs ~100 µs; a lookup ~0.1 µs). */
  cacheMax?: number;
  now?: () => number;
}

/** Issues and verifies access tokens. */
export class TokenService {
  private readonly signer: SignerKey;
  /** The signer's protected header, encoded once: what jose's SignJWT encodes for it. */
  private readonly headerB64: string;
  private readonly byKid: Map<string, SigningKey>;
  private readonly cache = new Map<string, VerifiedToken>();
  private readonly cacheMax: number;
  private readonly now: () => number;
  private readonly random = new RandomPool(JTI_BYTES * 256);

  constructor(private readonly opts: TokenServiceOptions) {
    const first = opts.keys.keys[0];
    if (!first?.privateKey) throw new TypeError('the first signing key must be private');
    this.signer = first as SignerKey;
    this.headerB64 = Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'at+jwt', kid: first.kid }), 'utf8').toString('base64url');
    this.byKid = new Map(opts.keys.keys.map((k) => [k.kid, k]));
    this.cacheMax = opts.cacheMax ?? 50_000;
    this.now = opts.now ?? Date.now;
  }

  /** The public JWK Set served at `P/jwks.json`. */
  jwks(): { keys: JWK[] } {
    return { keys: this.opts.keys.keys.map((k) => k.publicJwk) };
  }

  /** Signs a token for `agentId` bound to `thumbprint`. */
  async issue(agentId: string, thumbprint: string, att?: number): Promise<{ token: string; jti: string; expiresIn: number }> {
    return this.issueSync(agentId, thumbprint, att);
  }

  /**
   * {@link issue} without the promise. The claims are serialized in the order jose's SignJWT
   * produced them (cnf, att, iss, sub, aud, iat, exp, jti), so tokens are byte-identical to it.
   */
  issueSync(agentId: string, thumbprint: string, att?: number): { token: string; jti: string; expiresIn: number } {
    const iat = Math.floor(this.now() / 1000);
    const jti = this.nextJti();
    const claims: Record<string, unknown> = { cnf: { 'x5t#S256': thumbprint } };
    if (att !== undefined) claims.att = att;
    claims.iss = this.opts.issuer;
    claims.sub = agentId;
    claims.aud = this.opts.audience;
    claims.iat = iat;
    claims.exp = iat + this.opts.ttlS;
    claims.jti = jti;
    const token = signEdDsaCompact(this.headerB64, JSON.stringify(claims), this.signer.privateKey);
    return { token, jti, expiresIn: this.opts.ttlS };
  }

  /** 128 fresh random bits, base64url. */
  private nextJti(): string {
    return this.random.base64url(JTI_BYTES);
  }

  /**
   * Verifies a token (cached until its `exp`, since a token is immutable); throws
   * `token_invalid` or `token_expired`. The certificate binding is the caller's check.
   */
  async verify(token: string): Promise<VerifiedToken> {
    return this.verifySync(token);
  }

  /** {@link verify} without the promise (node:crypto verifies synchronously). */
  verifySync(token: string): VerifiedToken {
    return this.cached(token) ?? this.verifyAndRemember(token);
  }

  /**
   * The cached verification of `token`, synchronously: undefined when not cached (then call
   * {@link verify}); throws `token_expired` when it was cached and has expired since.
   */
  cached(token: string): VerifiedToken | undefined {
    const hit = this.cache.get(token);
    if (!hit) return undefined;
    // Same boundary as jose: expired once exp <= now - tolerance.
    if (hit.exp > this.now() / 1000 - this.opts.skewS) return hit;
    this.cache.delete(token);
    throw new GateError('token_expired', { detail: 'token past exp' });
  }

  private verifyAndRemember(token: string): VerifiedToken {
    const verified = this.verifyUncached(token, this.now() / 1000);
    if (this.cache.size >= this.cacheMax) {
      // Map iteration is insertion order: drop the oldest entry.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(token, verified);
    return verified;
  }

  /**
   * Section 5's checks with the verdicts jose's `jwtVerify` gave (same typ normalization, crit
   * handling, claim presence and number rules, `now` floored to whole seconds), except that
   * `token_expired` is answered only when every other check passes.
   */
  private verifyUncached(token: string, nowS: number): VerifiedToken {
    if (token.length > 8192) throw invalid('token too long');
    const jws = parseCompactJws(token);
    if (!jws) throw invalid('not a canonical compact JWS');
    const header = parseJsonObjectStrict(jws.header);
    if (!header) throw invalid('token header does not decode');
    const key = typeof header.kid === 'string' ? this.byKid.get(header.kid) : undefined;
    if (!key) throw invalid('unknown kid');
    if (!critAcceptable(header)) throw invalid('crit header not understood');
    if (header.alg !== 'EdDSA') throw invalid('alg not allowed');
    if (!verifyJwsSignature('EdDSA', key.publicKey, jws.signingInput, jws.signature)) throw invalid('signature verification failed');
    const payload = parseJsonObjectStrict(jws.payload);
    if (!payload) throw invalid('JWT Claims Set must be a top-level JSON object');
    if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== 'application/at+jwt') throw invalid('unexpected "typ" JWT header value');
    for (const claim of REQUIRED_CLAIMS) if (!Object.hasOwn(payload, claim)) throw invalid(`missing required "${claim}" claim`);
    if (payload.iss !== this.opts.issuer) throw invalid('unexpected "iss" claim value');
    const aud = payload.aud;
    if (!(typeof aud === 'string' ? aud === this.opts.audience : Array.isArray(aud) && aud.includes(this.opts.audience))) throw invalid('unexpected "aud" claim value');
    const { iat, nbf, exp } = payload;
    if (typeof iat !== 'number') throw invalid('"iat" claim must be a number');
    const wholeNow = Math.floor(nowS);
    const skew = this.opts.skewS;
    if (nbf !== undefined && (typeof nbf !== 'number' || nbf > wholeNow + skew)) throw invalid('"nbf" claim timestamp check failed');
    if (typeof exp !== 'number') throw invalid('"exp" claim must be a number');
    const cnf = payload.cnf as Record<string, unknown> | undefined;
    const thumbprint = cnf?.['x5t#S256'];
    if (typeof thumbprint !== 'string') throw invalid('no cnf.x5t#S256');
    if (iat > nowS + skew) throw invalid('iat in the future');
    if (exp <= wholeNow - skew) throw new GateError('token_expired', { detail: 'token past exp' });
    return {
      sub: payload.sub as string,
      jti: payload.jti as string,
      exp,
      iat,
      thumbprint,
      att: typeof payload.att === 'number' ? payload.att : undefined,
    };
  }
}

const JTI_BYTES = 16;

const REQUIRED_CLAIMS = ['iss', 'aud', 'jti', 'sub', 'iat', 'exp'] as const;

function invalid(detail: string): GateError {
  return new GateError('token_invalid', { detail });
}

/** jose's `typ` comparison: case-insensitive, `application/` implied when there is no slash. */
function normalizeTyp(typ: string): string {
  const lower = typ.toLowerCase();
  return typ.includes('/') ? lower : `application/${lower}`;
}

/**
 * jose's crit rule for a JWT: the only extension it understands is `b64`, which must then be
 * present and `true` (an unencoded payload is refused for JWTs). The gate never sets crit.
 */
function critAcceptable(header: Record<string, unknown>): boolean {
  const crit = header.crit;
  if (crit === undefined) return true;
  if (!Array.isArray(crit) || crit.length === 0) return false;
  if (!crit.every((p) => p === 'b64')) return false;
  return header.b64 === true;
}
