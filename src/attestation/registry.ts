/**
 * Attestation (PROTOCOL.md section 8): trusted issuers from `GATE_ATTESTATION_REGISTRY`, each
 * granting an integer level 0-4. Verifiers are pluggable by `kind`; this build ships `jwt`
 * (a signed statement from the issuer). TPM quotes or SGX/TDX reports would be further kinds
 * implementing {@link AttestationVerifier} (see docs/design/attestation.md).
 * @module
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JSONWebKeySet } from 'jose';
import { z } from 'zod';
import { GateError } from '../errors.js';

/** What an attestation must be bound to. */
export interface AttestationContext {
  /** The challenge nonce. */
  nonce: string;
  /** The agent certificate thumbprint (`x5t#S256`). */
  thumbprint: string;
  skewS: number;
  nowMs: number;
}

/** One kind of attestation evidence. */
export interface AttestationVerifier {
  /** Registry `kind` this verifier handles. */
  readonly kind: string;
  /** Verifies `evidence`; resolves to the level granted, or throws `attestation_invalid`. */
  verify(evidence: string, ctx: AttestationContext): Promise<number>;
}

const issuerSchema = z.object({
  iss: z.string().min(1).max(512),
  kind: z.literal('jwt').default('jwt'),
  level: z.number().int().min(0).max(4),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1).max(20) }),
  /** Signature algorithms accepted from this issuer. */
  algs: z.array(z.enum(['EdDSA', 'ES256', 'ES384', 'PS256', 'RS256'])).min(1).default(['EdDSA', 'ES256', 'ES384', 'PS256']),
});
const registrySchema = z.object({ issuers: z.array(issuerSchema).min(1).max(100) });

/** Attestation JWTs signed by registered issuers. */
class JwtAttestationVerifier implements AttestationVerifier {
  readonly kind = 'jwt';
  private readonly issuers = new Map<string, { level: number; algs: string[]; keys: ReturnType<typeof createLocalJWKSet> }>();

  constructor(entries: z.output<typeof issuerSchema>[]) {
    for (const e of entries) {
      if (this.issuers.has(e.iss)) throw new TypeError(`issuer ${e.iss} listed twice`);
      this.issuers.set(e.iss, { level: e.level, algs: e.algs, keys: createLocalJWKSet(e.jwks as JSONWebKeySet) });
    }
  }

  async verify(evidence: string, ctx: AttestationContext): Promise<number> {
    if (evidence.length > 8192) throw invalid('attestation too long');
    let iss: unknown;
    try {
      iss = decodeJwt(evidence).iss;
    } catch (err) {
      throw invalid('attestation is not a JWT', err);
    }
    const issuer = typeof iss === 'string' ? this.issuers.get(iss) : undefined;
    if (!issuer) throw invalid('attestation issuer is not registered');
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(evidence, issuer.keys, {
        algorithms: issuer.algs,
        issuer: iss as string,
        clockTolerance: ctx.skewS,
        currentDate: new Date(ctx.nowMs),
        requiredClaims: ['exp', 'nonce'],
      }));
    } catch (err) {
      const why = err instanceof joseErrors.JWTExpired ? 'attestation expired' : 'attestation signature or claims invalid';
      throw invalid(why, err);
    }
    if (payload.nonce !== ctx.nonce) throw invalid('attestation nonce is not the challenge nonce');
    const cnf = payload.cnf as Record<string, unknown> | undefined;
    if (cnf?.['x5t#S256'] !== ctx.thumbprint) throw invalid('attestation is bound to another certificate');
    return issuer.level;
  }
}

function invalid(detail: string, cause?: unknown): GateError {
  return new GateError('attestation_invalid', { detail, cause });
}

/** The configured verifiers, by kind. */
export class AttestationRegistry {
  private constructor(private readonly verifiers: Map<string, AttestationVerifier>) {}

  /** Loads and validates the registry file; throws TypeError naming the problem. */
  static fromFile(path: string): AttestationRegistry {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new TypeError(`cannot read ${path} as JSON: ${(err as Error).message}`);
    }
    return AttestationRegistry.fromJson(json);
  }

  /** Validates a parsed registry document. */
  static fromJson(json: unknown): AttestationRegistry {
    const parsed = registrySchema.safeParse(json);
    if (!parsed.success) throw new TypeError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    const jwt = parsed.data.issuers.filter((i) => i.kind === 'jwt');
    let verifier: JwtAttestationVerifier;
    try {
      verifier = new JwtAttestationVerifier(jwt);
    } catch (err) {
      throw new TypeError((err as Error).message);
    }
    return new AttestationRegistry(new Map([['jwt', verifier]]));
  }

  /** The level `evidence` earns, or `attestation_invalid`. */
  async verify(evidence: string, ctx: AttestationContext): Promise<number> {
    // Only one kind today; evidence of other kinds would carry a type prefix to dispatch on.
    return this.verifiers.get('jwt')!.verify(evidence, ctx);
  }
}

/**
 * Step 11 of section 4: verifies a presented attestation and enforces the required level.
 * Resolves to the level for the token's `att` claim, or undefined when none was presented.
 */
export async function checkAttestation(
  registry: AttestationRegistry | undefined,
  required: number | undefined,
  evidence: string | undefined,
  ctx: AttestationContext,
): Promise<number | undefined> {
  let level: number | undefined;
  if (evidence !== undefined) {
    if (!registry) throw invalid('no attestation issuers are configured');
    level = await registry.verify(evidence, ctx);
  }
  if (required !== undefined && (level === undefined || level < required)) {
    throw new GateError('attestation_required', { detail: level === undefined ? `level ${required} required, none presented` : `level ${required} required, ${level} presented` });
  }
  return level;
}
