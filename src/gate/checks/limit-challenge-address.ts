/**
 * Step 4 on `P/v1/challenge`: the client address's limit (an IPv6 client counts per /64, as the
 * connection cap does: one host can use every address of its /64); its load drives adaptive
 * proof-of-work.
 */
import { addressKey } from '../../lib/address.js';
import type { LimitRowFactory } from '../deps.js';

export const limitChallengeAddress: LimitRowFactory = ({ limits }) =>
  limits && {
    counter: (request) => ({ limit: 'challenge_ip', key: addressKey(request.clientAddress) }),
    after: (request, share) => {
      request.ipLoad = share;
    },
  };
