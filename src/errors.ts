/**
 * The closed catalog of error codes of the wire contract (PROTOCOL.md section 9) and the
 * one error type that carries them. The catalog decides the HTTP status (the code, or a
 * listed (code, reason) exception); nothing else does.
 * @module
 */
import { randomBytes } from 'node:crypto';

/** Every error code of the contract, with its HTTP status. */
export const ERROR_STATUS = {
  request_malformed: 400,
  client_cert_required: 401,
  token_missing: 401,
  token_invalid: 401,
  token_expired: 401,
  client_cert_invalid: 403,
  client_cert_revoked: 403,
  agent_denied: 403,
  challenge_binding_mismatch: 403,
  proof_invalid: 403,
  pow_invalid: 403,
  attestation_invalid: 403,
  attestation_required: 403,
  token_binding_mismatch: 403,
  // 401 when headers are missing or repeated: see STATUS_EXCEPTIONS.
  forwarded_signature_invalid: 403,
  not_found: 404,
  challenge_unknown: 404,
  method_not_allowed: 405,
  challenge_expired: 408,
  challenge_replayed: 409,
  body_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal_error: 500,
  upstream_unavailable: 502,
  store_unavailable: 503,
  revocation_unavailable: 503,
  overloaded: 503,
  // Authorizer mode: nginx could not get a decision from the gate (section 13).
  gate_unavailable: 503,
  upstream_timeout: 504,
} as const;

/** A stable error code of the contract. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** All codes, for metric label sets and documentation checks. */
export const ERROR_CODES = Object.keys(ERROR_STATUS) as ErrorCode[];

/** Short public titles; the detail of a refusal goes to logs, never to the client. */
export const ERROR_TITLE: Record<ErrorCode, string> = {
  request_malformed: 'Request malformed',
  client_cert_required: 'Client certificate required',
  token_missing: 'Access token missing',
  token_invalid: 'Access token invalid',
  token_expired: 'Access token expired',
  client_cert_invalid: 'Client certificate invalid',
  client_cert_revoked: 'Client certificate revoked',
  agent_denied: 'Agent denied',
  challenge_binding_mismatch: 'Challenge was issued to another certificate',
  proof_invalid: 'Proof invalid',
  pow_invalid: 'Proof of work invalid',
  attestation_invalid: 'Attestation invalid',
  attestation_required: 'Attestation required',
  token_binding_mismatch: 'Token was issued to another certificate',
  forwarded_signature_invalid: 'Forwarded identity signature invalid',
  not_found: 'Not found',
  challenge_unknown: 'Challenge unknown',
  method_not_allowed: 'Method not allowed',
  challenge_expired: 'Challenge expired',
  challenge_replayed: 'Challenge already used',
  body_too_large: 'Request body too large',
  unsupported_media_type: 'Unsupported media type',
  rate_limited: 'Rate limited',
  internal_error: 'Internal error',
  upstream_unavailable: 'Upstream unavailable',
  store_unavailable: 'Store unavailable',
  revocation_unavailable: 'Revocation status unavailable',
  overloaded: 'Overloaded',
  gate_unavailable: 'Gate unavailable',
  upstream_timeout: 'Upstream timeout',
};

/**
 * Machine-readable refinements of a code that logic may branch on (a status exception, a log
 * event); `detail` is free text for logs and is never branched on.
 */
export type GateReason = 'forwarded_headers_missing' | 'failed_proof_cooldown';

/** The catalog's deliberate exceptions: a (code, reason) pair with its own status. */
export const STATUS_EXCEPTIONS: { readonly [C in ErrorCode]?: { readonly [R in GateReason]?: number } } = {
  forwarded_signature_invalid: { forwarded_headers_missing: 401 },
};

/** The status of `code` (with `reason`), from the catalog alone. */
export function statusOf(code: ErrorCode, reason?: GateReason): number {
  return (reason && STATUS_EXCEPTIONS[code]?.[reason]) || ERROR_STATUS[code];
}

/** Options of a {@link GateError}. */
export interface GateErrorOptions {
  /** Internal detail for logs; never sent to the client, never branched on. */
  detail?: string;
  /** A machine-readable refinement (see {@link GateReason}). */
  reason?: GateReason;
  /** The underlying error, kept for logs. */
  cause?: unknown;
  /** Extra response headers (Allow, Retry-After, RateLimit...). */
  headers?: Record<string, string>;
}

/** A refusal with a contract error code. Thrown anywhere, answered in one place. */
export class GateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: string | undefined;
  readonly reason: GateReason | undefined;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, options: GateErrorOptions = {}) {
    super(options.detail ? `${code}: ${options.detail}` : code, { cause: options.cause });
    this.name = 'GateError';
    this.code = code;
    this.status = statusOf(code, options.reason);
    this.detail = options.detail;
    this.reason = options.reason;
    this.headers = options.headers ?? {};
  }
}

/** True for a {@link GateError}. */
export function isGateError(err: unknown): err is GateError {
  return err instanceof GateError;
}

/**
 * The response header carrying the refusal id on every refusal the gate answers itself. The gate
 * (and the rendered nginx) remove it from the upstream's answers, so a client can tell the gate's
 * refusal (nothing was forwarded) from the API's own answer of the same shape.
 */
export const REFUSAL_HEADER = 'x-agent-gate-refusal';

/**
 * A unique, time-sortable refusal id: 10 base36 digits of milliseconds (sortable until the
 * year 5188) and 16 random hex digits, so only `[a-z0-9]`, 26 characters.
 */
export function newRefusalId(now: number = Date.now()): string {
  return now.toString(36).padStart(10, '0') + randomBytes(8).toString('hex');
}

/** The RFC 9457 problem document for a refusal. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  instance: string;
}

/** Builds the problem+json body of the contract for `code` with refusal id `refusalId`. */
export function problemFor(code: ErrorCode, status: number, refusalId: string): Problem {
  return {
    type: `urn:agent-gate:error:${code}`,
    title: ERROR_TITLE[code],
    status,
    code,
    instance: `urn:agent-gate:refusal:${refusalId}`,
  };
}

/** The WWW-Authenticate value for a 401 of `code` (RFC 6750 section 3). */
export function wwwAuthenticateFor(code: ErrorCode): string {
  return code === 'token_invalid' || code === 'token_expired'
    ? 'Bearer realm="agent-gate", error="invalid_token"'
    : 'Bearer realm="agent-gate"';
}
