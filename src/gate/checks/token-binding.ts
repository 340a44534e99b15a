/** Section 5: the token's `cnf.x5t#S256` is the presented certificate, on every request (RFC 8705 section 3). */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';

export const tokenBinding: CheckFactory = () => (request) => {
  const agent = request.agent;
  if (!agent) throw new GateError('client_cert_required');
  if (request.accessToken!.thumbprint !== agent.thumbprint) {
    request.accessToken = null;
    throw new GateError('token_binding_mismatch');
  }
};
