/**
 * Proof-of-work solver for challenges that carry `pow: { alg: "sha256", difficulty: N }`
 * (PROTOCOL.md section 3): find `work` such that SHA-256(nonce + "." + work) has N leading
 * zero bits. `work` is a base36 counter, so it stays far below the 64-character limit.
 * @module
 */
import { createHash } from 'node:crypto';
import { hasLeadingZeroBits } from '../lib/pow.js';

/** The largest difficulty the solver accepts (the contract caps the gate at 24). */
export const MAX_POW_DIFFICULTY = 32;

export { MAX_WORK_LENGTH, hasLeadingZeroBits, checkPow } from '../lib/pow.js';

/** Iterations between two yields to the event loop in {@link solvePowAsync}. */
const YIELD_EVERY = 20_000;

function sha256(input: string): Buffer {
  return createHash('sha256').update(input, 'utf8').digest();
}

function validate(nonce: string, difficulty: number, maxIterations: number | undefined): number {
  if (typeof nonce !== 'string') throw new TypeError('nonce must be a string');
  if (!Number.isInteger(difficulty) || difficulty < 0 || difficulty > MAX_POW_DIFFICULTY) {
    throw new RangeError(`pow difficulty must be an integer in 0..${MAX_POW_DIFFICULTY}`);
  }
  // Default: 2^(d+6) attempts; the chance of no solution within them is e^-64.
  const limit = maxIterations ?? 2 ** (difficulty + 6);
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError('maxIterations must be a positive safe integer');
  }
  return limit;
}

function exhausted(difficulty: number, limit: number): Error {
  return new Error(`no proof-of-work solution at difficulty ${difficulty} within ${limit} iterations`);
}

/**
 * Finds `work` (base36 counter from 0) such that SHA-256(`nonce` + "." + `work`) has
 * `difficulty` leading zero bits. Synchronous: at difficulty N it hashes about 2^N times.
 * Throws RangeError for a difficulty outside 0..32 and Error when `maxIterations`
 * (default 2^(difficulty+6)) runs out.
 */
export function solvePow(nonce: string, difficulty: number, maxIterations?: number): string {
  const limit = validate(nonce, difficulty, maxIterations);
  const prefix = `${nonce}.`;
  for (let i = 0; i < limit; i++) {
    const work = i.toString(36);
    if (hasLeadingZeroBits(sha256(prefix + work), difficulty)) return work;
  }
  throw exhausted(difficulty, limit);
}

/**
 * Same as {@link solvePow}, yielding to the event loop every few thousand hashes so that
 * other requests of the process are not starved while a high difficulty is solved.
 */
export async function solvePowAsync(
  nonce: string,
  difficulty: number,
  maxIterations?: number,
  signal?: AbortSignal,
): Promise<string> {
  const limit = validate(nonce, difficulty, maxIterations);
  const prefix = `${nonce}.`;
  for (let i = 0; i < limit; i++) {
    if (i > 0 && i % YIELD_EVERY === 0) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
    }
    const work = i.toString(36);
    if (hasLeadingZeroBits(sha256(prefix + work), difficulty)) return work;
  }
  throw exhausted(difficulty, limit);
}
