/**
 * `POST P/v1/challenge` and `POST P/v1/token` (PROTOCOL.md sections 3 and 4), as a fastify
 * plugin. The checks run in the contract's order; each step is a small function below.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import { GateError } from '../errors.js';
import { announcesBody, GATE_BODY_LIMIT, isJsonContentType, parseJsonObject, readLimited } from '../http/body.js';
import type { AuditSink } from '../audit/index.js';
import type { AgentIdentity } from '../identity/index.js';
import type { GateMetrics, LabelOf } from '../metrics/index.js';
import type { ChallengeRecord, GateStore } from '../store/index.js';
import type { TokenService } from '../tokens/index.js';
import { checkPow } from '../lib/pow.js';
import { verifyProof } from './proof.js';

/** proofs_total result for each refusal of steps 9-11. */
const PROOF_RESULT: Partial<Record<string, LabelOf<'proofResult'>>> = {
  challenge_expired: 'expired',
  challenge_binding_mismatch: 'binding_mismatch',
  pow_invalid: 'pow_invalid',
  proof_invalid: 'invalid',
  attestation_invalid: 'attestation_invalid',
};


/**
 * Route schemas document the endpoints (OpenAPI) but do not drive validation or serialisation:
 * bodies are checked by the handlers in the contract's order (415, 413, 400), and answers
 * are written as they are.
 */
const DOCS_ONLY = {
  validatorCompiler: () => () => true,
  serializerCompiler: () => (data: unknown) => JSON.stringify(data),
};
const PROBLEM_REF = { description: 'problem+json refusal (PROTOCOL.md section 9)', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
const CHALLENGE_SCHEMA = {
  summary: 'Get a timed nonce challenge (client certificate required)',
  body: { type: 'object', description: 'empty, or a JSON object whose fields are ignored' },
  response: {
    201: {
      type: 'object',
      required: ['challenge_id', 'nonce', 'aud', 'issued_at', 'expires_at', 'algs', 'pow'],
      properties: {
        challenge_id: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' },
        nonce: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' },
        aud: { type: 'string' },
        issued_at: { type: 'integer', description: 'Unix ms' },
        expires_at: { type: 'integer', description: 'Unix ms' },
        algs: { type: 'array', items: { type: 'string', enum: ['EdDSA', 'ES256', 'ES384', 'PS256'] } },
        pow: { type: ['object', 'null'], properties: { alg: { type: 'string', enum: ['sha256'] }, difficulty: { type: 'integer', maximum: 24 } } },
      },
    },
    '4xx': PROBLEM_REF,
    '5xx': PROBLEM_REF,
  },
};
const TOKEN_SCHEMA = {
  summary: 'Exchange a signed proof for an access token bound to the certificate',
  body: {
    type: 'object',
    required: ['challenge_id', 'proof'],
    properties: {
      challenge_id: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' },
      proof: { type: 'string', description: 'compact JWS, typ agent-gate-proof+jwt, payload {cid, nonce, aud, iat}' },
      work: { type: 'string', maxLength: 64 },
      attestation: { type: 'string', description: 'attestation JWT (section 8)' },
    },
  },
  response: {
    200: {
      type: 'object',
      required: ['access_token', 'token_type', 'expires_in'],
      properties: { access_token: { type: 'string' }, token_type: { type: 'string', enum: ['Bearer'] }, expires_in: { type: 'integer' } },
    },
    '4xx': PROBLEM_REF,
    '5xx': PROBLEM_REF,
  },
};

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
  /** Step 4 (rate limits) per endpoint, run after identity. */
  limits?: { challenge?: onRequestHookHandler; token?: onRequestHookHandler };
  /** Proof-of-work difficulty (leading zero bits) to demand of this request's challenge; 0 for none. */
  powDifficulty?: (request: FastifyRequest) => number;
  /** Step 11: verifies a presented attestation and enforces the required level; resolves to the level. */
  attest?: (evidence: string | undefined, ctx: { nonce: string; thumbprint: string; skewS: number; nowMs: number }) => Promise<number | undefined>;
  /** The audit trail, for the security decision of issuing a token. */
  audit?: AuditSink;
  /** Told of every refusal at steps 9-11, for the failed-proof cooldown. */
  onFailedProof?: (agent: AgentIdentity, code: string) => void;
  now?: () => number;
}

