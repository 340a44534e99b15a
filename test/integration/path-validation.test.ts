/**
 * Issue 13 class 1: client-certificate path validation at least as strict as RFC 5280 /
 * OpenSSL, against real gates in both modes. Direct mode over real TLS (OpenSSL's verdict in
 * the handshake is the first gate), forwarded mode with headers signed as nginx signs them
 * (the gate validates the forwarded leaf itself, with pkijs). Every certificate is made by
 * the openssl CLI; `openssl verify -purpose sslclient` confirms what each case is about.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { canonicalString, signCanonical, thumbprintOf } from '../../src/identity/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { codeIn, RAW_CHALLENGE, tlsExchange } from '../helpers/http.js';
import { caExt, leafExt, OpensslPki } from '../helpers/openssl-pki.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const K1 = randomBytes(32);
let fx: Fixtures;
let up: RecordingUpstream;
let direct: RunningGate;
let forwarded: RunningGate;
const o = new OpensslPki();
let root: KeyAndCert;
const cas: Record<string, KeyAndCert> = {};
/** name -> [leaf, intermediates above it (leaf's issuer first)] */
const cases: Record<string, { leaf: KeyAndCert; above: KeyAndCert[] }> = {};
let foreignRoot: KeyAndCert;

const UNKNOWN_CRITICAL = '1.3.6.1.4.1.55555.1.1=critical,ASN1:NULL';

async function leaf(name: string, issuer: KeyAndCert, above: KeyAndCert[], san: string, extra: string[] = [], ku?: string): Promise<void> {
  const c = await o.cert({ subj: `/CN=${name}`, ext: leafExt(san, extra, ku), keyPem: await o.key(), issuer });
  cases[name] = { leaf: c, above };
}

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  root = await o.cert({ subj: '/CN=path-validation root', ext: caExt(), keyPem: await o.key() });
  cas.dns = await o.cert({ subj: '/CN=dns-constrained sub-CA', ext: caExt(['nameConstraints=critical,permitted;DNS:good.example']), keyPem: await o.key(), issuer: root });
  cas.uri = await o.cert({ subj: '/CN=uri-constrained sub-CA', ext: caExt(['nameConstraints=critical,permitted;URI:.good.example']), keyPem: await o.key(), issuer: root });
  cas.crit = await o.cert({ subj: '/CN=sub-CA with unknown critical', ext: caExt([UNKNOWN_CRITICAL]), keyPem: await o.key(), issuer: root });
  // A certificate that is no CA, placed in GATE_CLIENT_CA, issuing an agent.
  cas.notCa = await o.cert({ subj: '/CN=not a CA', ext: ['basicConstraints=critical,CA:false', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid'], keyPem: await o.key(), issuer: root });
  foreignRoot = await o.cert({ subj: '/CN=path-validation root', ext: caExt(), keyPem: await o.key() });
  cas.foreignSub = await o.cert({ subj: '/CN=foreign sub-CA', ext: caExt(), keyPem: await o.key(), issuer: foreignRoot });

  await leaf('dns-inside', cas.dns, [cas.dns], 'DNS:agent.good.example');
  await leaf('dns-outside', cas.dns, [cas.dns], 'DNS:agent.evil.example');
  await leaf('uri-inside', cas.uri, [cas.uri], 'URI:https://agent.good.example/a');
  await leaf('uri-outside', cas.uri, [cas.uri], 'URI:https://agent.evil.example/a');
  await leaf('uri-urn', cas.uri, [cas.uri], 'URI:urn:agent:x.good.example');
  await leaf('leaf-critical', root, [], 'URI:urn:agent:leaf-critical', [UNKNOWN_CRITICAL]);
  await leaf('ca-critical', cas.crit, [cas.crit], 'URI:urn:agent:ca-critical');
  await leaf('key-encipherment', root, [], 'URI:urn:agent:key-encipherment', [], 'critical,keyEncipherment');
  await leaf('key-agreement', root, [], 'URI:urn:agent:key-agreement', [], 'critical,keyAgreement');
  await leaf('not-ca-issued', cas.notCa, [cas.notCa], 'URI:urn:agent:not-ca-issued');
  await leaf('untrusted', cas.foreignSub, [cas.foreignSub, foreignRoot], 'URI:urn:agent:untrusted');
  await leaf('control', root, [], 'URI:urn:agent:control');

  const directCa = join(fx.dir, 'pv-direct-ca.crt');
  const fwdCa = join(fx.dir, 'pv-forwarded-ca.crt');
  // Direct mode: the root (and the non-CA certificate); agents present their intermediates.
  writeFileSync(directCa, root.certPem + cas.notCa.certPem + fx.ca.certPem);
  // Forwarded mode: nginx forwards only the leaf, so the intermediates are in the bundle.
  writeFileSync(fwdCa, [root, cas.dns, cas.uri, cas.crit, cas.notCa].map((c) => c.certPem).join(''));
  direct = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_CLIENT_CA: directCa }));
  forwarded = await startGate(
    testEnv(fx, {
      GATE_MODE: 'forwarded',
      GATE_TLS_CERT: '',
      GATE_TLS_KEY: '',
      GATE_STORE: 'redis',
      GATE_REDIS_URL: inject('redisUrl'),
      GATE_UPSTREAM_URL: up.url,
      GATE_CLIENT_CA: fwdCa,
      GATE_FWD_HMAC_KEYS: `k1:${K1.toString('base64')}`,
      GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32,::1',
    }),
  );
  forwarded.url = forwarded.url.replace('https://', 'http://');
}, 60_000);

afterAll(async () => {
  await direct?.close();
  await forwarded?.close();
  await up?.close();
});

interface Answer {
  status: number;
  code?: string;
  reused: boolean;
  session?: Buffer;
}

