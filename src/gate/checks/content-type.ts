/** Step 5 on `P/v1/token`: `application/json` (case-insensitive, parameters allowed), else 415. */
import { GateError } from '../../errors.js';
import { isJsonContentType } from '../../http/body.js';
import type { CheckFactory } from '../deps.js';

export const contentTypeJson: CheckFactory = () => (request) => {
  if (!isJsonContentType(request.headers['content-type'])) throw new GateError('unsupported_media_type', { detail: 'token body must be application/json' });
};
