/** Step 4 on `P/v1/token`: the certificate's token limit. */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const limitToken: CheckFactory = ({ limits }) => limits && ((request) => limits.tokenIdentity(agentOf(request).thumbprint));
