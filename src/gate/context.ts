/**
 * The context every check of the decision path reads and writes: the fastify request itself,
 * decorated with the gate's fields, so that a check costs no allocation of its own.
 * @module
 */
import type { FastifyRequest } from 'fastify';
import type { AgentIdentity } from '../identity/index.js';
import type { ChallengeRecord } from '../store/index.js';
import type { VerifiedToken } from '../tokens/index.js';

/**
 * One check of the decision path: passes by returning (undefined, or a promise that resolves),
 * refuses by throwing (or rejecting with) a GateError. Synchronous whenever it can answer from
 * memory; a promise only when it needs I/O.
 */
export type Check = (request: FastifyRequest) => void | Promise<void>;

/** The `P/v1/token` body and what the checks after it learn (steps 5-11 of section 4). */
export interface TokenExchange {
  challengeId: string;
  proof: string;
  work?: string;
  attestation?: string;
  /** The consumed challenge (step 8). */
  record?: ChallengeRecord;
  /** The attestation level granted (step 11). */
  att?: number;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The `route` label of request_duration_seconds (section 10). */
    route?: 'challenge' | 'token' | 'proxy' | 'authorize' | 'jwks' | 'health' | 'other';
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
    /** The decoded request path (edge steps), or null when it cannot be decoded. */
    gatePath: string | null;
    /** The token exchange of `P/v1/token`, once its body has been read. */
    exchange: TokenExchange | null;
  }
}

/** The checked agent (set by the identity row, which every table has before any row using it). */
export function agentOf(request: FastifyRequest): AgentIdentity {
  return request.agent!;
}
