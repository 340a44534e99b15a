/**
 * Access tokens (PROTOCOL.md section 4 response, section 5 checks): EdDSA JWTs bound to the
 * agent certificate with `cnf.x5t#S256` (RFC 8705 section 3.1).
 * @module
 */
import { randomBytes } from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type JWK } from 'jose';
import { GateError } from '../errors.js';
import { isCanonicalCompactJws } from '../lib/b64url.js';
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
  private readonly byKid: Map<string, SigningKey>;
  private readonly cache = new Map<string, VerifiedToken>();
  private readonly cacheMax: number;
  private readonly now: () => number;

  constructor(private readonly opts: TokenServiceOptions) {
    const first = opts.keys.keys[0];
    if (!first?.privateKey) throw new TypeError('the first signing key must be private');
    this.signer = first as SignerKey;
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
    const iat = Math.floor(this.now() / 1000);
    const jti = randomBytes(16).toString('base64url');
    const claims: Record<string, unknown> = { cnf: { 'x5t#S256': thumbprint } };
    if (att !== undefined) claims.att = att;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: this.signer.kid })
      .setIssuer(this.opts.issuer)
      .setSubject(agentId)
      .setAudience(this.opts.audience)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.opts.ttlS)
      .setJti(jti)
      .sign(this.signer.privateKey);
    return { token, jti, expiresIn: this.opts.ttlS };
  }

  /**
   * Verifies a token (cached until its `exp`, since a token is immutable); throws
   * `token_invalid` or `token_expired`. The certificate binding is the caller's check.
   */
  async verify(token: string): Promise<VerifiedToken> {
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

  private async verifyAndRemember(token: string): Promise<VerifiedToken> {
    const verified = await this.verifyUncached(token, this.now() / 1000);
    if (this.cache.size >= this.cacheMax) {
      // Map iteration is insertion order: drop the oldest entry.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(token, verified);
    return verified;
  }

  private async verifyUncached(token: string, nowS: number): Promise<VerifiedToken> {
    if (token.length > 8192) throw new GateError('token_invalid', { detail: 'token too long' });
    if (!isCanonicalCompactJws(token)) throw new GateError('token_invalid', { detail: 'not a canonical compact JWS' });
    let kid: string | undefined;
    try {
      const h = decodeProtectedHeader(token);
      kid = typeof h.kid === 'string' ? h.kid : undefined;
    } catch (err) {
      throw new GateError('token_invalid', { detail: 'token header does not decode', cause: err });
    }
    const key = kid === undefined ? undefined : this.byKid.get(kid);
    if (!key) throw new GateError('token_invalid', { detail: 'unknown kid' });
    try {
      const { payload } = await jwtVerify(token, key.publicKey, {
        algorithms: ['EdDSA'],
        typ: 'at+jwt',
        issuer: this.opts.issuer,
        audience: this.opts.audience,
        clockTolerance: this.opts.skewS,
        currentDate: new Date(nowS * 1000),
        requiredClaims: ['exp', 'iat', 'sub', 'jti'],
      });
      const cnf = payload.cnf as Record<string, unknown> | undefined;
      const thumbprint = cnf?.['x5t#S256'];
      if (typeof thumbprint !== 'string') throw new GateError('token_invalid', { detail: 'no cnf.x5t#S256' });
      if (typeof payload.iat !== 'number' || payload.iat > nowS + this.opts.skewS) throw new GateError('token_invalid', { detail: 'iat in the future' });
      return {
        sub: payload.sub as string,
        jti: payload.jti as string,
        exp: payload.exp as number,
        iat: payload.iat,
        thumbprint,
        att: typeof payload.att === 'number' ? payload.att : undefined,
      };
    } catch (err) {
      if (err instanceof GateError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new GateError('token_expired', { detail: 'token past exp', cause: err });
      throw new GateError('token_invalid', { detail: (err as Error).message, cause: err });
    }
  }
}
