/**
 * Step 4 on `P/v1/challenge`: the certificate's own limit, before the address limit, so a
 * flooding certificate cannot spend the budget that other agents behind its address share.
 */
import type { LimitRowFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const limitChallengeIdentity: LimitRowFactory = ({ limits }) => limits && { counter: (request) => ({ limit: 'challenge_identity', key: agentOf(request).thumbprint }) };
