import type { AgentIdentity } from '../identity/index.js';
import type { VerifiedToken } from '../tokens/index.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The `route` label of request_duration_seconds (section 10). */
    route?: 'challenge' | 'token' | 'proxy' | 'jwks' | 'health' | 'other';
  }

  interface FastifyRequest {
    /** The verified agent identity, once the identity step has run. */
    agent: AgentIdentity | null;
    /** The verified access token on gated requests. */
    accessToken: VerifiedToken | null;
    /** Unix ms when the request headers were received (deadline of section 3). */
    receivedAt: number;
    /** The client's address: the TCP peer (direct) or the signed x-gate-fwd-addr (forwarded). */
    clientAddress: string;
    /** Fraction of the per-address challenge limit used, for adaptive proof-of-work. */
    ipLoad: number;
    /** The contract code this request was refused with, for the access log. */
    refusedWith: string | null;
  }
}
