/**
 * Section 8: attestation JWTs from registered issuers raise the token's `att` level; anything
 * else is 403 attestation_invalid, and a required level without evidence is attestation_required.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateClient, type Challenge } from '../../src/client/index.js';
import { AttestationRegistry } from '../../src/attestation/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { closeAll } from '../helpers/suite.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let registryFile: string;
let vendorKey: KeyObject;
let otherKey: KeyObject;
const closers: (() => Promise<void>)[] = [];
const ISS = 'https://attest.vendor.test';

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  vendorKey = generateKeyPairSync('ed25519').privateKey;
  otherKey = generateKeyPairSync('ed25519').privateKey;
  const jwk = { ...(await exportJWK(vendorKey)), d: undefined, kid: 'v1' };
  registryFile = join(fx.dir, 'registry.json');
  writeFileSync(registryFile, JSON.stringify({ issuers: [{ iss: ISS, level: 2, jwks: { keys: [jwk] } }] }));
});
afterAll(async () => {
  await closeAll(closers.reverse());
  await up?.close();
});

async function gate(extra: Record<string, string> = {}): Promise<RunningGate> {
  const g = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_ATTESTATION_REGISTRY: registryFile, ...extra }));
  closers.push(() => g.close());
  return g;
}
function client(g: RunningGate, attestation?: (ch: Challenge, thumbprint: string) => Promise<string>): GateClient {
  const who = fx.agents.p256;
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost', attestation });
  closers.push(() => c.close());
  return c;
}
function attest(o: { key?: KeyObject; iss?: string; nonce?: (ch: Challenge) => string; thumbprint?: string; expS?: number } = {}) {
  return (ch: Challenge, thumbprint: string) =>
    new SignJWT({ nonce: o.nonce ? o.nonce(ch) : ch.nonce, cnf: { 'x5t#S256': o.thumbprint ?? thumbprint } })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'v1' })
      .setIssuer(o.iss ?? ISS)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + (o.expS ?? 60))
      .sign(o.key ?? vendorKey);
}
function claims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}
async function refusal(c: GateClient): Promise<{ status: number; code: string }> {
  return c.fetchToken().then(
    () => ({ status: 200, code: 'none' }),
    (e: { status: number; code: string }) => ({ status: e.status, code: e.code }),
  );
}

describe('attestation', () => {
  it('a valid attestation puts the issuer level in the token as att', async () => {
    const g = await gate();
    const t = await client(g, attest()).fetchToken();
    expect(claims(t.access_token).att).toBe(2);
    expect((await client(g, attest()).request('/attested')).status).toBe(200);
  });

  it('without attestation (none required) the token has no att claim', async () => {
    const g = await gate();
    expect(claims((await client(g).fetchToken()).access_token).att).toBeUndefined();
  });

  const bad: [string, Parameters<typeof attest>[0]][] = [
    ['wrong nonce', { nonce: () => 'x'.repeat(43) }],
    ['wrong subject (another certificate)', { thumbprint: 'A'.repeat(43) }],
    ['expired', { expS: -120 }],
    ['unknown issuer', { iss: 'https://evil.test' }],
    ['bad signature (another key)', { key: undefined }],
  ];
  for (const [name, o] of bad) {
    it(`${name}: 403 attestation_invalid`, async () => {
      const g = await gate();
      const opts = name.startsWith('bad signature') ? { key: otherKey } : o;
      expect(await refusal(client(g, attest(opts)))).toEqual({ status: 403, code: 'attestation_invalid' });
    });
  }

  it('GATE_ATTESTATION_REQUIRED: absent is 403 attestation_required; a lower level too; enough passes', async () => {
    expect(await refusal(client(await gate({ GATE_ATTESTATION_REQUIRED: '1' })))).toEqual({ status: 403, code: 'attestation_required' });
    expect(await refusal(client(await gate({ GATE_ATTESTATION_REQUIRED: '3' }), attest()))).toEqual({ status: 403, code: 'attestation_required' });
    expect(claims((await client(await gate({ GATE_ATTESTATION_REQUIRED: '2' }), attest()).fetchToken()).access_token).att).toBe(2);
  });

  it('a malformed registry stops the start, naming GATE_ATTESTATION_REGISTRY', async () => {
    const badFile = join(fx.dir, 'bad-registry.json');
    writeFileSync(badFile, JSON.stringify({ issuers: [{ iss: ISS, level: 9, jwks: { keys: [] } }] }));
    await expect(gate({ GATE_ATTESTATION_REGISTRY: badFile })).rejects.toThrow(/GATE_ATTESTATION_REGISTRY/);
    expect(() => AttestationRegistry.fromJson({ issuers: [] })).toThrow(TypeError);
  });
});
