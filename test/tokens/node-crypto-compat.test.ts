/**
 * Access tokens on node:crypto (src/tokens/access-token.ts) against jose: tokens the gate signs
 * are byte-identical to the former jose SignJWT output for the same claims (Ed25519 signatures
 * are deterministic, so whole tokens are compared) and verify with jose's jwtVerify against the
 * JWKS; jose-signed tokens verify on the new path with the same result, across key rotation; a
 * fast-check property compares verdicts with the former jose verifier on hostile re-signed
 * tokens, where the only permitted difference is section 5's rule that `token_expired` answers
 * only when exp alone fails.
 */
import { createPrivateKey, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import fc from 'fast-check';
import { createLocalJWKSet, jwtVerify, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { GateError } from '../../src/errors.js';
import { isCanonicalBase64url } from '../../src/lib/b64url.js';
import { decodeCanonicalBase64url } from '../../src/lib/jws.js';
import { generateSigningJwk, loadSigningKeys, TokenService, type SigningKeySet } from '../../src/tokens/index.js';
import { joseIssue, joseVerifyToken, outcome, type JoseTokenOptions } from './jose-reference.js';

const O: JoseTokenOptions = { issuer: 'https://gate.compat', audience: 'compat-api', ttlS: 300, skewS: 30 };
const T0 = 1_764_000_000_500;
const NOW_S = T0 / 1000;
const TP = 'tp-compat-0123456789abcdefghijklmnopqrstuv';

let jwk1: JWK;
let jwk2: JWK;
let set1: SigningKeySet;
let set21: SigningKeySet;

beforeAll(async () => {
  [jwk1, jwk2] = await Promise.all([generateSigningJwk(), generateSigningJwk()]);
  set1 = await loadSigningKeys({ jwk: JSON.stringify(jwk1), allowEphemeral: false });
  // Rotation: key 2 signs, key 1 (public half only) still verifies.
  const pub1 = { kty: jwk1.kty, crv: jwk1.crv, x: jwk1.x, kid: jwk1.kid };
  set21 = await loadSigningKeys({ jwk: JSON.stringify({ keys: [jwk2, pub1] }), allowEphemeral: false });
});

const service = (keys: SigningKeySet, nowMs = T0) => new TokenService({ keys, ...O, now: () => nowMs });
const signerOf = (keys: SigningKeySet) => ({ kid: keys.keys[0]!.kid, privateKey: keys.keys[0]!.privateKey! });
const byKidOf = (keys: SigningKeySet) => new Map(keys.keys.map((k) => [k.kid, k]));
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;

describe('signing', () => {
  for (const att of [undefined, 0, 2]) {
    for (const agentId of ['urn:agent:compat', 'spiffe://example.org/ns/a/sa/b?x=1&y="z"', 'cn with spaces <and> \\ slashes']) {
      it(`byte-identical to jose SignJWT and verifies with jose against the JWKS (att ${att}, sub ${JSON.stringify(agentId).slice(0, 24)})`, async () => {
        for (const keys of [set1, set21]) {
          const svc = service(keys);
          const issued = await svc.issue(agentId, TP, att);
          const c = claimsOf(issued.token);
          expect(c.jti).toBe(issued.jti);
          const reference = await joseIssue(O, signerOf(keys), agentId, TP, c.iat as number, issued.jti, att);
          expect(issued.token).toBe(reference);

          const { payload, protectedHeader } = await jwtVerify(issued.token, createLocalJWKSet(svc.jwks()), {
            algorithms: ['EdDSA'],
            typ: 'at+jwt',
            issuer: O.issuer,
            audience: O.audience,
            currentDate: new Date(T0),
          });
          expect(protectedHeader).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid: keys.keys[0]!.kid });
          expect(payload).toEqual({ cnf: { 'x5t#S256': TP }, ...(att === undefined ? {} : { att }), iss: O.issuer, sub: agentId, aud: O.audience, iat: Math.floor(NOW_S), exp: Math.floor(NOW_S) + 300, jti: issued.jti });
        }
      });
    }
  }
});

