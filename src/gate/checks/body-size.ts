/** Step 6 on `P/v1/token`: the body is read, at most 16 KiB (else 413); it lands in `request.body`. */
import { GATE_BODY_LIMIT, readLimited } from '../../http/body.js';
import type { CheckFactory } from '../deps.js';

export const bodySize: CheckFactory = () => async (request) => {
  request.body = await readLimited(request.raw, request.headers, GATE_BODY_LIMIT);
};
