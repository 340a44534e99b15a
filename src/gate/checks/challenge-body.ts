/**
 * Steps 5-7 on `P/v1/challenge` (section 3): the body is empty (any or no content type) or a
 * JSON object whose fields are ignored; a non-empty body of another type is 415.
 */
import { GateError } from '../../errors.js';
import { announcesBody, GATE_BODY_LIMIT, isJsonContentType, parseJsonObject, readLimited } from '../../http/body.js';
import type { CheckFactory } from '../deps.js';

export const challengeBody: CheckFactory = () => async (request) => {
  if (!isJsonContentType(request.headers['content-type'])) {
    if (!announcesBody(request.headers)) return;
    // A declared length > 0 is a non-empty body: refused unread, so `Expect: 100-continue` gets
    // no 100 first. Chunked with no bytes still counts as empty, so read (bounded) before refusing.
    if (request.headers['transfer-encoding'] === undefined) throw new GateError('unsupported_media_type', { detail: 'challenge body must be empty or JSON' });
    const buf = await readLimited(request.raw, request.headers, GATE_BODY_LIMIT).catch((err: unknown) => {
      throw err instanceof GateError && err.code === 'body_too_large' ? new GateError('unsupported_media_type') : err;
    });
    if (buf.length > 0) throw new GateError('unsupported_media_type', { detail: 'challenge body must be empty or JSON' });
    return;
  }
  const buf = await readLimited(request.raw, request.headers, GATE_BODY_LIMIT);
  if (buf.length > 0) parseJsonObject(buf);
};
