/**
 * Refusal carriers of authorizer mode (PROTOCOL.md section 13). nginx's `auth_request` passes
 * only 2xx, 401 and 403 on (anything else becomes nginx's own 500), and drops the answer's
 * body; so the gate answers a refusal as an empty 401 (for a 401) or 403 (for anything else)
 * and carries the real status, the problem+json body and the headers the client must get in
 * `x-agent-gate-*` headers, which nginx's refusal handler (nginx/gate_sign.js) turns back
 * into exactly the answer direct mode sends.
 * @module
 */

/** The carrier headers, lowercase. */
export const CARRIER = {
  status: 'x-agent-gate-status',
  problem: 'x-agent-gate-problem',
  retryAfter: 'x-agent-gate-retry-after',
  rateLimitPolicy: 'x-agent-gate-ratelimit-policy',
  rateLimit: 'x-agent-gate-ratelimit',
} as const;

/** Response headers of a refusal that travel in a carrier, and the carrier's name. */
export const CARRIED_HEADERS: Readonly<Record<string, string>> = {
  'retry-after': CARRIER.retryAfter,
  'ratelimit-policy': CARRIER.rateLimitPolicy,
  ratelimit: CARRIER.rateLimit,
};

/** The answer nginx's auth_request can take: empty, 401 or 403, headers to set. */
export interface CarriedRefusal {
  status: 401 | 403;
  headers: Record<string, string>;
}

/**
 * Encodes the refusal `status` + problem+json `body` + `headers` (lowercase names) as
 * {@link CarriedRefusal}. `WWW-Authenticate` stays itself: nginx copies it from a 401 answer
 * onto the client's answer by itself.
 */
export function encodeRefusal(status: number, body: Buffer, headers: Readonly<Record<string, unknown>>): CarriedRefusal {
  const out: Record<string, string> = {
    [CARRIER.status]: String(status),
    [CARRIER.problem]: body.toString('base64url'),
    'cache-control': 'no-store',
  };
  for (const [name, carrier] of Object.entries(CARRIED_HEADERS)) {
    const v = headers[name];
    if (v !== undefined) out[carrier] = String(v);
  }
  return { status: status === 401 ? 401 : 403, headers: out };
}
