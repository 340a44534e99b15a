/**
 * Step 10 of PROTOCOL.md section 4: the proof JWS, verified with the certificate's own key.
 * The header can never choose the key (RFC 8725 section 3.1): kid/jwk/jku/x5c/x5u are ignored
 * and `crit` is refused outright.
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import { GateError } from '../errors.js';
import { parseCompactJws, parseJsonObjectStrict, verifyJwsSignature, verifyJwsSignatureOffLoop, type CompactJws } from '../lib/jws.js';
import type { AgentIdentity } from '../identity/index.js';

/** The `typ` a proof must carry, exactly. */
export const PROOF_TYP = 'agent-gate-proof+jwt';

/** What the proof must match. */
export interface ProofExpectation {
  cid: string;
  nonce: string;
  aud: string;
  /** Allowed |now - iat| in seconds. */
  skewS: number;
  nowMs: number;
}

const MAX_PROOF_LENGTH = 12 * 1024;

function invalid(detail: string, cause?: unknown): GateError {
  return new GateError('proof_invalid', { detail, cause });
}

function sameString(a: unknown, b: string): boolean {
  if (typeof a !== 'string') return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

// P-384 verification is ~0.6 ms of CPU in OpenSSL: on libuv's pool it costs ~7 % more CPU
// but leaves the event loop to other agents' handshakes. The others take under 0.1 ms, and the
// hop to the pool would add 30-50 µs of CPU to each, so they run inline.
const OFF_LOOP: ReadonlySet<string> = new Set(['ES384']);

/**
 * Verifies `proof` for `agent`; throws `proof_invalid`. `observe` receives the signature
 * verification time in seconds (for `signature_verification_seconds`).
 */
export async function verifyProof(proof: string, agent: AgentIdentity, want: ProofExpectation, observe?: (seconds: number) => void): Promise<void> {
  if (!OFF_LOOP.has(agent.alg)) return verifyProofSync(proof, agent, want, observe);
  const jws = checkForm(proof, agent);
  const started = process.hrtime.bigint();
  const ok = await verifyJwsSignatureOffLoop(agent.alg, agent.publicKey, jws.signingInput, jws.signature);
  observe?.(Number(process.hrtime.bigint() - started) / 1e9);
  if (!ok) throw invalid('signature does not verify');
  checkClaims(jws.payload, want);
}

/**
 * {@link verifyProof} without the promise, every algorithm on the calling thread: node:crypto
 * on the certificate's KeyObject, with the verdicts jose's `compactVerify` gave behind the
 * contract's own checks.
 */
export function verifyProofSync(proof: string, agent: AgentIdentity, want: ProofExpectation, observe?: (seconds: number) => void): void {
  const jws = checkForm(proof, agent);
  const started = process.hrtime.bigint();
  const ok = verifyJwsSignature(agent.alg, agent.publicKey, jws.signingInput, jws.signature);
  observe?.(Number(process.hrtime.bigint() - started) / 1e9);
  if (!ok) throw invalid('signature does not verify');
  checkClaims(jws.payload, want);
}

/** The compact form and the protected header; the key is the certificate's, whatever kid/jwk/jku/x5c/x5u say. */
function checkForm(proof: string, agent: AgentIdentity): CompactJws {
  const jws = proof.length > MAX_PROOF_LENGTH ? undefined : parseCompactJws(proof);
  if (!jws) throw invalid('not a canonical compact JWS');
  const header = parseJsonObjectStrict(jws.header);
  if (!header) throw invalid('header does not decode');
  if ('crit' in header) throw invalid('crit header refused');
  if (header.alg !== agent.alg) throw invalid(`alg ${String(header.alg)} not allowed for this key (${agent.alg})`);
  if (header.typ !== PROOF_TYP) throw invalid('wrong typ');
  return jws;
}

function checkClaims(payloadBytes: Buffer, want: ProofExpectation): void {
  let payload: Record<string, unknown>;
  try {
    // Lenient UTF-8 here, as before: a payload that only decodes leniently can still never
    // carry the exact cid/nonce/aud strings.
    const v: unknown = JSON.parse(payloadBytes.toString('utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    payload = v as Record<string, unknown>;
  } catch (err) {
    throw invalid('payload is not a JSON object', err);
  }
  if (!sameString(payload.cid, want.cid)) throw invalid('cid mismatch');
  if (!sameString(payload.nonce, want.nonce)) throw invalid('nonce mismatch');
  if (!sameString(payload.aud, want.aud)) throw invalid('aud mismatch');
  const iat = payload.iat;
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('iat missing');
  if (Math.abs(want.nowMs / 1000 - iat) > want.skewS) throw invalid('iat outside the allowed skew');
}
