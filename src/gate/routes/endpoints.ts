/**
 * `POST P/v1/challenge` and `POST P/v1/token` (PROTOCOL.md sections 3 and 4), as a fastify
 * plugin: each runs its table of pipeline.ts (headers in onRequest, body and proof in the
 * handler), then issues the challenge or the token.
 * @module
 */
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import type { AuditSink } from '../../audit/index.js';
import { CHALLENGE_GRACE_MS, PROOF_ALGS } from '../../challenge/index.js';
import { GateError } from '../../errors.js';
import { RandomPool } from '../../lib/random.js';
import { announcesBody } from '../../http/body.js';
import type { GateMetrics, LabelOf } from '../../metrics/index.js';
import type { ChallengeRecord, GateStore } from '../../store/index.js';
import type { TokenService } from '../../tokens/index.js';
import type { BuiltTable } from '../build.js';
import { agentOf } from '../context.js';
import { runChecksAsync } from '../runner.js';

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

const MAX_ID_COLLISIONS = 3;

/** Options of {@link challengeRoutes}. */
export interface ChallengeRoutesOptions {
  store: GateStore;
  tokens: TokenService;
  metrics: GateMetrics;
  audience: string;
  challengeTtlMs: number;
  /** The built tables of the two endpoints. */
  tables: { challenge: BuiltTable; token: BuiltTable };
  /** A table's `headers` phase as an onRequest hook (answers refusals itself). */
  hook: (table: BuiltTable) => onRequestHookHandler;
  /** Proof-of-work difficulty (leading zero bits) to demand for a challenge; 0 for none. */
  powDifficulty?: (ipLoad: number) => number;
  /** The audit trail, for the security decision of issuing a token. */
  audit?: AuditSink;
  /** Told of every refusal of the proof phase (steps 9-11), for the failed-proof cooldown. */
  onFailedProof?: (thumbprint: string) => void;
  now?: () => number;
}

/** Registers the two endpoints under the plugin's prefix. */
export async function challengeRoutes(app: FastifyInstance, opts: ChallengeRoutesOptions): Promise<void> {
  const now = opts.now ?? Date.now;
  const { challenge, token } = opts.tables;
  // Nonces and challenge ids: one CSPRNG call per 85 challenges instead of two each.
  const random = new RandomPool();
  // Bodies are read by the body rows themselves, so that 415 precedes 413 precedes 400.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  // Section 3: an empty challenge body is fine "with any or no content type". fastify refuses a
  // malformed media type before any handler runs, so an empty body's header is dropped first.
  const ignoreEmptyBodyType: onRequestHookHandler = (request, _reply, done) => {
    if (!announcesBody(request.headers)) delete request.headers['content-type'];
    done();
  };

  app.post('/v1/challenge', { onRequest: [ignoreEmptyBodyType, opts.hook(challenge)], config: { route: 'challenge' }, schema: CHALLENGE_SCHEMA, ...DOCS_ONLY }, async (request, reply) => {
    await runChecksAsync(challenge.body, request);
    const agent = agentOf(request);
    const issuedAt = now();
    const record: ChallengeRecord = {
      nonce: random.base64url(32),
      aud: opts.audience,
      issuedAt,
      expiresAt: issuedAt + opts.challengeTtlMs,
      thumbprint: agent.thumbprint,
      powDifficulty: opts.powDifficulty?.(request.ipLoad) ?? 0,
    };
    const id = await storeWithFreshId(opts.store, record, opts.challengeTtlMs + CHALLENGE_GRACE_MS, random);
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

  app.post('/v1/token', { onRequest: opts.hook(token), config: { route: 'token' }, schema: TOKEN_SCHEMA, ...DOCS_ONLY }, async (request, reply) => {
    await runChecksAsync(token.body, request);
    const agent = agentOf(request);
    try {
      await runChecksAsync(token.proof, request);
    } catch (err) {
      if (err instanceof GateError) {
        opts.metrics.proofs.inc({ result: PROOF_RESULT[err.code] ?? 'invalid' });
        opts.onFailedProof?.(agent.thumbprint);
      }
      throw err;
    }
    const att = request.exchange!.att;
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

/** `SET NX` with a new id on collision (section 3), never overwriting. */
async function storeWithFreshId(store: GateStore, record: ChallengeRecord, ttlMs: number, random: RandomPool): Promise<string> {
  for (let i = 0; i < MAX_ID_COLLISIONS; i++) {
    const id = random.base64url(16);
    if (await store.putChallenge(id, record, ttlMs)) return id;
  }
  throw new GateError('store_unavailable', { detail: 'repeated challenge id collisions', headers: { 'retry-after': '1' } });
}
