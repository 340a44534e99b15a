/**
 * Each check of src/gate/checks driven with a plain context (the request fields a check reads
 * and writes), and the runner's contract: synchronous while the checks are, the first refusal
 * answers, anything that is not a GateError becomes 500 internal_error.
 */
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import type { GateConfig } from '../../src/config/index.js';
import { GateError } from '../../src/errors.js';
import { CHECKS, buildChecks, runChecks, type Check, type CheckName, type GateDeps } from '../../src/gate/index.js';
import { toRefusal } from '../../src/http/errors.js';
import { createMetrics } from '../../src/metrics/index.js';
import { DenyList } from '../../src/operator/index.js';
import { GateRateLimits } from '../../src/ratelimit/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { loadSigningKeys, TokenService } from '../../src/tokens/index.js';

const PREFIX = '/.agent-gate';
const agent = { agentId: 'urn:agent:a', thumbprint: 'T'.repeat(43), alg: 'ES256' };
let tokens: TokenService;
let deps: GateDeps;
let denyList: DenyList;

beforeAll(async () => {
  const keys = await loadSigningKeys({ allowEphemeral: true });
  tokens = new TokenService({ keys, issuer: 'https://gate.test', audience: 'https://api.test', ttlS: 300, skewS: 30 });
  const store = new MemoryStore(1000);
  const metrics = createMetrics({ defaultMetrics: false });
  denyList = new DenyList({ store, now: Date.now });
  const spec = { points: 2, durationS: 60 };
  deps = {
    config: { mode: 'direct', pathPrefix: PREFIX, challengeTtlMs: 3000, maxSkewS: 30, attestation: {} } as unknown as GateConfig,
    now: Date.now,
    metrics,
    store,
    tokens,
    identity: {},
    revocation: { enabled: false } as GateDeps['revocation'],
    denyList,
    limits: new GateRateLimits({ challengeIp: spec, challengeIdentity: spec, tokenIdentity: spec, proxyIdentity: spec, failedProofs: spec, refusalIdentity: spec, store, sink: (_k, by) => Promise.resolve(by), metrics }),
    attestation: undefined,
    shedder: { refusal: () => undefined } as unknown as GateDeps['shedder'],
    state: { draining: false },
  };
});

/** A plain context: only what the checks read and write. */
/** The IncomingMessage fields the edge rows read: an HTTP/1.1 request with a Host line. */
function raw(fields: Record<string, unknown>): Record<string, unknown> {
  return { rawHeaders: ['Host', 'gate.test'], headers: { host: 'gate.test' }, httpVersion: '1.1', ...fields };
}

function ctx(fields: Record<string, unknown> = {}): FastifyRequest {
  return { headers: {}, raw: raw({ url: '/api/x' }), routeOptions: { url: '/*' }, agent, accessToken: null, clientAddress: '10.0.0.1', ipLoad: 0, receivedAt: Date.now(), gatePath: null, exchange: null, ...fields } as unknown as FastifyRequest;
}

function check(name: CheckName): Check {
  const [c] = buildChecks([name], deps);
  if (!c) throw new Error(`${name} is off in this configuration`);
  return c;
}

/** The code a check refuses with, or 'pass'. */
async function outcome(name: CheckName, request: FastifyRequest): Promise<string> {
  try {
    await check(name)(request);
    return 'pass';
  } catch (err) {
    return (err as GateError).code;
  }
}

describe('edge rows', () => {
  it('shedding decodes the path once and exempts the health endpoints', async () => {
    const shed = new GateError('overloaded');
    const busy = { ...deps, shedder: { refusal: () => shed } as unknown as GateDeps['shedder'] };
    const r = ctx({ raw: { url: `${PREFIX}/healthz` } });
    CHECKS.shedding(busy)!(r);
    expect(r.gatePath).toBe(`${PREFIX}/healthz`);
    expect(() => CHECKS.shedding(busy)!(ctx())).toThrow(shed);
    const bad = ctx({ raw: { url: '/%zz' } });
    expect(() => CHECKS.shedding(busy)!(bad)).toThrow(shed);
    CHECKS.shedding(deps)!(bad);
    expect(bad.gatePath).toBeNull();
  });

  it('draining refuses with connection: close, but not the health endpoints', () => {
    const draining = { ...deps, state: { draining: true } };
    expect(() => CHECKS.draining(draining)!(ctx({ gatePath: '/api/x' }))).toThrow(expect.objectContaining({ code: 'overloaded', headers: expect.objectContaining({ connection: 'close' }) }));
    expect(CHECKS.draining(draining)!(ctx({ gatePath: `${PREFIX}/readyz` }))).toBeUndefined();
  });

  it('path policy: an undecodable path is 400, a gate path on a host route 404, no route (an unknown method) is left to the not-found handler', async () => {
    expect(await outcome('path_policy', ctx({ raw: raw({ url: '/%zz' }), gatePath: null }))).toBe('request_malformed');
    expect(await outcome('path_policy', ctx({ gatePath: `${PREFIX}/v1/x`, routeOptions: { url: '/*' } }))).toBe('not_found');
    expect(await outcome('path_policy', ctx({ gatePath: `${PREFIX}/v1/x`, routeOptions: {} }))).toBe('pass');
    expect(await outcome('path_policy', ctx({ gatePath: '/api/x' }))).toBe('pass');
  });

  it('path policy: more header lines than the cap, or HTTP/1.1 without Host, is 400', async () => {
    const lines = (n: number) => Array.from({ length: n }, (_, i) => [`x-${i}`, 'v']).flat();
    expect(await outcome('path_policy', ctx({ gatePath: '/api/x', raw: raw({ rawHeaders: lines(100) }) }))).toBe('pass');
    expect(await outcome('path_policy', ctx({ gatePath: '/api/x', raw: raw({ rawHeaders: lines(101) }) }))).toBe('request_malformed');
    expect(await outcome('path_policy', ctx({ gatePath: '/api/x', raw: raw({ headers: {} }) }))).toBe('request_malformed');
    expect(await outcome('path_policy', ctx({ gatePath: '/api/x', raw: raw({ headers: {}, httpVersion: '1.0' }) }))).toBe('pass');
  });
});