describe('verification', () => {
  it('jose-signed tokens verify on the new path with the result of the former path, across rotation', async () => {
    const iat = Math.floor(NOW_S);
    const byOld = await joseIssue(O, signerOf(set1), 'urn:agent:compat', TP, iat, 'jti-1', 3);
    const byNew = await joseIssue(O, signerOf(set21), 'urn:agent:compat', TP, iat, 'jti-2');
    for (const token of [byOld, byNew]) {
      const now = service(set21).verifySync(token);
      expect(now).toEqual(await joseVerifyToken(O, byKidOf(set21), token, NOW_S));
      expect(now.thumbprint).toBe(TP);
    }
    expect(service(set21).verifySync(byOld).att).toBe(3);
    // A key taken out of the set: its tokens are refused, on both paths.
    const set2 = await loadSigningKeys({ jwk: JSON.stringify(jwk2), allowEphemeral: false });
    expect(await outcome(() => service(set2).verifySync(byOld))).toBe('token_invalid');
    expect(await outcome(() => joseVerifyToken(O, byKidOf(set2), byOld, NOW_S))).toBe('token_invalid');
    expect(await outcome(() => service(set2).verifySync(byNew))).toBe('ok');
  });

  it('exp boundary: token_expired from exactly the instant jose said so, and the cache agrees', async () => {
    const iat = Math.floor(NOW_S);
    const token = await joseIssue(O, signerOf(set1), 'urn:agent:compat', TP, iat, 'jti-exp');
    const exp = iat + O.ttlS;
    for (const dt of [-1, -0.5, -0.001, 0, 0.001, 0.999, 1, 2]) {
      const atS = exp + O.skewS + dt;
      const before = await outcome(() => joseVerifyToken(O, byKidOf(set1), token, atS));
      const fresh = await outcome(() => service(set1, atS * 1000).verifySync(token));
      expect(fresh, `exp + skew ${dt >= 0 ? '+' : ''}${dt}`).toBe(before);
      let clock = T0;
      const cached = new TokenService({ keys: set1, ...O, now: () => clock });
      cached.verifySync(token);
      clock = atS * 1000;
      expect(await outcome(() => cached.verifySync(token))).toBe(before);
    }
  });

  it('refusals of the former path, on the new one', async () => {
    const svc = service(set1);
    const good = (await svc.issue('urn:agent:compat', TP)).token;
    const [h, p, s] = good.split('.') as [string, string, string];
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const hs = `${enc({ alg: 'HS256', typ: 'at+jwt', kid: jwk1.kid })}.${p}`;
    const { createHmac } = await import('node:crypto');
    // A changed signature character in the middle (six whole bits): the last characters carry
    // unused bits, so replacing them can leave the signature's bytes as they were (a flake).
    const tampered = `${s.slice(0, 20)}${s[20] === 'A' ? 'B' : 'A'}${s.slice(21)}`;
    const variants = [
      `${h}.${p}.${tampered}`,
      `${hs}.${createHmac('sha256', JSON.stringify({ kty: jwk1.kty, crv: jwk1.crv, x: jwk1.x })).update(hs).digest('base64url')}`,
      `${enc({ alg: 'none', typ: 'at+jwt', kid: jwk1.kid })}.${p}.`,
      `${good}=`,
      `${h}.${p}.${s}\n`,
      `${h}.${p}`,
      'x'.repeat(9000),
      `${enc({ alg: 'EdDSA', typ: 'at+jwt', kid: 'nope' })}.${p}.${s}`,
    ];
    for (const t of variants) {
      const [before, now] = [await outcome(() => joseVerifyToken(O, byKidOf(set1), t, NOW_S)), await outcome(() => service(set1).verifySync(t))];
      expect(now, t.slice(0, 50)).toBe(before);
      expect(now).toBe('token_invalid');
    }
  });
});

