/** Step 3, forwarded and authorizer: the signed headers of section 6, in that section's order. */
import type { FastifyRequest } from 'fastify';
import type { AgentIdentity } from '../../identity/index.js';
import type { CheckFactory } from '../deps.js';

export const identityForwarded: CheckFactory = ({ identity }) => {
  const verifier = identity.forwarded;
  if (!verifier) return undefined;
  return (request: FastifyRequest) =>
    verifier.verify(request).then((agent: AgentIdentity) => {
      request.agent = agent;
    });
};
