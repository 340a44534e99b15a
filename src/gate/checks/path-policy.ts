/**
 * Step 2 (section 4): the path policy. An undecodable path is 400; a gate path never reaches a
 * host route (routing and decoding agree, but never rely on it). Unknown paths and methods
 * under P are answered by the plugin's catch-all routes (404, 405).
 */
import { GateError } from '../../errors.js';
import { decodeRequestPath, isGatePath } from '../../http/path.js';
import type { CheckFactory } from '../deps.js';

export const pathPolicy: CheckFactory = ({ config }) => {
  const prefix = config.pathPrefix;
  return (request) => {
    const path = request.gatePath;
    // Throws the contract's 400 for the undecodable path the shedding row could not decode.
    if (path === null) decodeRequestPath(request.raw.url ?? '/');
    else if (isGatePath(path, prefix) && !(request.routeOptions.url ?? '').startsWith(prefix)) throw new GateError('not_found');
  };
};
