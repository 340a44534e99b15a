/** Step 3, direct and embedded: the TLS peer's certificate (OpenSSL's verdict, then the gate's caps). */
import type { CheckFactory } from '../deps.js';

export const identityDirect: CheckFactory = ({ identity }) => {
  const resolver = identity.direct;
  if (!resolver) return undefined;
  // Cached per certificate: a keep-alive agent is a lookup, synchronous.
  return (request) => {
    request.agent = resolver.resolve(request.raw.socket);
  };
};
