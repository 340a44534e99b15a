/**
 * The jose implementations the node:crypto hot path replaced (proof verification of
 * src/challenge/proof.ts and access-token signing/verification of src/tokens/access-token.ts,
 * as they were before), kept verbatim as the oracle of the compatibility tests and the
 * baseline of load/crypto-bench.ts.
 */
import { timingSafeEqual, type KeyObject } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { GateError } from '../../src/errors.js';
import type { AgentIdentity } from '../../src/identity/index.js';
import { isCanonicalCompactJws } from '../../src/lib/b64url.js';
import type { VerifiedToken } from '../../src/tokens/index.js';
import type { SigningKey } from '../../src/tokens/keys.js';

// These constants and the two helpers below repeat src/challenge/proof.ts on purpose: the
// oracle is independent of the code it checks, so a change there (a typ, a bound, a comparison)
// cannot silently change what the compatibility tests expect.
const PROOF_TYP = 'agent-gate-proof+jwt';
const MAX_PROOF_LENGTH = 12 * 1024;

function invalid(detail: string, cause?: unknown): GateError {
  return new GateError('proof_invalid', { detail, cause });
}

function sameString(a: unknown, b: string): boolean {
  if (typeof a !== 'string') return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The former verifyProof (jose compactVerify). */
export async function joseVerifyProof(
  proof: string,
  agent: Pick<AgentIdentity, 'publicKey' | 'alg'>,
  want: { cid: string; nonce: string; aud: string; skewS: number; nowMs: number },
): Promise<void> {
  if (proof.length > MAX_PROOF_LENGTH || !isCanonicalCompactJws(proof)) throw invalid('not a canonical compact JWS');
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(proof) as Record<string, unknown>;
  } catch (err) {
    throw invalid('header does not decode', err);
  }
  if ('crit' in header) throw invalid('crit header refused');
  if (header.alg !== agent.alg) throw invalid(`alg ${String(header.alg)} not allowed for this key (${agent.alg})`);
  if (header.typ !== PROOF_TYP) throw invalid('wrong typ');
  let payloadBytes: Uint8Array;
  try {
    ({ payload: payloadBytes } = await compactVerify(proof, agent.publicKey, { algorithms: [agent.alg] }));
  } catch (err) {
    throw invalid('signature does not verify', err);
  }
  let payload: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(Buffer.from(payloadBytes).toString('utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    payload = v as Record<string, unknown>;
  } catch (err) {
    throw invalid('payload is not a JSON object', err);
  }
  if (!sameString(payload.cid, want.cid)) throw invalid('cid mismatch');
  if (!sameString(payload.nonce, want.nonce)) throw invalid('nonce mismatch');
  if (!sameString(payload.aud, want.aud)) throw invalid('aud mismatch');
  const iat = payload.iat;
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('iat missing');
  if (Math.abs(want.nowMs / 1000 - iat) > want.skewS) throw invalid('iat outside the allowed skew');
}

/** Settings shared by the former token signer and verifier. */
export interface JoseTokenOptions {
  issuer: string;
  audience: string;
  ttlS: number;
  skewS: number;
}

/** The former TokenService.issue (jose SignJWT), with iat and jti given. */
export function joseIssue(o: JoseTokenOptions, signer: { kid: string; privateKey: KeyObject }, agentId: string, thumbprint: string, iat: number, jti: string, att?: number): Promise<string> {
  const claims: Record<string, unknown> = { cnf: { 'x5t#S256': thumbprint } };
  if (att !== undefined) claims.att = att;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: signer.kid })
    .setIssuer(o.issuer)
    .setSubject(agentId)
    .setAudience(o.audience)
    .setIssuedAt(iat)
    .setExpirationTime(iat + o.ttlS)
    .setJti(jti)
    .sign(signer.privateKey);
}

/** The former uncached TokenService verification (jose jwtVerify). */
export async function joseVerifyToken(o: JoseTokenOptions, byKid: Map<string, SigningKey>, token: string, nowS: number): Promise<VerifiedToken> {
  if (token.length > 8192) throw new GateError('token_invalid', { detail: 'token too long' });
  if (!isCanonicalCompactJws(token)) throw new GateError('token_invalid', { detail: 'not a canonical compact JWS' });
  let kid: string | undefined;
  try {
    const h = decodeProtectedHeader(token);
    kid = typeof h.kid === 'string' ? h.kid : undefined;
  } catch (err) {
    throw new GateError('token_invalid', { detail: 'token header does not decode', cause: err });
  }
  const key = kid === undefined ? undefined : byKid.get(kid);
  if (!key) throw new GateError('token_invalid', { detail: 'unknown kid' });
  try {
    const { payload } = await jwtVerify(token, key.publicKey, {
      algorithms: ['EdDSA'],
      typ: 'at+jwt',
      issuer: o.issuer,
      audience: o.audience,
      clockTolerance: o.skewS,
      currentDate: new Date(nowS * 1000),
      requiredClaims: ['exp', 'iat', 'sub', 'jti'],
    });
    const cnf = payload.cnf as Record<string, unknown> | undefined;
    const thumbprint = cnf?.['x5t#S256'];
    if (typeof thumbprint !== 'string') throw new GateError('token_invalid', { detail: 'no cnf.x5t#S256' });
    if (typeof payload.iat !== 'number' || payload.iat > nowS + o.skewS) throw new GateError('token_invalid', { detail: 'iat in the future' });
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

/** The outcome of a verification as a comparable string: 'ok' or the GateError code. */
export async function outcome(run: () => unknown): Promise<string> {
  try {
    await run();
    return 'ok';
  } catch (err) {
    return err instanceof GateError ? err.code : `throw ${String(err)}`;
  }
}