describe('header matrix', () => {
  it('crit, b64 and typ spellings: the verdict of the former path, every combination', async () => {
    const signer = createPrivateKey({ key: jwk1 as never, format: 'jwk' });
    const nowS = Math.floor(NOW_S);
    const claims = Buffer.from(JSON.stringify({ iss: O.issuer, aud: O.audience, sub: 's', jti: 'j', iat: nowS, exp: nowS + 300, cnf: { 'x5t#S256': TP } })).toString('base64url');
    const verdicts = new Set<string>();
    for (const crit of [undefined, ['b64'], ['b64', 'b64'], ['exp'], ['b64', 'exp'], [], 'b64', [''], [1]]) {
      for (const b64 of [undefined, true, false, 'true', 1]) {
        for (const typ of ['at+jwt', 'AT+JWT', 'application/at+jwt', 'application/AT+jwt', 'JWT', undefined]) {
          const header = { alg: 'EdDSA', typ, kid: jwk1.kid, ...(crit === undefined ? {} : { crit }), ...(b64 === undefined ? {} : { b64 }) };
          const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${claims}`;
          const token = `${input}.${cryptoSign(null, Buffer.from(input), signer).toString('base64url')}`;
          const before = await outcome(() => joseVerifyToken(O, byKidOf(set1), token, NOW_S));
          expect(await outcome(() => service(set1).verifySync(token)), JSON.stringify(header)).toBe(before);
          verdicts.add(before);
        }
      }
    }
    expect([...verdicts].sort()).toEqual(['ok', 'token_invalid']);
  });
});

describe('property: node:crypto and jose agree on hostile re-signed tokens', () => {
  it('same verdict, except token_expired is kept for tokens where only exp fails', async () => {
    const signer = createPrivateKey({ key: jwk1 as never, format: 'jwk' });
    const other = generateKeyPairSync('ed25519').privateKey;
    const kid = String(jwk1.kid);
    const nowS = Math.floor(NOW_S);
    const weird = fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), fc.string({ maxLength: 6 }), fc.array(fc.oneof(fc.string({ maxLength: 3 }), fc.integer()), { maxLength: 2 }), fc.constant({}));
    const timeOf = (base: number) => fc.oneof(fc.constant(base), fc.integer({ min: -100, max: 100 }).map((d) => base + d), fc.constantFrom(base - O.skewS - 1, base - O.skewS, base + O.skewS, base + O.skewS + 1, base + 0.5, Infinity), weird);
    const edit = <T>(arb: fc.Arbitrary<T>) => fc.option(fc.oneof(arb.map((v) => ({ set: v as unknown })), fc.constant({ del: true as const })), { nil: undefined });
    const verdicts: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          alg: fc.constantFrom('EdDSA', 'none', 'HS256', 'Ed25519', 'eddsa', ''),
          typ: edit(fc.constantFrom('at+jwt', 'AT+JWT', 'application/at+jwt', 'Application/AT+JWT', 'JWT', 'at+jwt ', 'x/at+jwt', '')),
          kid: edit(fc.oneof(fc.constant(kid), fc.string({ maxLength: 4 }), fc.integer())),
          crit: edit(fc.constantFrom(['b64'], ['b64', 'b64'], ['exp'], [], 'b64', [''])),
          b64: edit(fc.constantFrom(true, false, 'true')),
          key: fc.constantFrom('self', 'other'),
          iss: edit(fc.constantFrom(O.issuer, `${O.issuer}/`, [O.issuer], '')),
          aud: edit(fc.oneof(fc.constantFrom(O.audience, [O.audience], ['x', O.audience], [1, O.audience], ['x'], ''), weird)),
          sub: edit(weird),
          jti: edit(weird),
          iat: edit(timeOf(nowS)),
          exp: edit(fc.oneof(timeOf(nowS + 300), fc.constantFrom(nowS - O.skewS, nowS - O.skewS + 1, nowS - 3600))),
          nbf: edit(timeOf(nowS)),
          cnf: edit(fc.constantFrom({ 'x5t#S256': TP }, { 'x5t#S256': 5 }, TP, {}, null)),
          shape: fc.constantFrom('object', 'object', 'object', 'array', 'bom', 'invalid-utf8'),
        }),
        fc.nat(2),
        fc.constantFrom('alg', 'typ', 'kid', 'crit', 'b64', 'key', 'iss', 'aud', 'sub', 'jti', 'iat', 'exp', 'exp', 'exp', 'nbf', 'cnf', 'shape'),
        async (all, mode, only) => {
          const c = { ...all };
          if (mode > 0) {
            const base = { alg: 'EdDSA', typ: undefined, kid: undefined, crit: undefined, b64: undefined, key: 'self', iss: undefined, aud: undefined, sub: undefined, jti: undefined, iat: undefined, exp: undefined, nbf: undefined, cnf: undefined, shape: 'object' };
            Object.assign(c, base, mode === 1 ? { [only]: all[only] } : {});
          }
          const header: Record<string, unknown> = { alg: c.alg, typ: 'at+jwt', kid };
          const claims: Record<string, unknown> = { iss: O.issuer, aud: O.audience, sub: 'urn:agent:p', jti: 'jti-p', iat: nowS, exp: nowS + 300, cnf: { 'x5t#S256': TP } };
          for (const [target, keys] of [[header, ['typ', 'kid', 'crit', 'b64']], [claims, ['iss', 'aud', 'sub', 'jti', 'iat', 'exp', 'nbf', 'cnf']]] as const) {
            for (const k of keys) {
              const e = (c as unknown as Record<string, { set: unknown } | { del: true } | undefined>)[k];
              if (e && 'del' in e) delete target[k];
              else if (e) target[k] = e.set;
            }
          }
          const sign = (cl: Record<string, unknown>) => {
            const json = c.shape === 'array' ? JSON.stringify([cl]) : JSON.stringify(cl);
            const bytes = c.shape === 'bom' ? Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json)]) : c.shape === 'invalid-utf8' ? Buffer.concat([Buffer.from(json.slice(0, -1)), Buffer.from([0xc3, 0x28]), Buffer.from('}')]) : Buffer.from(json);
            const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${bytes.toString('base64url')}`;
            return `${input}.${c.alg === 'none' ? '' : cryptoSign(null, Buffer.from(input), c.key === 'self' ? signer : other).toString('base64url')}`;
          };
          const token = sign(claims);
          const before = await outcome(() => joseVerifyToken(O, byKidOf(set1), token, NOW_S));
          const now = await outcome(() => service(set1).verifySync(token));
          verdicts[now] = (verdicts[now] ?? 0) + 1;
          const ctx = JSON.stringify({ header, claims, key: c.key, shape: c.shape });
          // Whether exp alone fails: the same token with a live exp is accepted.
          const liveExp = await outcome(() => joseVerifyToken(O, byKidOf(set1), sign({ ...claims, exp: nowS + 300 }), NOW_S));
          if (now === 'token_expired') expect(liveExp, ctx).toBe('ok');
          if (before === 'token_expired' && liveExp !== 'ok') expect(now, ctx).toBe('token_invalid');
          else expect(now, ctx).toBe(before);
        },
      ),
      { numRuns: 600 },
    );
    expect(verdicts.ok).toBeGreaterThan(20);
    expect(verdicts.token_expired).toBeGreaterThan(0);
    expect(verdicts.token_invalid).toBeGreaterThan(100);
  }, 120_000);
});

