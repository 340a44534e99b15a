/**
 * The gate's answers as the SDK reads them: the challenge and token documents of PROTOCOL.md
 * sections 3 and 4, checked field by field (anything else is `unexpected_response`).
 * @module
 */
import { GateClientError } from './client-error.js';
import type { RawResponse } from './response.js';

/** The challenge of PROTOCOL.md section 3, as returned by the gate. */
export interface Challenge {
  challenge_id: string;
  nonce: string;
  aud: string;
  /** Unix milliseconds. */
  issued_at: number;
  /** Unix milliseconds. */
  expires_at: number;
  algs: string[];
  pow: { alg: string; difficulty: number } | null;
}

/** The token response of PROTOCOL.md section 4. */
export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
}

/** Options of {@link GateClient.request}. */
export interface GateRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/** A gate answer the client cannot read. */
export function unexpected(status: number, what: string): GateClientError {
  return new GateClientError('unexpected_response', status, { message: `unexpected_response (${status}): ${what}` });
}

function parseJsonObject(res: RawResponse, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = res.json();
  } catch {
    throw unexpected(res.status, `${what} body is not JSON`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw unexpected(res.status, `${what} body is not a JSON object`);
  }
  return doc as Record<string, unknown>;
}

/** The 201 of `P/v1/challenge`, checked field by field. */
export function parseChallenge(res: RawResponse): Challenge {
  const d = parseJsonObject(res, 'challenge');
  const str = (k: string) => typeof d[k] === 'string' && (d[k] as string).length > 0;
  const num = (k: string) => typeof d[k] === 'number' && Number.isFinite(d[k]);
  if (!str('challenge_id') || !str('nonce') || !str('aud') || !num('issued_at') || !num('expires_at')) {
    throw unexpected(res.status, 'challenge is missing challenge_id, nonce, aud, issued_at or expires_at');
  }
  if (!Array.isArray(d.algs) || !d.algs.every((a) => typeof a === 'string')) {
    throw unexpected(res.status, 'challenge algs is not a list of strings');
  }
  const pow = d.pow;
  if (pow !== null && pow !== undefined) {
    const p = pow as Record<string, unknown>;
    if (typeof pow !== 'object' || typeof p.alg !== 'string' || !Number.isInteger(p.difficulty)) {
      throw unexpected(res.status, 'challenge pow is neither null nor { alg, difficulty }');
    }
  }
  return { ...d, pow: pow ?? null } as unknown as Challenge;
}

/** The 200 of `P/v1/token`, checked field by field. */
export function parseToken(res: RawResponse): TokenResponse {
  const d = parseJsonObject(res, 'token');
  if (typeof d.access_token !== 'string' || d.access_token.length === 0) {
    throw unexpected(res.status, 'token response has no access_token');
  }
  if (typeof d.token_type !== 'string' || d.token_type.toLowerCase() !== 'bearer') {
    throw unexpected(res.status, 'token_type is not Bearer');
  }
  if (typeof d.expires_in !== 'number' || !Number.isFinite(d.expires_in) || d.expires_in <= 0) {
    throw unexpected(res.status, 'expires_in is not a positive number');
  }
  return d as unknown as TokenResponse;
}
