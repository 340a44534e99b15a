/**
 * The contract's allow-list of agent key types and their one proof algorithm (PROTOCOL.md
 * section 2): Ed25519 → EdDSA, P-256 → ES256, P-384 → ES384, RSA 2048–4096 → PS256.
 * Shared by the gate (which refuses other certificates) and the agent SDK (which refuses
 * other keys). Pure.
 * @module
 */
import type { KeyObject } from 'node:crypto';

/** A proof signature algorithm of the contract. */
export type ProofAlg = 'EdDSA' | 'ES256' | 'ES384' | 'PS256';

/** RSA modulus bounds of the allow-list. */
export const RSA_BITS = { min: 2048, max: 4096 } as const;

/** The proof algorithm for `key`, or the reason it is not on the allow-list. */
export function proofAlgOf(key: KeyObject): { alg: ProofAlg } | { refused: string } {
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      return { alg: 'EdDSA' };
    case 'ec':
      if (d.namedCurve === 'prime256v1') return { alg: 'ES256' };
      if (d.namedCurve === 'secp384r1') return { alg: 'ES384' };
      return { refused: `EC curve ${d.namedCurve ?? 'unknown'} not allowed (use P-256 or P-384)` };
    case 'rsa': {
      const bits = d.modulusLength ?? 0;
      if (bits >= RSA_BITS.min && bits <= RSA_BITS.max) return { alg: 'PS256' };
      return { refused: `RSA ${bits}-bit key not allowed (use ${RSA_BITS.min}..${RSA_BITS.max})` };
    }
    default:
      return { refused: `key type ${key.asymmetricKeyType ?? 'unknown'} not allowed (use Ed25519, ECDSA P-256/P-384 or RSA ${RSA_BITS.min}..${RSA_BITS.max})` };
  }
}
