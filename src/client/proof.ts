/**
 * The agent's proof of possession (PROTOCOL.md section 4): a compact JWS over
 * `{ cid, nonce, aud, iat }` with header `{ alg, typ: "agent-gate-proof+jwt" }`, signed with
 * the private key of the agent's client certificate. The header never names the key
 * (`kid`, `jwk`, `x5c`...): the gate always takes it from the certificate.
 * @module
 */
import type { KeyObject } from 'node:crypto';
import { CompactSign } from 'jose';
import { proofAlgOf, type ProofAlg } from '../lib/proof-alg.js';

/** The `typ` header of every proof. */
export const PROOF_TYP = 'agent-gate-proof+jwt';

/** A proof signature algorithm of the contract. */
export type { ProofAlg };

/** All proof algorithms, in the order of the contract. */
export const PROOF_ALGS: readonly ProofAlg[] = ['EdDSA', 'ES256', 'ES384', 'PS256'];


/**
 * The proof algorithm for an agent key (private or public): Ed25519 → EdDSA, P-256 → ES256,
 * P-384 → ES384, RSA of 2048..4096 bits → PS256. Throws TypeError for every other key
 * (secret keys, other curves, RSA-PSS-only keys, RSA outside the size range).
 */
export function proofAlgFor(key: KeyObject): ProofAlg {
  if (key.type !== 'private' && key.type !== 'public') {
    throw new TypeError('agent key must be an asymmetric key');
  }
  const r = proofAlgOf(key);
  if ('refused' in r) throw new TypeError(`unsupported agent key: ${r.refused}`);
  return r.alg;
}

/** The challenge fields a proof binds. */
export interface ProofInput {
  challenge_id: string;
  nonce: string;
  aud: string;
}

/** Overrides merged over the default header and payload; a field set to `undefined` is removed. */
export interface ProofOverrides {
  header?: Record<string, unknown>;
  payload?: Record<string, unknown>;
}

function merge(base: Record<string, unknown>, over: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base, ...over };
  for (const [k, v] of Object.entries(out)) {
    if (v === undefined) delete out[k];
  }
  return out;
}

/**
 * Signs a proof for challenge `ch` with `key` (the certificate's private key) and returns
 * the compact JWS. `overrides` exist for protocol tests (wrong `aud`, stale `iat`, extra
 * headers...); an overridden `alg` must still be one jose can sign with this key.
 */
export async function createProof(
  key: KeyObject,
  alg: ProofAlg,
  ch: ProofInput,
  overrides: ProofOverrides = {},
  now: number = Date.now(),
): Promise<string> {
  const header = merge({ alg, typ: PROOF_TYP }, overrides.header);
  const payload = merge(
    { cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(now / 1000) },
    overrides.payload,
  );
  // jose refuses unknown `crit` extensions unless told they are understood; a test that sets
  // `crit` on purpose wants the header sent as given.
  const crit = Array.isArray(header.crit)
    ? Object.fromEntries(header.crit.filter((n): n is string => typeof n === 'string').map((n) => [n, true]))
    : undefined;
  const jws = new CompactSign(new TextEncoder().encode(JSON.stringify(payload)));
  // The merged header is passed through as is; jose checks `alg` itself.
  jws.setProtectedHeader(header as Parameters<CompactSign['setProtectedHeader']>[0]);
  return jws.sign(key, crit ? { crit } : undefined);
}
