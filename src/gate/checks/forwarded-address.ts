/**
 * Step 3, forwarded and authorizer, once the signature passed: the client's address is the one
 * nginx signed, never the proxy's; per-address limits, X-Forwarded-For and the audit use it.
 */
import type { CheckFactory } from '../deps.js';

export const forwardedAddress: CheckFactory = () => (request) => {
  request.clientAddress = String(request.headers['x-gate-fwd-addr']);
};