/** POST P/v1/challenge over a fresh mTLS connection presenting leaf + `above`, resuming `session`. */
async function directChallenge(c: { leaf: KeyAndCert; above: KeyAndCert[] }, session?: Buffer): Promise<Answer> {
  const cert = c.leaf.certPem + c.above.map((a) => a.certPem).join('');
  const r = await tlsExchange(direct.url, { ca: fx.ca.certPem, cert, key: c.leaf.keyPem, session }, RAW_CHALLENGE);
  return { status: r.status, code: codeIn(r.body), reused: r.reused, session: r.session };
}

/** The same challenge through signed forwarded headers carrying `c.leaf` (verify SUCCESS). */
async function forwardedChallenge(c: { leaf: KeyAndCert }): Promise<{ status: number; code?: string }> {
  const ts = String(Math.floor(Date.now() / 1000));
  const id = randomBytes(16).toString('hex');
  const path = '/.agent-gate/v1/challenge';
  const canonical = canonicalString({ kid: 'k1', ts, id, method: 'POST', requestUri: path, host: 'gate.test', addr: '127.0.0.1', verify: 'SUCCESS', thumbprint: thumbprintOf(c.leaf.certDer) });
  const r = await request(`${forwarded.url}${path}`, {
    method: 'POST',
    headers: {
      host: 'gate.test',
      'x-gate-fwd-kid': 'k1',
      'x-gate-fwd-ts': ts,
      'x-gate-fwd-id': id,
      'x-gate-fwd-host': 'gate.test',
      'x-gate-fwd-addr': '127.0.0.1',
      'x-gate-fwd-verify': 'SUCCESS',
      'x-gate-fwd-cert': encodeURIComponent(c.leaf.certPem),
      'x-gate-fwd-sig': signCanonical(K1, canonical),
    },
  });
  const text = await r.body.text();
  return { status: r.statusCode, code: (JSON.parse(text) as { code?: string }).code };
}

const REFUSED: [string, string][] = [
  ['dns-outside', 'a sub-CA constrained to one DNS subtree issuing an agent outside it'],
  ['uri-outside', 'a sub-CA constrained to one URI subtree issuing an agent outside it'],
  ['uri-urn', 'a URI-constrained sub-CA issuing a URN agent (no host to judge)'],
  ['leaf-critical', 'an unknown critical extension on the agent certificate'],
  ['ca-critical', 'an unknown critical extension on the issuing CA'],
  ['key-encipherment', 'a keyEncipherment-only agent certificate (it signs proofs)'],
  ['key-agreement', 'a keyAgreement-only agent certificate (contract rule: OpenSSL would take it)'],
  ['not-ca-issued', 'an agent issued by a non-CA certificate placed in GATE_CLIENT_CA'],
  ['untrusted', 'a chain to a root outside GATE_CLIENT_CA (same subject name as the real root)'],
];

describe('openssl verify agrees on what each case is about', () => {
  it('controls pass, refused cases fail, keyAgreement-only is the contract\'s own extra rule', async () => {
    const bundle = root.certPem + cas.notCa!.certPem;
    for (const ok of ['dns-inside', 'uri-inside', 'control', 'key-agreement']) {
      const v = await o.verify(bundle, cases[ok]!.above, cases[ok]!.leaf);
      expect(v.ok, `${ok}: ${v.out}`).toBe(true);
    }
    for (const [name] of REFUSED.filter(([n]) => n !== 'key-agreement')) {
      const v = await o.verify(bundle, cases[name]!.above, cases[name]!.leaf);
      expect(v.ok, `${name}: ${v.out}`).toBe(false);
    }
  });
});

describe('direct mode (real TLS): OpenSSL verdict first, then the contract rules', () => {
  it('controls: inside the constrained subtrees and a plain agent get a challenge', async () => {
    for (const ok of ['dns-inside', 'uri-inside', 'control']) expect(await directChallenge(cases[ok]!), ok).toMatchObject({ status: 201 });
  });
  for (const [name, what] of REFUSED) {
    it(`${what}: 403 client_cert_invalid`, async () => {
      expect(await directChallenge(cases[name]!)).toMatchObject({ status: 403, code: 'client_cert_invalid' });
    });
  }
  it('a refused certificate stays refused on a resumed TLS session; an accepted one stays accepted', async () => {
    const bad = cases['dns-outside']!;
    const first = await directChallenge(bad);
    expect(first).toMatchObject({ status: 403, reused: false });
    expect(first.session).toBeInstanceOf(Buffer);
    expect(await directChallenge(bad, first.session)).toMatchObject({ status: 403, code: 'client_cert_invalid', reused: true });
    const good = cases['dns-inside']!;
    const g1 = await directChallenge(good);
    expect(await directChallenge(good, g1.session)).toMatchObject({ status: 201, reused: true });
  });
  it('chains OpenSSL refused cost no chain work of the gate', async () => {
    const resolver = direct.gate.services.identity.direct!;
    const before = { ...resolver.stats };
    for (const name of ['untrusted', 'dns-outside', 'ca-critical', 'not-ca-issued']) expect((await directChallenge(cases[name]!)).status).toBe(403);
    expect(resolver.stats).toEqual(before);
  });
});

describe('forwarded mode: the signed leaf is validated again against GATE_CLIENT_CA', () => {
  it('controls: inside the constrained subtrees and a plain agent get a challenge', async () => {
    for (const ok of ['dns-inside', 'uri-inside', 'control']) expect(await forwardedChallenge(cases[ok]!), ok).toMatchObject({ status: 201 });
  });
  for (const [name, what] of REFUSED) {
    it(`${what}: 403 client_cert_invalid`, async () => {
      expect(await forwardedChallenge(cases[name]!)).toMatchObject({ status: 403, code: 'client_cert_invalid' });
    });
  }
});
