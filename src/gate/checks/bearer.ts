/**
 * Section 5: `Authorization: Bearer` (scheme case-insensitive), verified. A token seen before
 * is a map lookup and a new one is verified on node:crypto: both synchronous.
 */
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';

export const bearer: CheckFactory = ({ tokens }) => (request) => {
  const auth = request.headers.authorization;
  if (typeof auth !== 'string') throw new GateError('token_missing');
  // Node keeps the first Authorization line and drops the others unseen: two credentials are
  // ambiguous (nginx refuses them too), so count the lines.
  if (authorizationLines(request.raw.rawHeaders) > 1) throw new GateError('request_malformed', { detail: 'more than one Authorization header' });
  const sp = auth.indexOf(' ');
  const scheme = sp === -1 ? auth : auth.slice(0, sp);
  if (scheme.toLowerCase() !== 'bearer') throw new GateError('token_missing', { detail: 'not a Bearer scheme' });
  const value = sp === -1 ? '' : auth.slice(sp + 1).trim();
  if (value === '') throw new GateError('token_invalid', { detail: 'empty bearer value' });
  request.accessToken = tokens.verifySync(value);
};

function authorizationLines(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') n++;
  }
  return n;
}
