/**
 * Retry policy of the client: which answers and errors may be retried, and how long to wait.
 *
 * - 429/503 with `Retry-After` of at most `maxRetryAfterS`: wait `Retry-After` plus a random
 *   jitter of up to {@link maxJitterMs} (20% of the wait, at least 250 ms), so that agents
 *   refused together do not come back together.
 * - 503 without `Retry-After`: exponential backoff with full jitter, a random wait in
 *   `[0, min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2^attempt))`.
 * - At most `maxRetries` such retries per call.
 * - A proxied request whose method is not safe (anything but GET, HEAD, OPTIONS) is retried
 *   only when the 429/503 is the gate's own refusal, which the gate answers before forwarding:
 *   problem+json with `type` `urn:agent-gate:error:<code>` and a code of
 *   {@link GATE_RETRY_CODES}. A bare 503 may come from the upstream or a proxy that already
 *   saw the request.
 * - Connection errors ({@link isConnectionError}) are retried once, for safe methods only.
 * @module
 */
import { ownRefusalCode, type RawResponse } from './response.js';

/** Default of the `maxRetries` option. */
export const DEFAULT_MAX_RETRIES = 2;

/** Lower bound of the jitter range added to a `Retry-After` wait. */
export const RETRY_JITTER_MIN_MS = 250;

/** The jitter range added to a `Retry-After` wait, as a fraction of the wait. */
export const RETRY_JITTER_RATIO = 0.2;

/** First backoff range for a 503 without `Retry-After`. */
export const BACKOFF_BASE_MS = 200;

/** Largest backoff range for a 503 without `Retry-After`. */
export const BACKOFF_CAP_MS = 3200;

/** Largest random wait before retrying after a connection error. */
export const CONNECTION_RETRY_MAX_MS = 100;

/** Gate refusals made before anything was forwarded, which any method may retry. */
export const GATE_RETRY_CODES: ReadonlySet<string> = new Set([
  'rate_limited',
  'overloaded',
  'store_unavailable',
  'revocation_unavailable',
]);

/** Methods that may be retried whoever refused them (RFC 9110 safe methods). */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Error codes of a failed or dropped connection (Node and undici). */
const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** Upper bound (exclusive) of the jitter added to a wait of `waitMs`. */
export function maxJitterMs(waitMs: number): number {
  return Math.max(RETRY_JITTER_MIN_MS, waitMs * RETRY_JITTER_RATIO);
}

/** The wait for a `Retry-After` of `retryAfterS` seconds: the value plus jitter. */
export function retryAfterDelayMs(retryAfterS: number, random: () => number = Math.random): number {
  const wait = retryAfterS * 1000;
  return wait + random() * maxJitterMs(wait);
}

/** Full-jitter backoff for retry number `attempt` (0-based) of a 503 without `Retry-After`. */
export function backoffDelayMs(attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
}

/**
 * The wait before retrying a refusal of `status` with `retryAfterS`, or undefined when it must
 * not be retried: not 429/503, a `Retry-After` above `maxRetryAfterS`, or a 429 without one.
 */
export function refusalDelayMs(
  status: number,
  retryAfterS: number | undefined,
  attempt: number,
  maxRetryAfterS: number,
  random: () => number = Math.random,
): number | undefined {
  if (status !== 429 && status !== 503) return undefined;
  if (retryAfterS !== undefined) {
    return retryAfterS <= maxRetryAfterS ? retryAfterDelayMs(retryAfterS, random) : undefined;
  }
  return status === 503 ? backoffDelayMs(attempt, random) : undefined;
}

/**
 * True when `res` is the gate's own 429/503 refusal with a code it answers before forwarding:
 * it carries the gate's refusal header (removed from the API's answers), so an API answer of the
 * same shape is never taken for one.
 */
export function isGateRetryableRefusal(res: RawResponse): boolean {
  if (res.status !== 429 && res.status !== 503) return false;
  const code = ownRefusalCode(res);
  return code !== undefined && GATE_RETRY_CODES.has(code);
}

/** True for errors of a connection that failed or dropped (not TLS verification, not timeouts of ours). */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && CONNECTION_ERROR_CODES.has(code);
}
