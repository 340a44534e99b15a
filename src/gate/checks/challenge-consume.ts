/**
 * Step 8 on `P/v1/token`: the atomic consume. One attempt per challenge, whatever follows:
 * unknown is 404, a tombstone 409 `challenge_replayed`.
 */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';
import { CHALLENGE_GRACE_MS } from '../../challenge/index.js';

export const challengeConsume: CheckFactory = ({ store, metrics, config }) => async (request) => {
  const exchange = request.exchange!;
  const consumed = await store.consumeChallenge(exchange.challengeId, config.challengeTtlMs + CHALLENGE_GRACE_MS);
  if (consumed.status === 'unknown') {
    metrics.proofs.inc({ result: 'unknown' });
    throw new GateError('challenge_unknown');
  }
  if (consumed.status === 'replayed') {
    metrics.proofs.inc({ result: 'replayed' });
    metrics.replaysDetected.inc({ kind: 'challenge' });
    throw new GateError('challenge_replayed');
  }
  exchange.record = consumed.record;
};
