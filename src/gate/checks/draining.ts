/** Step 1 while draining after SIGTERM: 503 `overloaded` with `connection: close`, health exempt. */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';

export const draining: CheckFactory = ({ state, config }) => {
  const health = new Set([`${config.pathPrefix}/healthz`, `${config.pathPrefix}/readyz`]);
  return (request) => {
    if (!state.draining) return;
    if (request.gatePath !== null && health.has(request.gatePath)) return;
    // The client moves on to another instance and the listener can finish closing.
    throw new GateError('overloaded', { detail: 'draining', headers: { 'retry-after': '5', connection: 'close' } });
  };
};
