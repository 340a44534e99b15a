/**
 * Every decision of the gate, in the contract's order (docs/protocol.md sections 4, 5, 6), as
 * one table per endpoint and mode. A row names a check in checks/ (one small file each); a
 * row the configuration turns off (revocation off, no rate limits) is skipped. Phases:
 * - `edge`: every request on a server the gate owns (steps 1-2), in its onRequest hook;
 * - `headers`: the endpoint's onRequest hook, before any body byte is read or `100 Continue`
 *   is sent (steps 3-4 on P/v1/*; identity, token and limit on gated requests);
 * - `body`: in the handler, reading the body (steps 5-8);
 * - `proof`: in the handler; each refusal here also counts as a failed proof (steps 9-11).
 * Modes differ only in rows: where the certificate comes from (TLS peer, or the signed
 * headers of section 6 and then the signed client address) and whether the edge is the gate's.
 * @module
 */
import type { CheckName } from './checks/index.js';

/** The endpoints: P/v1/challenge, P/v1/token, a gated (proxied) request, P/v1/authorize. */
export type Endpoint = 'challenge' | 'token' | 'proxied' | 'authorize';
/** direct (TLS at the gate), forwarded (nginx in front), embedded (plugin without edge), authorizer (nginx auth_request). */
export type Mode = 'direct' | 'forwarded' | 'embedded' | 'authorizer';
/** One endpoint's ordered rows, by phase. */
export interface Table {
  headers: readonly CheckName[];
  body?: readonly CheckName[];
  proof?: readonly CheckName[];
}
/** One mode: its edge rows and the tables of the endpoints it serves. */
export interface ModeTables {
  edge: readonly CheckName[];
  endpoints: Partial<Record<Endpoint, Table>>;
}

const EDGE = ['shedding', 'draining', 'path_policy'] as const; // steps 1, 2
const ID_TLS = ['identity_direct', 'revocation', 'deny_list'] as const; // step 3
const ID_SIGNED = ['identity_forwarded', 'forwarded_address', 'revocation', 'deny_list'] as const; // step 3 (section 6)
const CHALLENGE_LIMITS = ['cooldown', 'limit_challenge_identity', 'limit_challenge_address'] as const; // step 4
const TOKEN_LIMITS = ['cooldown', 'limit_token'] as const; // step 4
const CHALLENGE_BODY = ['challenge_body'] as const; // steps 5-7
const TOKEN_BODY = ['content_type', 'body_size', 'json_shape', 'challenge_consume'] as const; // steps 5-8
const PROOF = ['on_time', 'challenge_binding', 'pow', 'proof', 'attestation'] as const; // steps 9-11
const GATED = ['bearer', 'token_binding', 'limit_proxy'] as const; // section 5

/** The whole decision path. */
export const PIPELINE: Record<Mode, ModeTables> = {
  direct: {
    edge: EDGE,
    endpoints: {
      challenge: { headers: [...ID_TLS, ...CHALLENGE_LIMITS], body: CHALLENGE_BODY },
      token: { headers: [...ID_TLS, ...TOKEN_LIMITS], body: TOKEN_BODY, proof: PROOF },
      proxied: { headers: [...ID_TLS, ...GATED] },
    },
  },
  forwarded: {
    edge: EDGE,
    endpoints: {
      challenge: { headers: [...ID_SIGNED, ...CHALLENGE_LIMITS], body: CHALLENGE_BODY },
      token: { headers: [...ID_SIGNED, ...TOKEN_LIMITS], body: TOKEN_BODY, proof: PROOF },
      proxied: { headers: [...ID_SIGNED, ...GATED] },
    },
  },
  embedded: {
    edge: [],
    endpoints: {
      challenge: { headers: [...ID_TLS, ...CHALLENGE_LIMITS], body: CHALLENGE_BODY },
      token: { headers: [...ID_TLS, ...TOKEN_LIMITS], body: TOKEN_BODY, proof: PROOF },
      proxied: { headers: [...ID_TLS, ...GATED] },
    },
  },
  authorizer: {
    edge: EDGE,
    endpoints: {
      challenge: { headers: [...ID_SIGNED, ...CHALLENGE_LIMITS], body: CHALLENGE_BODY },
      token: { headers: [...ID_SIGNED, ...TOKEN_LIMITS], body: TOKEN_BODY, proof: PROOF },
      authorize: { headers: [...ID_SIGNED, ...GATED] },
    },
  },
};

/** The mode whose tables a gate runs: its configured mode, `embedded` for the plugin without edge in direct mode. */
export function modeOf(configMode: 'direct' | 'forwarded' | 'authorizer', edge: boolean): Mode {
  return !edge && configMode === 'direct' ? 'embedded' : configMode;
}

/** All rows of `endpoint` in `mode`, in order (edge first): what the order test reads. */
export function rowsOf(mode: Mode, endpoint: Endpoint): CheckName[] {
  const t = PIPELINE[mode].endpoints[endpoint];
  if (!t) return [];
  return [...PIPELINE[mode].edge, ...t.headers, ...(t.body ?? []), ...(t.proof ?? [])];
}
