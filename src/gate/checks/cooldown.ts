/** Step 4 (section 12): 429 while the certificate cools down after repeated failed proofs. */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const cooldown: CheckFactory = ({ limits }) => limits && ((request) => limits.checkCooldown(agentOf(request).thumbprint));
