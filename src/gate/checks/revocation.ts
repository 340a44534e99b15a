/** Step 3 (section 7): not revoked; synchronous on a cache hit, a promise only when it must ask. */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const revocation: CheckFactory = ({ revocation: checker }) => (checker.enabled ? (request) => checker.check(agentOf(request)) : undefined);
