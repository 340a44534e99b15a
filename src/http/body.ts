/**
 * Bounded body reading for the gate endpoints, checking in the contract's order: content
 * type (415), then size (413), then JSON shape (400).
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { GateError } from '../errors.js';

/** Largest body the gate endpoints read (PROTOCOL.md section 4). */
export const GATE_BODY_LIMIT = 16 * 1024;

/** True when `content-type` is application/json, compared case-insensitively, parameters allowed. */
export function isJsonContentType(value: string | undefined): boolean {
  if (!value) return false;
  return value.split(';', 1)[0]!.trim().toLowerCase() === 'application/json';
}

/** Declared length of the body, or undefined for chunked/absent; throws on a bad header. */
function declaredLength(headers: IncomingHttpHeaders): number | undefined {
  const cl = headers['content-length'];
  if (cl === undefined) return undefined;
  if (!/^\d{1,15}$/.test(cl)) throw new GateError('request_malformed', { detail: 'bad content-length' });
  return Number(cl);
}

/** Reads at most `limit` bytes of `stream`; throws `body_too_large` past it. */
export async function readLimited(stream: Readable, headers: IncomingHttpHeaders, limit: number): Promise<Buffer> {
  const declared = declaredLength(headers);
  if (declared !== undefined && declared > limit) throw new GateError('body_too_large', { detail: `content-length ${declared} over ${limit}` });
  if (declared === 0) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new GateError('body_too_large', { detail: `body over ${limit} bytes` });
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** Whether the request announces a body at all (content-length > 0 or chunked). */
export function announcesBody(headers: IncomingHttpHeaders): boolean {
  return headers['transfer-encoding'] !== undefined || (declaredLength(headers) ?? 0) > 0;
}

/** Parses a JSON object body; throws `request_malformed` for anything else. */
export function parseJsonObject(buf: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new GateError('request_malformed', { detail: 'body is not JSON' });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new GateError('request_malformed', { detail: 'body is not a JSON object' });
  return v as Record<string, unknown>;
}
