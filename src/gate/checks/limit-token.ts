/** Step 4 on `P/v1/token`: the certificate's token limit. */
import type { LimitRowFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const limitToken: LimitRowFactory = ({ limits }) => limits && { counter: (request) => ({ limit: 'token_identity', key: agentOf(request).thumbprint }) };