it('token_invalid, never a plain Error, for any string', async () => {
  const svc = service(set1);
  await fc.assert(
    fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 200 }), async (t) => {
      let err: unknown;
      try {
        svc.verifySync(t);
      } catch (e) {
        err = e;
      }
      // (Most of this test's ~4 s is fast-check building its full-Unicode 'binary' table once.)
      if (!(err instanceof GateError) || err.code !== 'token_invalid') throw new Error(`${JSON.stringify(t)}: ${String(err)}`);
    }),
    { numRuns: 300 },
  );
});

it('strict base64url without the re-encode: the same verdict as the decode/re-encode round trip', () => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const b64ish = fc.oneof(
    fc.array(fc.constantFrom(...alphabet), { maxLength: 12 }).map((a) => a.join('')),
    fc.array(fc.constantFrom(...alphabet, '=', '+', '/', ' ', '.', '\n'), { maxLength: 12 }).map((a) => a.join('')),
    fc.uint8Array({ maxLength: 9 }).map((b) => Buffer.from(b).toString('base64url')),
  );
  fc.assert(
    fc.property(b64ish, (s) => {
      const fast = decodeCanonicalBase64url(s);
      expect(fast !== undefined, JSON.stringify(s)).toBe(isCanonicalBase64url(s));
      if (fast) expect(fast.equals(Buffer.from(s, 'base64url'))).toBe(true);
    }),
    { numRuns: 3000 },
  );
});

it('token ids stay 128 random bits each across refills of the id pool: 22 base64url characters, all distinct', () => {
  const svc = service(set1);
  const ids = Array.from({ length: 1000 }, () => svc.issueSync('urn:agent:compat', TP).jti);
  for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  expect(new Set(ids).size).toBe(ids.length);
  // Another service draws its own ids.
  const other = new Set(Array.from({ length: 300 }, () => service(set1).issueSync('urn:agent:compat', TP).jti));
  for (const id of ids) expect(other.has(id)).toBe(false);
});
