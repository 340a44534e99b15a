/** Step 7 on `P/v1/token`: a JSON object with the fields of section 4 (else 400 `request_malformed`). */
import { GateError } from '../../errors.js';
import { parseJsonObject } from '../../http/body.js';
import type { CheckFactory } from '../deps.js';

const CHALLENGE_ID = /^[A-Za-z0-9_-]{22}$/;

export const jsonShape: CheckFactory = () => (request) => {
  const { challenge_id: cid, proof, work, attestation } = parseJsonObject(request.body as Buffer);
  if (typeof cid !== 'string' || !CHALLENGE_ID.test(cid)) throw new GateError('request_malformed', { detail: 'challenge_id must be 22 base64url characters' });
  if (typeof proof !== 'string' || proof.length === 0) throw new GateError('request_malformed', { detail: 'proof must be a compact JWS string' });
  if (work !== undefined && (typeof work !== 'string' || work.length > 64)) throw new GateError('request_malformed', { detail: 'work must be a string of at most 64 characters' });
  if (attestation !== undefined && typeof attestation !== 'string') throw new GateError('request_malformed', { detail: 'attestation must be a JWT string' });
  request.exchange = { challengeId: cid, proof, work, attestation };
};
