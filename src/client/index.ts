/**
 * `agent-gate/client`: the agent-side SDK. Imports nothing of the gate server.
 *
 * ```ts
 * import { GateClient } from 'agent-gate/client';
 * const gate = new GateClient({ baseUrl: 'https://gate:8443', cert, key, ca });
 * const res = await gate.request('/v1/things?q=1');
 * await gate.close();
 * ```
 * @module
 */
export {
  GateClient,
  type Challenge,
  type GateClientOptions,
  type GateRequestInit,
  type TokenResponse,
} from './gate-client.js';
export { GateClientError } from './client-error.js';
export { proofAlgFor, PROOF_ALGS, PROOF_TYP, type ProofAlg, type ProofOverrides } from './proof.js';
export { checkPow, MAX_POW_DIFFICULTY, MAX_WORK_LENGTH, solvePow, solvePowAsync } from './pow.js';
export {
  GATE_MAX_RESPONSE_BYTES,
  REQUEST_MAX_RESPONSE_BYTES,
  ResponseTooLargeError,
  type RawResponse,
} from './response.js';