describe('identity rows', () => {
  it('forwarded address: the signed x-gate-fwd-addr replaces the peer address', () => {
    const r = ctx({ headers: { 'x-gate-fwd-addr': '203.0.113.7' } });
    check('forwarded_address')(r);
    expect(r.clientAddress).toBe('203.0.113.7');
  });

  it('revocation off is no row at all; identity rows exist only for their mode', () => {
    expect(CHECKS.revocation(deps)).toBeUndefined();
    expect(CHECKS.identity_direct(deps)).toBeUndefined();
    expect(CHECKS.identity_forwarded(deps)).toBeUndefined();
  });

  it('deny list: fail closed until read, then agent_denied for a live entry', async () => {
    const fresh = new DenyList({ store: new MemoryStore(10), now: Date.now });
    expect(() => CHECKS.deny_list({ ...deps, denyList: fresh })!(ctx())).toThrow(expect.objectContaining({ code: 'store_unavailable' }));
    await denyList.refresh(true);
    expect(await outcome('deny_list', ctx())).toBe('pass');
    await denyList.deny({ agent_id: agent.agentId, reason: 'test' });
    expect(await outcome('deny_list', ctx())).toBe('agent_denied');
    expect(await outcome('deny_list', ctx({ agent: { ...agent, agentId: 'urn:agent:b', thumbprint: 'U'.repeat(43) } }))).toBe('pass');
  });
});

describe('limits', () => {
  it('challenge limits: identity, then address (its load kept for adaptive pow); cooldown', async () => {
    const r = ctx({ agent: { ...agent, thumbprint: 'L'.repeat(43) } });
    expect(await outcome('limit_challenge_address', r)).toBe('pass');
    expect(r.ipLoad).toBe(0.5);
    expect(await outcome('limit_challenge_identity', r)).toBe('pass');
    expect(await outcome('limit_challenge_identity', r)).toBe('pass');
    expect(await outcome('limit_challenge_identity', r)).toBe('rate_limited');
    expect(await outcome('cooldown', r)).toBe('pass');
    await deps.limits!.failedProof('L'.repeat(43));
    await deps.limits!.failedProof('L'.repeat(43));
    const err = await Promise.resolve(check('cooldown')(r)).catch((e: GateError) => e);
    expect(err).toMatchObject({ code: 'rate_limited', reason: 'failed_proof_cooldown' });
  });

  it('the proxy limit is synchronous', () => {
    const r = ctx({ agent: { ...agent, thumbprint: 'P'.repeat(43) } });
    expect(check('limit_proxy')(r)).toBeUndefined();
  });
});

describe('token rows', () => {
  it('bearer: missing, another scheme, empty, invalid, then a verified token kept on the request', async () => {
    expect(await outcome('bearer', ctx())).toBe('token_missing');
    expect(await outcome('bearer', ctx({ headers: { authorization: 'Basic abc' } }))).toBe('token_missing');
    expect(await outcome('bearer', ctx({ headers: { authorization: 'Bearer   ' } }))).toBe('token_invalid');
    expect(await outcome('bearer', ctx({ headers: { authorization: 'Bearer x.y.z' } }))).toBe('token_invalid');
    const { token } = await tokens.issue(agent.agentId, agent.thumbprint);
    const r = ctx({ headers: { authorization: `bEaReR ${token}` } });
    expect(check('bearer')(r)).toBeUndefined();
    expect(r.accessToken).toMatchObject({ thumbprint: agent.thumbprint });
  });

  it('token binding: the token of another certificate is 403 and is not kept', async () => {
    const { token } = await tokens.issue(agent.agentId, 'O'.repeat(43));
    const r = ctx({ headers: { authorization: `Bearer ${token}` } });
    check('bearer')(r);
    expect(await outcome('token_binding', r)).toBe('token_binding_mismatch');
    expect(r.accessToken).toBeNull();
  });
});

