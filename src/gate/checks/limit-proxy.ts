/** Section 5/12: the gated-request limit, after the token check; batched, no store round trip. */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const limitProxy: CheckFactory = ({ limits }) => limits && ((request) => limits.proxyRequest(agentOf(request).thumbprint));
