/**
 * The challenge-response: issuing challenges and exchanging proofs for tokens.
 * @module
 */
export { challengeRoutes, CHALLENGE_GRACE_MS, PROOF_ALGS, type ChallengeRoutesOptions } from './routes.js';
export { verifyProof, PROOF_TYP, type ProofExpectation } from './proof.js';
