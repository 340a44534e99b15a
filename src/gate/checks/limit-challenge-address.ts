/** Step 4 on `P/v1/challenge`: the client address's limit; its load drives adaptive proof-of-work. */
import type { CheckFactory } from '../deps.js';

export const limitChallengeAddress: CheckFactory = ({ limits }) =>
  limits &&
  ((request) =>
    limits.challengeAddress(request.clientAddress).then((load) => {
      request.ipLoad = load;
    }));
