/** Step 9: the proof's request headers arrived at or before `expires_at` (else 408). */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';

export const onTime: CheckFactory = () => (request) => {
  const rec = request.exchange!.record!;
  if (request.receivedAt > rec.expiresAt) throw new GateError('challenge_expired', { detail: `received ${request.receivedAt - rec.expiresAt} ms late` });
};
