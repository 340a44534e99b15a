/** Step 4 (section 12): 429 while the certificate cools down after repeated failed proofs. */
import type { LimitRowFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const cooldown: LimitRowFactory = ({ limits }) => limits && { counter: (request) => ({ limit: 'cooldown', key: agentOf(request).thumbprint }) };
