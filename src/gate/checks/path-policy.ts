/**
 * Step 2 (section 4): the request's form and path. A request over the header-line cap, or an
 * HTTP/1.1 request without `Host`, is 400 (Node would drop the extra lines unseen, or answer
 * a bare 400 itself); an undecodable path is 400; a gate path never reaches a host route
 * (routing and decoding agree, but never rely on it). Unknown paths and methods under P are
 * answered by the plugin's catch-all routes (404, 405).
 */
import { GateError } from '../../errors.js';
import { maxHeaderLines } from '../../http/connections.js';
import { decodeRequestPath, isGatePath } from '../../http/path.js';
import type { CheckFactory } from '../deps.js';

export const pathPolicy: CheckFactory = ({ config }) => {
  const prefix = config.pathPrefix;
  const maxRaw = 2 * maxHeaderLines(config.mode);
  return (request) => {
    const raw = request.raw;
    if (raw.rawHeaders.length > maxRaw) throw new GateError('request_malformed', { detail: `more than ${maxRaw / 2} header lines` });
    if (raw.headers.host === undefined && raw.httpVersion === '1.1') throw new GateError('request_malformed', { detail: 'HTTP/1.1 request without Host' });
    const path = request.gatePath;
    // Throws the contract's 400 for the undecodable path the shedding row could not decode.
    if (path === null) decodeRequestPath(raw.url ?? '/');
    else if (isGatePath(path, prefix)) {
      // A request no route takes (an unknown method) reaches the not-found handler: no route url.
      const url = request.routeOptions.url;
      if (url !== undefined && !url.startsWith(prefix)) throw new GateError('not_found');
    }
  };
};
