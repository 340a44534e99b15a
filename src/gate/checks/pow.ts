/** Step 9: the proof-of-work, when the challenge demanded one (else 403 `pow_invalid`). */
import { GateError } from '../../errors.js';
import { checkPow } from '../../lib/pow.js';
import type { CheckFactory } from '../deps.js';

export const pow: CheckFactory = () => (request) => {
  const { record, work } = request.exchange!;
  const rec = record!;
  if (rec.powDifficulty > 0 && (work === undefined || !checkPow(rec.nonce, rec.powDifficulty, work))) {
    throw new GateError('pow_invalid', { detail: `difficulty ${rec.powDifficulty} not met` });
  }
};
