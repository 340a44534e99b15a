/**
 * Step 4 on `P/v1/challenge`: the certificate's own limit, before the address limit, so a
 * flooding certificate cannot spend the budget that other agents behind its address share.
 */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const limitChallengeIdentity: CheckFactory = ({ limits }) => limits && ((request) => limits.challengeIdentity(agentOf(request).thumbprint));
