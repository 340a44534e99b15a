/**
 * The challenge-response capability: its constants and proof (JWS) verification. The
 * endpoints are the gate's (src/gate/routes/).
 * @module
 */
export { CHALLENGE_GRACE_MS, PROOF_ALGS } from './constants.js';
export { verifyProof, PROOF_TYP, type ProofExpectation } from './proof.js';
