/** Step 1 (section 4): load shedding, 503 `overloaded`; the health endpoints are exempt. */
import { decodeRequestPath } from '../../http/path.js';
import type { CheckFactory } from '../deps.js';

export const shedding: CheckFactory = ({ shedder, config }) => {
  const health = new Set([`${config.pathPrefix}/healthz`, `${config.pathPrefix}/readyz`]);
  return (request) => {
    // The path is decoded once here for every edge row; an undecodable one is refused by the
    // path row, after this one (an overloaded gate does not even parse bad paths).
    let path: string | null;
    try {
      path = decodeRequestPath(request.raw.url ?? '/');
    } catch {
      path = null;
    }
    request.gatePath = path;
    if (path !== null && health.has(path)) return;
    const refusal = shedder.refusal();
    if (refusal) throw refusal;
  };
};
