/**
 * The error thrown when the gate refuses (or answers outside the contract).
 * @module
 */
import type { ErrorCode } from '../errors.js';
import { gateRefusalCode, headerValue, parseProblem, retryAfterSeconds, type RawResponse } from './response.js';

/**
 * Codes the client itself assigns; they never appear on the wire and are not part of the
 * contract's catalog (PROTOCOL.md section 9):
 * - `unexpected_response`: a gate endpoint answered neither its success nor a problem document,
 *   or answered with a redirect (3xx), which the client never follows;
 * - `pin_mismatch`: the gate's certificate chain verified but matches none of the configured
 *   `pins`; `status` is 0 because no HTTP exchange took place. Never retried.
 */
export type ClientErrorCode = 'unexpected_response' | 'pin_mismatch';

/** Every `code` a {@link GateClientError} can carry from a gate that follows the contract. */
export type GateClientErrorCode = ErrorCode | ClientErrorCode;

/**
 * A refusal by the gate. `code` is the problem+json `code` of PROTOCOL.md section 9 (an
 * {@link ErrorCode} for a gate that follows the contract), or one of the client's own
 * {@link ClientErrorCode}s.
 */
export class GateClientError extends Error {
  /** Problem `code`, e.g. `proof_invalid`; a {@link ClientErrorCode} for client-side failures. */
  readonly code: GateClientErrorCode | (string & {});
  /** HTTP status of the refusal; 0 for `pin_mismatch` (refused during the TLS handshake). */
  readonly status: number;
  /** The refusal id (`urn:agent-gate:refusal:<id>`) to quote when appealing. */
  readonly instance?: string;
  /** Seconds from `Retry-After`, when the gate sent one (429, 503). */
  readonly retryAfterS?: number;

  constructor(
    code: string,
    status: number,
    opts: { instance?: string; retryAfterS?: number; message?: string; cause?: unknown } = {},
  ) {
    super(
      opts.message ?? `${code} (${status})${opts.instance ? ` instance=${opts.instance}` : ''}`,
      opts.cause === undefined ? undefined : { cause: opts.cause },
    );
    this.name = 'GateClientError';
    this.code = code;
    this.status = status;
    if (opts.instance !== undefined) this.instance = opts.instance;
    if (opts.retryAfterS !== undefined) this.retryAfterS = opts.retryAfterS;
  }

  /**
   * The gate's refusal carried by a response of {@link GateClient.request} (problem+json with
   * `type` `urn:agent-gate:error:<code>`, e.g. 403 `agent_denied`, 502 `upstream_unavailable`),
   * or undefined for any other response: a success, or the upstream's own answer, whatever its
   * status. `request()` returns such responses rather than throwing them.
   */
  static refusalOf(res: RawResponse): GateClientError | undefined {
    if (gateRefusalCode(res) === undefined) return undefined;
    return GateClientError.fromResponse(res, 'request');
  }

  /**
   * The error for a refused or off-contract response of a gate endpoint. A redirect (3xx) is
   * always `unexpected_response`, whatever its body: gate endpoints never redirect, and the
   * client never follows one.
   */
  static fromResponse(res: RawResponse, what: string): GateClientError {
    if (res.status >= 300 && res.status < 400) {
      const location = headerValue(res.headers, 'location');
      return new GateClientError('unexpected_response', res.status, {
        message:
          `unexpected_response (${res.status}): ${what} answered with a redirect, which is not followed` +
          (location ? ` (Location: ${location.slice(0, 200)})` : ''),
      });
    }
    const retryAfterS = retryAfterSeconds(headerValue(res.headers, 'retry-after'));
    const problem = parseProblem(res);
    if (problem) {
      return new GateClientError(problem.code, res.status, {
        ...(problem.instance !== undefined ? { instance: problem.instance } : {}),
        ...(retryAfterS !== undefined ? { retryAfterS } : {}),
      });
    }
    return new GateClientError('unexpected_response', res.status, {
      message: `unexpected_response (${res.status}): ${what}`,
      ...(retryAfterS !== undefined ? { retryAfterS } : {}),
    });
  }
}
