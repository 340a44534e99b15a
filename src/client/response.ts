/**
 * Buffered HTTP responses, bounded body reading, problem+json parsing and Retry-After.
 * @module
 */
import type { Readable } from 'node:stream';
import { REFUSAL_HEADER } from '../errors.js';

/** A fully read response. Header names are lowercase. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** Parses the body as JSON (throws SyntaxError when it is not). */
  json<T = unknown>(): T;
}

/** Largest body read from a gate endpoint (challenge, token): 1 MiB. */
export const GATE_MAX_RESPONSE_BYTES = 1024 * 1024;

/** Largest body read by `GateClient.request` from the protected upstream: 64 MiB. */
export const REQUEST_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Thrown when a response body exceeds the cap of its kind. */
export class ResponseTooLargeError extends Error {
  readonly limit: number;
  constructor(limit: number) {
    super(`response body larger than ${limit} bytes`);
    this.name = 'ResponseTooLargeError';
    this.limit = limit;
  }
}

/** Builds a {@link RawResponse}. */
export function rawResponse(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  body: Buffer,
): RawResponse {
  return {
    status,
    headers,
    body,
    json<T = unknown>(): T {
      return JSON.parse(body.toString('utf8')) as T;
    },
  };
}

/** The single value of header `name`, or undefined (first value when repeated). */
export function headerValue(headers: RawResponse['headers'], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Reads `body` completely, refusing (and destroying the stream) once more than `limit`
 * bytes have arrived, or up front when Content-Length already says so.
 */
export async function readBounded(
  body: Readable,
  limit: number,
  contentLength: string | undefined,
): Promise<Buffer> {
  if (contentLength !== undefined && /^\d+$/.test(contentLength) && Number(contentLength) > limit) {
    body.destroy();
    throw new ResponseTooLargeError(limit);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += buf.length;
    if (total > limit) {
      body.destroy();
      throw new ResponseTooLargeError(limit);
    }
    chunks.push(buf);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
}

/** The media type of a Content-Type value: lowercase, without parameters. */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

/** The fields of an RFC 9457 problem document that the client uses. */
export interface ProblemInfo {
  code: string;
  status: number;
  instance?: string;
  title?: string;
  type?: string;
}

/**
 * The problem document of `res` when it is `application/problem+json` with a string `code`,
 * else undefined. Never throws.
 */
export function parseProblem(res: RawResponse): ProblemInfo | undefined {
  if (mediaType(headerValue(res.headers, 'content-type')) !== 'application/problem+json') return undefined;
  let doc: unknown;
  try {
    doc = res.json();
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  if (typeof d.code !== 'string' || d.code.length === 0) return undefined;
  const info: ProblemInfo = { code: d.code, status: res.status };
  if (typeof d.instance === 'string') info.instance = d.instance;
  if (typeof d.title === 'string') info.title = d.title;
  if (typeof d.type === 'string') info.type = d.type;
  return info;
}

/** True when the problem is one of the gate's own (type `urn:agent-gate:error:...`). */
export function isGateProblem(p: ProblemInfo | undefined): p is ProblemInfo {
  return p !== undefined && (p.type === undefined || p.type.startsWith('urn:agent-gate:error:'));
}

/**
 * The contract code of `res` when it is a problem document shaped exactly as the gate's own
 * (`type` is `urn:agent-gate:error:<code>`), else undefined. Stricter than
 * {@link isGateProblem}: used where a wrong guess would resend a request the upstream saw.
 */
export function gateRefusalCode(res: RawResponse): string | undefined {
  const p = parseProblem(res);
  return p !== undefined && p.type === `urn:agent-gate:error:${p.code}` ? p.code : undefined;
}

/**
 * The code of a refusal the gate itself answered: as {@link gateRefusalCode}, and only with the
 * gate's X-Agent-Gate-Refusal header, which it removes from the API's answers (so nothing was
 * forwarded for a 401, 429 or 503 carrying it).
 */
export function ownRefusalCode(res: RawResponse): string | undefined {
  return typeof res.headers[REFUSAL_HEADER] === 'string' ? gateRefusalCode(res) : undefined;
}

/**
 * Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or undefined when
 * absent or unparsable.
 */
export function retryAfterSeconds(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  // An HTTP-date starts with the day's name (all three RFC 9110 forms); anything else ("-1",
  // "1.5") is invalid, though Date.parse would read it as a date long past (a retry at once).
  if (!/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? /.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}
