/**
 * `POST P/v1/challenge` and `POST P/v1/token` (PROTOCOL.md sections 3 and 4), as a fastify
 * plugin. The checks run in the contract's order; each step is a small function below.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import { GateError } from '../errors.js';
import { announcesBody, GATE_BODY_LIMIT, isJsonContentType, parseJsonObject, readLimited } from '../http/body.js';
import type { AgentIdentity } from '../identity/index.js';
import type { GateMetrics } from '../metrics/index.js';
import type { ChallengeRecord, GateStore } from '../store/index.js';
import type { TokenService } from '../tokens/index.js';
import { verifyProof } from './proof.js';

/** How long past `expires_at` a challenge is kept, to tell a late proof (408) from an unknown one (404). */
export const CHALLENGE_GRACE_MS = 30_000;

/** Algorithms a proof may use (one per key type). */
export const PROOF_ALGS = ['EdDSA', 'ES256', 'ES384', 'PS256'] as const;

const CHALLENGE_ID = /^[A-Za-z0-9_-]{22}$/;
const MAX_ID_COLLISIONS = 3;

/** Options of {@link challengeRoutes}. */
export interface ChallengeRoutesOptions {
  store: GateStore;
  tokens: TokenService;
  metrics: GateMetrics;
  audience: string;
  challengeTtlMs: number;
  skewS: number;
  /** Step 3 (identity, revocation, deny list) as an onRequest hook; sets `request.agent`. */
  identify: onRequestHookHandler;
  /** Steps 1-4 that run before identity-dependent work, e.g. rate limits; optional. */
  limits?: onRequestHookHandler[];
  now?: () => number;
}

/** Registers the two endpoints under the plugin's prefix. */
export async function challengeRoutes(app: FastifyInstance, opts: ChallengeRoutesOptions): Promise<void> {
  const now = opts.now ?? Date.now;
  // Bodies are read by the handlers themselves, so that 415 precedes 413 precedes 400.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  const onRequest = [opts.identify, ...(opts.limits ?? [])];

  app.post('/v1/challenge', { onRequest, config: { route: 'challenge' } }, async (request, reply) => {
    await readChallengeBody(request);
    const agent = requireAgent(request);
    const issuedAt = now();
    const record: ChallengeRecord = {
      nonce: randomBytes(32).toString('base64url'),
      aud: opts.audience,
      issuedAt,
      expiresAt: issuedAt + opts.challengeTtlMs,
      thumbprint: agent.thumbprint,
      powDifficulty: 0,
    };
    const id = await storeWithFreshId(opts.store, record, opts.challengeTtlMs + CHALLENGE_GRACE_MS);
    opts.metrics.challengesIssued.inc();
    reply.code(201).header('cache-control', 'no-store');
    return {
      challenge_id: id,
      nonce: record.nonce,
      aud: record.aud,
      issued_at: record.issuedAt,
      expires_at: record.expiresAt,
      algs: PROOF_ALGS,
      pow: null,
    };
  });

  app.post('/v1/token', { onRequest, config: { route: 'token' } }, async (request, reply) => {
    const body = await readTokenBody(request);
    const agent = requireAgent(request);
    // Step 8: one atomic attempt per challenge, whatever follows.
    const consumed = await opts.store.consumeChallenge(body.challengeId, opts.challengeTtlMs + CHALLENGE_GRACE_MS);
    if (consumed.status === 'unknown') {
      opts.metrics.proofs.inc({ result: 'unknown' });
      throw new GateError('challenge_unknown');
    }
    if (consumed.status === 'replayed') {
      opts.metrics.proofs.inc({ result: 'replayed' });
      opts.metrics.replaysDetected.inc({ kind: 'challenge' });
      throw new GateError('challenge_replayed');
    }
    const rec = consumed.record;
    // Step 9.
    if (request.receivedAt > rec.expiresAt) {
      opts.metrics.proofs.inc({ result: 'expired' });
      throw new GateError('challenge_expired', { detail: `received ${request.receivedAt - rec.expiresAt} ms late` });
    }
    if (rec.thumbprint !== agent.thumbprint) {
      opts.metrics.proofs.inc({ result: 'binding_mismatch' });
      throw new GateError('challenge_binding_mismatch');
    }
    // Step 10.
    try {
      await verifyProof(body.proof, agent, { cid: body.challengeId, nonce: rec.nonce, aud: rec.aud, skewS: opts.skewS, nowMs: now() }, (s) =>
        opts.metrics.signatureVerification.observe({ alg: agent.alg }, s),
      );
    } catch (err) {
      opts.metrics.proofs.inc({ result: 'invalid' });
      throw err;
    }
    // Step 11: no attestation registry in this build, so a presented attestation cannot be trusted.
    if (body.attestation !== undefined) {
      opts.metrics.proofs.inc({ result: 'attestation_invalid' });
      throw new GateError('attestation_invalid', { detail: 'no attestation issuers are configured' });
    }
    const issued = await opts.tokens.issue(agent.agentId, agent.thumbprint);
    opts.metrics.proofs.inc({ result: 'accepted' });
    opts.metrics.tokensIssued.inc();
    request.log.info({ event: 'token_issued', agent_id: agent.agentId, thumbprint: agent.thumbprint, jti: issued.jti }, 'token issued');
    reply.header('cache-control', 'no-store');
    return { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn };
  });
}

