/** Step 10: the proof JWS, verified with the certificate's own key (else 403 `proof_invalid`). */
import { verifyProof } from '../../challenge/proof.js';
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const proof: CheckFactory = ({ metrics, config, now }) => (request) => {
  const agent = agentOf(request);
  const { proof: jws, challengeId, record } = request.exchange!;
  const rec = record!;
  return verifyProof(jws, agent, { cid: challengeId, nonce: rec.nonce, aud: rec.aud, skewS: config.maxSkewS, nowMs: now() }, (s) =>
    metrics.signatureVerification.observe({ alg: agent.alg }, s),
  );
};
