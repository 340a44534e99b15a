/**
 * The proof-of-work rule of PROTOCOL.md section 3: SHA-256(nonce + "." + work) has N leading
 * zero bits, and `work` is at most 64 characters. Shared by the gate (one hash to check) and
 * the agent SDK (which searches). Pure.
 * @module
 */
import { createHash } from 'node:crypto';

/** Longest `work` value the gate accepts. */
export const MAX_WORK_LENGTH = 64;

/** True when `digest` starts with at least `bits` zero bits. */
export function hasLeadingZeroBits(digest: Uint8Array, bits: number): boolean {
  const full = Math.floor(bits / 8);
  if (digest.length * 8 < bits) return false;
  for (let i = 0; i < full; i++) {
    if (digest[i] !== 0) return false;
  }
  const rest = bits % 8;
  if (rest === 0) return true;
  return ((digest[full] ?? 0xff) >> (8 - rest)) === 0;
}

/** True when `work` solves the challenge `nonce` at `difficulty`. */
export function checkPow(nonce: string, difficulty: number, work: string): boolean {
  if (work.length > MAX_WORK_LENGTH) return false;
  return hasLeadingZeroBits(createHash('sha256').update(`${nonce}.${work}`, 'utf8').digest(), difficulty);
}
