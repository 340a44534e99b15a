/** Step 4 on `P/v1/challenge`: the client address's limit; its load drives adaptive proof-of-work. */
import type { LimitRowFactory } from '../deps.js';

export const limitChallengeAddress: LimitRowFactory = ({ limits }) =>
  limits && {
    counter: (request) => ({ limit: 'challenge_ip', key: request.clientAddress }),
    after: (request, share) => {
      request.ipLoad = share;
    },
  };
