/**
 * `agent-gate/client`: the agent-side SDK. Imports nothing of the gate server (only the
 * contract's error code type, which is erased at runtime).
 *
 * ```ts
 * import { GateClient, GateClientError } from 'agent-gate/client';
 * const gate = new GateClient({ baseUrl: 'https://gate:8443', cert, key, ca, pins: ['sha256/...'] });
 * try {
 *   const res = await gate.request('/v1/things?q=1');
 * } catch (err) {
 *   if (err instanceof GateClientError) console.error(err.code, err.instance);
 * } finally {
 *   await gate.close();
 * }
 * ```
 * See docs/guides/agent-sdk.md.
 * @module
 */
export type { ErrorCode } from '../errors.js';
export {
  GateClient,
  type Challenge,
  type GateClientOptions,
  type GateRequestInit,
  type TokenResponse,
} from './gate-client.js';
export { GateClientError, type ClientErrorCode, type GateClientErrorCode } from './client-error.js';
export { PIN_PREFIX, spkiPin } from './pin.js';
export {
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  DEFAULT_MAX_RETRIES,
  GATE_RETRY_CODES,
  maxJitterMs,
  RETRY_JITTER_MIN_MS,
  RETRY_JITTER_RATIO,
  SAFE_METHODS,
} from './retry.js';
export { proofAlgFor, PROOF_ALGS, PROOF_TYP, type ProofAlg, type ProofOverrides } from './proof.js';
export { checkPow, MAX_POW_DIFFICULTY, MAX_WORK_LENGTH, solvePow, solvePowAsync } from './pow.js';
export {
  GATE_MAX_RESPONSE_BYTES,
  REQUEST_MAX_RESPONSE_BYTES,
  ResponseTooLargeError,
  type RawResponse,
} from './response.js';
