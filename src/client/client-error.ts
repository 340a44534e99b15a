/**
 * The error thrown when the gate refuses (or answers outside the contract).
 * @module
 */
import type { ErrorCode } from '../errors.js';
import { headerValue, parseProblem, retryAfterSeconds, type RawResponse } from './response.js';

/**
 * A refusal by the gate. `code` is the problem+json `code` of PROTOCOL.md section 9 (an
 * {@link ErrorCode} for a gate that follows the contract), or `unexpected_response` when the
 * gate answered something that is neither the expected success nor a problem document.
 */
export class GateClientError extends Error {
  /** Problem `code`, e.g. `proof_invalid`; `unexpected_response` for off-contract answers. */
  readonly code: ErrorCode | 'unexpected_response' | (string & {});
  /** HTTP status of the refusal. */
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

  /** The error for a refused or off-contract response of a gate endpoint. */
  static fromResponse(res: RawResponse, what: string): GateClientError {
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
