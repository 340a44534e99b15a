/** Step 9: the same certificate as at issue (else 403 `challenge_binding_mismatch`). */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const challengeBinding: CheckFactory = () => (request) => {
  if (request.exchange!.record!.thumbprint !== agentOf(request).thumbprint) throw new GateError('challenge_binding_mismatch');
};
