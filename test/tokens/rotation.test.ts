/**
 * Token-signing keys and their rotation (PROTOCOL.md sections 4, 5, 11, 12): tokens signed by
 * the old key verify after the new key is added; JWKS lists both; after the old key is removed
 * its tokens are refused. Also every key source (`GATE_SIGNING_JWK`, `GATE_SIGNING_KEY_FILE`
 * with a JWK or a PKCS#8 PEM, the dev-only ephemeral key), the refusals of bad key material
 * naming the variable, and `agent-gate keygen`.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, KeyObject } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, decodeProtectedHeader, exportJWK, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGate, StartupError } from '../../src/app.js';
import { GateClient } from '../../src/client/index.js';
import { loadConfig } from '../../src/config/index.js';
import { generateSigningJwk, KeySourceError, loadSigningKeys, TokenService, type SigningKeySet } from '../../src/tokens/index.js';
import { runCliGateEnv } from '../helpers/cli.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { cliArgv } from '../helpers/serve.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let fx: Fixtures;
let up: RecordingUpstream;
let dir: string;
let key1: JWK;
let key2: JWK;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  dir = mkdtempSync(join(tmpdir(), 'ag-rotation-'));
  [key1, key2] = await Promise.all([generateSigningJwk(), generateSigningJwk()]);
});
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await up?.close();
});

/** The public half of a private JWK (what an operator keeps of a retired key). */
function publicOf(jwk: JWK): JWK {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid: jwk.kid, alg: jwk.alg, use: jwk.use };
}

/** RFC 7638 thumbprint from the required members only (kty, crv, x). */
function thumbprintOf(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x });
}

async function gate(extra: Record<string, string>): Promise<RunningGate> {
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, ...extra }));
  closers.push(() => g.close());
  return g;
}

function agent(who = fx.agents.ed25519) {
  const a = tlsAgent(fx, who);
  closers.push(() => a.close());
  return a;
}

async function tokenFrom(g: RunningGate, who = fx.agents.ed25519): Promise<string> {
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  closers.push(() => c.close());
  return c.getToken();
}

async function jwksKids(g: RunningGate): Promise<{ kids: string[]; keys: JWK[] }> {
  const r = await call(agent(), `${g.url}/.agent-gate/jwks.json`);
  expect(r.status).toBe(200);
  const keys = (r.json() as { keys: JWK[] }).keys;
  return { kids: keys.map((k) => k.kid!), keys };
}