function requireAgent(request: FastifyRequest): AgentIdentity {
  if (!request.agent) throw new GateError('client_cert_required');
  return request.agent;
}

/** Empty (any content type) or a JSON object whose fields are ignored. */
async function readChallengeBody(request: FastifyRequest): Promise<void> {
  const json = isJsonContentType(request.headers['content-type']);
  if (!json) {
    if (!announcesBody(request.headers)) return;
    // Chunked with no bytes still counts as empty, so read (bounded) before refusing.
    const buf = await readLimited(request.raw, request.headers, GATE_BODY_LIMIT).catch((err: unknown) => {
      throw err instanceof GateError && err.code === 'body_too_large' ? new GateError('unsupported_media_type') : err;
    });
    if (buf.length > 0) throw new GateError('unsupported_media_type', { detail: 'challenge body must be empty or JSON' });
    return;
  }
  const buf = await readLimited(request.raw, request.headers, GATE_BODY_LIMIT);
  if (buf.length > 0) parseJsonObject(buf);
}

interface TokenBody {
  challengeId: string;
  proof: string;
  work?: string;
  attestation?: string;
}

async function readTokenBody(request: FastifyRequest): Promise<TokenBody> {
  if (!isJsonContentType(request.headers['content-type'])) throw new GateError('unsupported_media_type', { detail: 'token body must be application/json' });
  const o = parseJsonObject(await readLimited(request.raw, request.headers, GATE_BODY_LIMIT));
  const { challenge_id: cid, proof, work, attestation } = o;
  if (typeof cid !== 'string' || !CHALLENGE_ID.test(cid)) throw new GateError('request_malformed', { detail: 'challenge_id must be 22 base64url characters' });
  if (typeof proof !== 'string' || proof.length === 0) throw new GateError('request_malformed', { detail: 'proof must be a compact JWS string' });
  if (work !== undefined && (typeof work !== 'string' || work.length > 64)) throw new GateError('request_malformed', { detail: 'work must be a string of at most 64 characters' });
  if (attestation !== undefined && typeof attestation !== 'string') throw new GateError('request_malformed', { detail: 'attestation must be a JWT string' });
  return { challengeId: cid, proof, work, attestation };
}

/** `SET NX` with a new id on collision (section 3), never overwriting. */
async function storeWithFreshId(store: GateStore, record: ChallengeRecord, ttlMs: number): Promise<string> {
  for (let i = 0; i < MAX_ID_COLLISIONS; i++) {
    const id = randomBytes(16).toString('base64url');
    if (await store.putChallenge(id, record, ttlMs)) return id;
  }
  throw new GateError('store_unavailable', { detail: 'repeated challenge id collisions', headers: { 'retry-after': '1' } });
}