describe('token endpoint rows', () => {
  const record = { nonce: 'n'.repeat(43), aud: 'https://api.test', issuedAt: 0, expiresAt: 1000, thumbprint: agent.thumbprint, powDifficulty: 0 };

  it('content type, then JSON shape', async () => {
    expect(await outcome('content_type', ctx({ headers: { 'content-type': 'text/plain' } }))).toBe('unsupported_media_type');
    expect(await outcome('content_type', ctx({ headers: { 'content-type': 'Application/JSON; charset=utf-8' } }))).toBe('pass');
    expect(await outcome('json_shape', ctx({ body: Buffer.from('[]') }))).toBe('request_malformed');
    expect(await outcome('json_shape', ctx({ body: Buffer.from('{"challenge_id":"short","proof":"x"}') }))).toBe('request_malformed');
    const r = ctx({ body: Buffer.from(JSON.stringify({ challenge_id: 'A'.repeat(22), proof: 'p', extra: 1 })) });
    expect(await outcome('json_shape', r)).toBe('pass');
    expect(r.exchange).toEqual({ challengeId: 'A'.repeat(22), proof: 'p', work: undefined, attestation: undefined });
  });

  it('challenge consume: unknown is 404, the second attempt 409', async () => {
    await deps.store.putChallenge('C'.repeat(22), record, 60_000);
    const r = () => ctx({ exchange: { challengeId: 'C'.repeat(22), proof: 'p' } });
    expect(await outcome('challenge_consume', ctx({ exchange: { challengeId: 'D'.repeat(22), proof: 'p' } }))).toBe('challenge_unknown');
    const first = r();
    expect(await outcome('challenge_consume', first)).toBe('pass');
    expect(first.exchange!.record).toEqual(record);
    expect(await outcome('challenge_consume', r())).toBe('challenge_replayed');
  });

  it('on time, same certificate, proof of work', async () => {
    const at = (receivedAt: number, rec = record, work?: string) => ctx({ receivedAt, exchange: { challengeId: 'C'.repeat(22), proof: 'p', record: rec, work } });
    expect(await outcome('on_time', at(1000))).toBe('pass');
    expect(await outcome('on_time', at(1001))).toBe('challenge_expired');
    expect(await outcome('challenge_binding', at(0, { ...record, thumbprint: 'X'.repeat(43) }))).toBe('challenge_binding_mismatch');
    const hard = { ...record, powDifficulty: 8 };
    expect(await outcome('pow', at(0, hard))).toBe('pow_invalid');
    let work = 0;
    while (createHash('sha256').update(`${hard.nonce}.${work}`).digest()[0] !== 0) work++;
    expect(await outcome('pow', at(0, hard, String(work)))).toBe('pass');
  });

  it('attestation: without issuers a presented attestation is refused, none is fine', async () => {
    const r = (attestation?: string) => ctx({ exchange: { challengeId: 'C'.repeat(22), proof: 'p', record, attestation } });
    expect(await outcome('attestation', r('a.b.c'))).toBe('attestation_invalid');
    expect(await outcome('attestation', r())).toBe('pass');
  });
});

describe('runner', () => {
  const reply = {} as FastifyReply;

  it('stays synchronous while the checks are: done is called before runChecks returns', () => {
    const seen: string[] = [];
    const checks: Check[] = [() => void seen.push('a'), () => void seen.push('b')];
    let done = false;
    runChecks(checks, 0, ctx(), reply, () => (done = true), () => seen.push('refused'));
    expect(done).toBe(true);
    expect(seen).toEqual(['a', 'b']);
  });

  it('waits only for a check that returns a promise, then goes on; the first refusal stops the table', async () => {
    const seen: string[] = [];
    const checks: Check[] = [() => void seen.push('sync'), () => Promise.resolve().then(() => void seen.push('async')), () => void seen.push('after')];
    await new Promise<void>((resolve, reject) => runChecks(checks, 0, ctx(), reply, () => resolve(), (_q, _r, err) => reject(err as Error)));
    expect(seen).toEqual(['sync', 'async', 'after']);
    const refused: unknown[] = [];
    const failing: Check[] = [() => Promise.reject(new GateError('agent_denied')), () => void seen.push('never')];
    await new Promise<void>((resolve) => runChecks(failing, 0, ctx(), reply, () => resolve(), (_q, _r, err) => (refused.push(err), resolve())));
    expect(refused).toEqual([expect.objectContaining({ code: 'agent_denied' })]);
    expect(seen).not.toContain('never');
  });

  it('anything but a GateError is answered as 500 internal_error', () => {
    expect(toRefusal(new TypeError('x'))).toMatchObject({ code: 'internal_error', status: 500 });
    expect(toRefusal(new GateError('store_unavailable'))).toMatchObject({ code: 'store_unavailable', status: 503 });
  });
});

describe('status from the catalog alone', () => {
  it('a reason picks a listed exception, nothing else changes a status', () => {
    expect(new GateError('forwarded_signature_invalid', { reason: 'forwarded_headers_missing' }).status).toBe(401);
    expect(new GateError('forwarded_signature_invalid').status).toBe(403);
    expect(new GateError('rate_limited', { reason: 'forwarded_headers_missing' }).status).toBe(429);
  });
});