/** A gated request carrying exactly `token` (no client retry with a fresh token). */
function gated(g: RunningGate, token: string, path = '/rotated') {
  return call(agent(), `${g.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
}

function startupViolations(env: Record<string, string>): Promise<{ variable: string; why: string }[]> {
  const { config, violations } = loadConfig(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, ...env }));
  expect(violations).toEqual([]);
  return buildGate(config!, { logger: false, warn: () => {} }).then(
    async (g) => {
      await g.close();
      return [];
    },
    (err: unknown) => {
      if (!(err instanceof StartupError)) throw err;
      return err.violations;
    },
  );
}

async function refusal(p: Promise<unknown>): Promise<KeySourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeySourceError);
  return err as KeySourceError;
}

describe('rotation across gates sharing upstream and CA', () => {
  it('old key added as a verifier: old tokens pass, JWKS lists both, new tokens use the new kid; removing it refuses old tokens', async () => {
    // Gate A: key1 only.
    const a = await gate({ GATE_SIGNING_JWK: JSON.stringify(key1) });
    const t1 = await tokenFrom(a);
    expect(decodeProtectedHeader(t1)).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt', kid: key1.kid });
    expect((await gated(a, t1)).status).toBe(200);
    expect((await jwksKids(a)).kids).toEqual([key1.kid]);

    // Gate B: key2 signs, key1 (public only) still verifies.
    const b = await gate({ GATE_SIGNING_JWK: JSON.stringify({ keys: [key2, publicOf(key1)] }) });
    const jwksB = await jwksKids(b);
    expect(jwksB.kids).toEqual([key2.kid, key1.kid]);
    for (const k of jwksB.keys) {
      expect(k).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
      expect(k).not.toHaveProperty('d');
    }
    const seenBefore = up.seen.length;
    const viaB = await gated(b, t1, '/rotated/old-token');
    expect(viaB.status).toBe(200);
    expect(up.seen.slice(seenBefore).map((s) => s.url)).toEqual(['/rotated/old-token']);
    const t2 = await tokenFrom(b);
    expect(decodeProtectedHeader(t2).kid).toBe(key2.kid);
    // The new token is signed by key2 (checked against the published JWK, not the gate's word).
    const pub2 = jwksB.keys.find((k) => k.kid === key2.kid)!;
    await expect(jwtVerify(t2, pub2, { algorithms: ['EdDSA'] })).resolves.toBeDefined();
    // Gate A never heard of key2.
    const onA = await gated(a, t2);
    expect([onA.status, onA.json().code]).toEqual([401, 'token_invalid']);

    // Gate C: the old key is removed.
    const c = await gate({ GATE_SIGNING_JWK: JSON.stringify(key2) });
    expect((await jwksKids(c)).kids).toEqual([key2.kid]);
    const refused = await gated(c, t1, '/rotated/refused');
    expect(refused.status).toBe(401);
    expect(refused.json().code).toBe('token_invalid');
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(up.seen.some((s) => s.url === '/rotated/refused')).toBe(false);
    // Tokens of the current key keep working there.
    expect((await gated(c, t2)).status).toBe(200);
  });

  it('a private key later in the set only verifies: the first key still signs', async () => {
    const b = await gate({ GATE_SIGNING_JWK: JSON.stringify({ keys: [key2, key1] }) });
    expect((await jwksKids(b)).kids).toEqual([key2.kid, key1.kid]);
    for (let i = 0; i < 3; i++) expect(decodeProtectedHeader(await tokenFrom(b, fx.agents.p256)).kid).toBe(key2.kid);
  });

  it('a token is bound to its certificate across gates too (token_binding_mismatch, not a kid problem)', async () => {
    const a = await gate({ GATE_SIGNING_JWK: JSON.stringify(key1) });
    const b = await gate({ GATE_SIGNING_JWK: JSON.stringify({ keys: [key2, publicOf(key1)] }) });
    const t = await tokenFrom(a, fx.agents.p256);
    const r = await call(agent(fx.agents.other), `${b.url}/x`, { headers: { authorization: `Bearer ${t}` } });
    expect([r.status, r.json().code]).toEqual([403, 'token_binding_mismatch']);
  });
});

describe('key sources', () => {
  it('GATE_SIGNING_KEY_FILE with a JWK file: the gate signs with it and publishes its kid', async () => {
    const file = join(dir, 'signing.jwk');
    writeFileSync(file, JSON.stringify(key1) + '\n', { mode: 0o600 });
    const set = await loadSigningKeys({ keyFile: file, allowEphemeral: false });
    expect(set.source).toBe('file');
    expect(set.keys.map((k) => k.kid)).toEqual([key1.kid]);
    const g = await gate({ GATE_SIGNING_KEY_FILE: file });
    expect((await jwksKids(g)).kids).toEqual([key1.kid]);
    const t = await tokenFrom(g);
    expect(decodeProtectedHeader(t).kid).toBe(key1.kid);
    await expect(jwtVerify(t, publicOf(key1), { algorithms: ['EdDSA'] })).resolves.toBeDefined();
  });

  it('GATE_SIGNING_KEY_FILE with a JWK Set file rotates like GATE_SIGNING_JWK', async () => {
    const file = join(dir, 'signing-set.jwks');
    writeFileSync(file, JSON.stringify({ keys: [key2, publicOf(key1)] }), { mode: 0o600 });
    const set = await loadSigningKeys({ keyFile: file, allowEphemeral: false });
    expect(set.keys.map((k) => [k.kid, Boolean(k.privateKey)])).toEqual([
      [key2.kid, true],
      [key1.kid, false],
    ]);
  });

  it('GATE_SIGNING_KEY_FILE with a PKCS#8 PEM Ed25519 key: kid is the RFC 7638 thumbprint', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const file = join(dir, 'signing.pem');
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const pubJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(pubJwk);
    const set = await loadSigningKeys({ keyFile: file, allowEphemeral: false });
    expect(set.source).toBe('file');
    expect(set.keys).toHaveLength(1);
    expect(set.keys[0]!.kid).toBe(kid);
    expect(set.keys[0]!.publicJwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', x: pubJwk.x, kid });
    const g = await gate({ GATE_SIGNING_KEY_FILE: file });
    expect((await jwksKids(g)).kids).toEqual([kid]);
    const t = await tokenFrom(g);
    expect(decodeProtectedHeader(t).kid).toBe(kid);
    await expect(jwtVerify(t, publicKey, { algorithms: ['EdDSA'] })).resolves.toBeDefined();
  });

  it('GATE_SIGNING_JWK wins over GATE_SIGNING_KEY_FILE (first found wins)', async () => {
    const file = join(dir, 'loser.jwk');
    writeFileSync(file, JSON.stringify(key1), { mode: 0o600 });
    const set = await loadSigningKeys({ jwk: JSON.stringify(key2), keyFile: file, allowEphemeral: false });
    expect(set.source).toBe('jwk');
    expect(set.keys.map((k) => k.kid)).toEqual([key2.kid]);
  });

  it('a JWK without kid gets its RFC 7638 thumbprint as kid', async () => {
    const { kid: _kid, ...noKid } = key1;
    const set = await loadSigningKeys({ jwk: JSON.stringify(noKid), allowEphemeral: false });
    expect(set.keys[0]!.kid).toBe(await thumbprintOf(key1));
    expect(set.keys[0]!.kid).toBe(key1.kid);
  });

  it('ten keys are accepted; the TokenService verifies a token of the last one', async () => {
    const more = await Promise.all(Array.from({ length: 9 }, () => generateSigningJwk()));
    const set = await loadSigningKeys({ jwk: JSON.stringify({ keys: [key2, ...more.map(publicOf)] }), allowEphemeral: false });
    expect(set.keys).toHaveLength(10);
    const lastAsSigner: SigningKeySet = await loadSigningKeys({ jwk: JSON.stringify(more[8]), allowEphemeral: false });
    const old = new TokenService({ keys: lastAsSigner, issuer: 'i', audience: 'a', ttlS: 60, skewS: 5 });
    const current = new TokenService({ keys: set, issuer: 'i', audience: 'a', ttlS: 60, skewS: 5 });
    const { token } = await old.issue('agent', 'thumb');
    await expect(current.verify(token)).resolves.toMatchObject({ sub: 'agent', thumbprint: 'thumb' });
  });

  it('dev without a key: ephemeral, with one warning; with a key: no warning', async () => {
    const warned: string[] = [];
    const { config } = loadConfig(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_SIGNING_JWK: JSON.stringify(key1) }));
    const withKey = await buildGate(config!, { logger: false, warn: (l) => warned.push(l) });
    expect(withKey.tokens.jwks().keys.map((k) => k.kid)).toEqual([key1.kid]);
    await withKey.close();
    expect(warned).toEqual([]);
    const { config: noKey } = loadConfig(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url }));
    const ephemeral = await buildGate(noKey!, { logger: false, warn: (l) => warned.push(l) });
    await ephemeral.close();
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/GATE_SIGNING_KEY_FILE/);
    const eph = await loadSigningKeys({ allowEphemeral: true });
    expect(eph.source).toBe('ephemeral');
    expect(eph.keys[0]!.privateKey).toBeInstanceOf(KeyObject);
  });
});

describe('bad key material is refused at start, naming the variable', () => {
  it('a P-256 JWK in GATE_SIGNING_JWK', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(privateKey);
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify(jwk), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
    expect(err.message).toMatch(/Ed25519/);
    const vs = await startupViolations({ GATE_SIGNING_JWK: JSON.stringify(jwk) });
    expect(vs.map((v) => v.variable)).toEqual(['GATE_SIGNING_JWK']);
  });

  it('a P-256 JWK later in a JWK Set (verifiers must be Ed25519 too)', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify({ keys: [key1, await exportJWK(publicKey)] }), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
  });

  it('an X25519 OKP JWK (right kty, wrong curve)', async () => {
    const { privateKey } = generateKeyPairSync('x25519');
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify(await exportJWK(privateKey)), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
  });

  it('a P-256 PKCS#8 PEM in GATE_SIGNING_KEY_FILE', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = join(dir, 'p256.pem');
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const err = await refusal(loadSigningKeys({ keyFile: file, allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_KEY_FILE');
    expect(err.message).toMatch(/Ed25519/);
    const vs = await startupViolations({ GATE_SIGNING_KEY_FILE: file });
    expect(vs.map((v) => v.variable)).toEqual(['GATE_SIGNING_KEY_FILE']);
  });

  it('a public (SPKI) PEM in GATE_SIGNING_KEY_FILE', async () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const file = join(dir, 'public.pem');
    writeFileSync(file, publicKey.export({ type: 'spki', format: 'pem' }));
    expect((await refusal(loadSigningKeys({ keyFile: file, allowEphemeral: true }))).variable).toBe('GATE_SIGNING_KEY_FILE');
  });

  it('a missing or unreadable key file names GATE_SIGNING_KEY_FILE', async () => {
    expect((await refusal(loadSigningKeys({ keyFile: join(dir, 'nope.jwk'), allowEphemeral: true }))).variable).toBe('GATE_SIGNING_KEY_FILE');
    const vs = await startupViolations({ GATE_SIGNING_KEY_FILE: join(dir, 'nope.jwk') });
    expect(vs.map((v) => v.variable)).toEqual(['GATE_SIGNING_KEY_FILE']);
  });

  it('the first key without "d" (a lone public JWK, or a set starting with a public key)', async () => {
    for (const jwk of [publicOf(key1), { keys: [publicOf(key1), key2] }]) {
      const err = await refusal(loadSigningKeys({ jwk: JSON.stringify(jwk), allowEphemeral: true }));
      expect(err.variable).toBe('GATE_SIGNING_JWK');
      expect(err.message).toMatch(/private|"d"/);
    }
    const vs = await startupViolations({ GATE_SIGNING_JWK: JSON.stringify({ keys: [publicOf(key1), key2] }) });
    expect(vs.map((v) => v.variable)).toEqual(['GATE_SIGNING_JWK']);
  });

  it('a JWK Set of 11 keys, and an empty one', async () => {
    const more = await Promise.all(Array.from({ length: 10 }, () => generateSigningJwk()));
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify({ keys: [key1, ...more.map(publicOf)] }), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
    expect(err.message).toMatch(/10/);
    const file = join(dir, 'eleven.jwks');
    writeFileSync(file, JSON.stringify({ keys: [key1, ...more.map(publicOf)] }), { mode: 0o600 });
    expect((await refusal(loadSigningKeys({ keyFile: file, allowEphemeral: true }))).variable).toBe('GATE_SIGNING_KEY_FILE');
    expect((await refusal(loadSigningKeys({ jwk: '{"keys":[]}', allowEphemeral: true }))).variable).toBe('GATE_SIGNING_JWK');
  });

  it('a duplicate kid: two keys claiming one kid, or one key listed twice', async () => {
    const clash = { keys: [key1, { ...publicOf(key2), kid: key1.kid }] };
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify(clash), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
    expect(err.message).toMatch(/duplicate kid/);
    const { kid: _k, ...noKid } = publicOf(key1);
    const twice = { keys: [key1, noKid] };
    expect((await refusal(loadSigningKeys({ jwk: JSON.stringify(twice), allowEphemeral: true }))).message).toMatch(/duplicate kid/);
    const vs = await startupViolations({ GATE_SIGNING_JWK: JSON.stringify(clash) });
    expect(vs.map((v) => v.variable)).toEqual(['GATE_SIGNING_JWK']);
  });

  it('a private JWK whose "x" is not the public half of its "d" (inconsistent key material)', async () => {
    // Node derives the public key from "d" alone, so without a check the gate would publish a
    // different "x" under the declared kid, and the operator's copy of the public half (the
    // "x" in the file) would never verify the tokens this key signed.
    const mixed = { ...key1, d: key2.d };
    const err = await refusal(loadSigningKeys({ jwk: JSON.stringify(mixed), allowEphemeral: true }));
    expect(err.variable).toBe('GATE_SIGNING_JWK');
  });

  it('text that is neither JWK nor PEM', async () => {
    expect((await refusal(loadSigningKeys({ jwk: 'not a key', allowEphemeral: true }))).variable).toBe('GATE_SIGNING_JWK');
  });

  it('no key outside dev names GATE_SIGNING_KEY_FILE', async () => {
    const err = await refusal(loadSigningKeys({ allowEphemeral: false }));
    expect(err.variable).toBe('GATE_SIGNING_KEY_FILE');
  });
});

/** Runs the CLI in-process (the real command tree) with no GATE_* of the runner. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runCliGateEnv(args, env);
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

async function expectGoodKeygenJwk(jwk: JWK): Promise<void> {
  expect(jwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
  expect(typeof jwk.d).toBe('string');
  expect(jwk.kid).toBe(await thumbprintOf(jwk));
  const set = await loadSigningKeys({ jwk: JSON.stringify(jwk), allowEphemeral: false });
  expect(set.keys[0]!.kid).toBe(jwk.kid);
  expect(set.keys[0]!.privateKey).toBeDefined();
}

describe('agent-gate keygen', () => {
  it('generateSigningJwk: kid is the RFC 7638 thumbprint, each key is new', async () => {
    await expectGoodKeygenJwk(key1);
    await expectGoodKeygenJwk(key2);
    expect(key1.kid).not.toBe(key2.kid);
    expect(key1.d).not.toBe(key2.d);
  });

  it('--out F writes a 0600 private JWK (kid = thumbprint) and refuses to overwrite; without --out it prints to stdout', async () => {
    const out = join(dir, 'keygen.jwk');
    const existing = join(dir, 'existing.jwk');
    writeFileSync(existing, 'keep me\n');
    chmodSync(existing, 0o640);
    const [written, stdout, overwrite] = await Promise.all([cli(['keygen', '--out', out]), cli(['keygen']), cli(['keygen', '--out', existing])]);

    expect(written.code, written.stderr).toBe(0);
    expect(written.stdout).toBe('');
    expect(written.stderr).toContain('GATE_SIGNING_KEY_FILE');
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const fileJwk = JSON.parse(readFileSync(out, 'utf8')) as JWK;
    await expectGoodKeygenJwk(fileJwk);
    expect((await loadSigningKeys({ keyFile: out, allowEphemeral: false })).keys[0]!.kid).toBe(fileJwk.kid);
    // ... and a second run into the same file is refused, leaving it intact.
    const again = await cli(['keygen', '--out', out]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/EEXIST|exists/i);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(fileJwk);

    expect(overwrite.code).not.toBe(0);
    expect(readFileSync(existing, 'utf8')).toBe('keep me\n');
    expect(statSync(existing).mode & 0o777).toBe(0o640);

    expect(stdout.code, stdout.stderr).toBe(0);
    const lines = stdout.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const printed = JSON.parse(lines[0]!) as JWK;
    await expectGoodKeygenJwk(printed);
    expect(printed.kid).not.toBe(fileJwk.kid);
  });
});

describe('ephemeral key in dev (real `agent-gate serve`)', () => {
  it('prints one stderr line naming GATE_SIGNING_KEY_FILE, serves, and exits 0 on SIGTERM', async () => {
    const [port, adminPort] = [await freePort(), await freePort()];
    const env = testEnv(fx, {
      GATE_STORE: 'memory',
      GATE_UPSTREAM_URL: up.url,
      GATE_LISTEN: `127.0.0.1:${port}`,
      GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
      GATE_LOG_LEVEL: 'warn',
    });
    const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
    const child = spawn(process.execPath, [...cliArgv(), 'serve'], { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor(() => stderr.includes('GATE_SIGNING_KEY_FILE'), 30_000, `the ephemeral-key line (stderr: ${stderr})`, 50);
      // SIGTERM handling is installed once listening; wait for readiness so it is the drain that answers.
      await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, 30_000, `gate ready (stderr: ${stderr})`, 100);
      // The gate works with its ephemeral key: its token names the published kid.
      const jwks = (await call(agent(), `https://127.0.0.1:${port}/.agent-gate/jwks.json`)).json() as { keys: JWK[] };
      expect(jwks.keys).toHaveLength(1);
      const c = new GateClient({ baseUrl: `https://127.0.0.1:${port}`, cert: fx.agents.ed25519.certPem, key: fx.agents.ed25519.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
      closers.push(() => c.close());
      expect(decodeProtectedHeader(await c.getToken()).kid).toBe(jwks.keys[0]!.kid);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = stderr.split('\n').filter((l) => l.includes('GATE_SIGNING_KEY_FILE'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/ephemeral/);
      expect(lines[0]).toMatch(/keygen/);
      expect(stderr).not.toMatch(/config violation/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