/** Registers the two endpoints under the plugin's prefix. */
export async function challengeRoutes(app: FastifyInstance, opts: ChallengeRoutesOptions): Promise<void> {
  const now = opts.now ?? Date.now;
  // Bodies are read by the handlers themselves, so that 415 precedes 413 precedes 400.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  /** Steps 9-11 of section 4, in order. */
  const checkProofSteps = async (receivedAt: number, rec: ChallengeRecord, agent: AgentIdentity, body: TokenBody): Promise<number | undefined> => {
    if (receivedAt > rec.expiresAt) throw new GateError('challenge_expired', { detail: `received ${receivedAt - rec.expiresAt} ms late` });
    if (rec.thumbprint !== agent.thumbprint) throw new GateError('challenge_binding_mismatch');
    if (rec.powDifficulty > 0 && (body.work === undefined || !checkPow(rec.nonce, rec.powDifficulty, body.work))) {
      throw new GateError('pow_invalid', { detail: `difficulty ${rec.powDifficulty} not met` });
    }
    await verifyProof(body.proof, agent, { cid: body.challengeId, nonce: rec.nonce, aud: rec.aud, skewS: opts.skewS, nowMs: now() }, (s) =>
      opts.metrics.signatureVerification.observe({ alg: agent.alg }, s),
    );
    if (opts.attest) return opts.attest(body.attestation, { nonce: rec.nonce, thumbprint: agent.thumbprint, skewS: opts.skewS, nowMs: now() });
    // Without a registry no attestation can be trusted (fail closed, never ignored).
    if (body.attestation !== undefined) throw new GateError('attestation_invalid', { detail: 'no attestation issuers are configured' });
    return undefined;
  };

  const hooks = (limit?: onRequestHookHandler) => (limit ? [opts.identify, limit] : [opts.identify]);
  // Section 3: an empty challenge body is fine "with any or no content type". fastify refuses a
  // malformed media type before any handler runs, so an empty body's header is dropped first.
  const ignoreEmptyBodyType: onRequestHookHandler = (request, _reply, done) => {
    if (!announcesBody(request.headers)) delete request.headers['content-type'];
    done();
  };

  app.post('/v1/challenge', { onRequest: [ignoreEmptyBodyType, ...hooks(opts.limits?.challenge)], config: { route: 'challenge' }, schema: CHALLENGE_SCHEMA, ...DOCS_ONLY }, async (request, reply) => {
    await readChallengeBody(request);
    const agent = requireAgent(request);
    const issuedAt = now();
    const record: ChallengeRecord = {
      nonce: randomBytes(32).toString('base64url'),
      aud: opts.audience,
      issuedAt,
      expiresAt: issuedAt + opts.challengeTtlMs,
      thumbprint: agent.thumbprint,
      powDifficulty: opts.powDifficulty?.(request) ?? 0,
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
      pow: record.powDifficulty > 0 ? { alg: 'sha256', difficulty: record.powDifficulty } : null,
    };
  });

  app.post('/v1/token', { onRequest: hooks(opts.limits?.token), config: { route: 'token' }, schema: TOKEN_SCHEMA, ...DOCS_ONLY }, async (request, reply) => {
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
    let att: number | undefined;
    try {
      att = await checkProofSteps(request.receivedAt, consumed.record, agent, body);
    } catch (err) {
      if (err instanceof GateError) {
        opts.metrics.proofs.inc({ result: PROOF_RESULT[err.code] ?? 'invalid' });
        opts.onFailedProof?.(agent, err.code);
      }
      throw err;
    }
    const issued = await opts.tokens.issue(agent.agentId, agent.thumbprint, att);
    opts.metrics.proofs.inc({ result: 'accepted' });
    opts.metrics.tokensIssued.inc();
    const decision = { event: 'token_issued', agent_id: agent.agentId, thumbprint: agent.thumbprint, jti: issued.jti, att };
    request.log.info(decision, 'token issued');
    opts.audit?.record(decision);
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
