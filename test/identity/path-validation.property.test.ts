/**
 * Property test of client-certificate path validation (issue 13 class 1) against `openssl
 * verify` as the oracle. fast-check generates chains (anchor -> 0..2 intermediates -> leaf)
 * with random name constraints (DNS/URI, permitted/excluded, on intermediates; fixed variants
 * on the anchors), agent SANs inside and outside them, known and unknown extensions marked
 * critical or not, keyUsage, basicConstraints (cA, pathLen), EKU and validity.
 *
 * - Forwarded mode (many runs): ForwardedPathValidator with the intermediates in the bundle,
 *   as forwarded mode requires, against `openssl verify -CAfile bundle+inters`.
 * - Direct mode (few runs): real TLS handshakes against a real gate, against `openssl verify
 *   -CAfile bundle -untrusted inters` (`-purpose sslclient` in both; no `-partial_chain`: the
 *   gate's listener does not set it, and neither mode takes a bundle intermediate as a root).
 *
 * The gate never accepts what OpenSSL refuses. Where the gate refuses what OpenSSL accepts,
 * the reason must be one of the contract's extra rules (section 2), named by its detail.
 * Keys are ECDSA P-256, generated once; the anchors are fixed (one gate, one bundle).
 */
import { execFile } from 'node:child_process';
import { webcrypto, X509Certificate, randomBytes } from 'node:crypto';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateError } from '../../src/errors.js';
import { checkAcceptedChain, TrustBundle } from '../../src/identity/certificate.js';
import { ForwardedPathValidator } from '../../src/identity/path-validation.js';
import { x509 } from '../../src/lib/x509.js';
import { derTlv } from '../helpers/der.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { codeIn, RAW_CHALLENGE, tlsExchange } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const execFileP = promisify(execFile);
const SEED = Number(process.env.AG_FUZZ_SEED ?? 20_251_207);
console.info(`[path-validation.property] fast-check seed ${SEED} (rerun with AG_FUZZ_SEED=${SEED})`);
const DAY = 86_400_000;
const ALG = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** Contract rules beyond OpenSSL's (section 2): the only reasons the gate may refuse a chain OpenSSL accepts. */
const EXTRA_RULES = /key usage present without digitalSignature|a CA certificate cannot be an agent certificate|more than one name-constrained CA|name constraint of form|below a name-constrained CA|name constraints on the agent certificate/;

interface Node {
  cert: X509Certificate;
  pem: string;
  keys: CryptoKeyPair;
}

const subtle = webcrypto.subtle;
const keyPool: CryptoKeyPair[] = [];
const ext = (oid: string, critical: boolean, value: Uint8Array) => new x509.Extension(oid, critical, value);
const UNKNOWN = '1.3.6.1.4.1.55555.7.1';
const NULL = new Uint8Array([0x05, 0x00]);

type Nc = 'none' | 'permDns' | 'exclDns' | 'permUri' | 'exclUri';
/** nameConstraints DER: one subtree, [0] permitted or [1] excluded; dNSName [2] or URI [6]. */
function nameConstraints(nc: Exclude<Nc, 'none'>): x509.Extension {
  const uri = nc.endsWith('Uri');
  const base = derTlv(uri ? 0x86 : 0x82, Buffer.from(uri ? '.good.example' : nc === 'exclDns' ? 'evil.example' : 'good.example'));
  const subtree = derTlv(0x30, base);
  const value = derTlv(0x30, derTlv(nc.startsWith('perm') ? 0xa0 : 0xa1, subtree));
  return ext('2.5.29.30', true, new Uint8Array(value));
}

interface CertSpec {
  subject: string;
  key: CryptoKeyPair;
  issuer?: Node;
  extensions: x509.Extension[];
  validity?: 'ok' | 'expired' | 'future';
}

let serial = 0;
async function make(s: CertSpec): Promise<Node> {
  const now = Date.now();
  const [from, to] = s.validity === 'expired' ? [now - 10 * DAY, now - DAY] : s.validity === 'future' ? [now + DAY, now + 10 * DAY] : [now - DAY, now + 10 * DAY];
  const ski = await x509.SubjectKeyIdentifierExtension.create(s.key.publicKey);
  const extensions = [...s.extensions, ski];
  if (s.issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(s.issuer.keys.publicKey));
  const c = await x509.X509CertificateGenerator.create({
    serialNumber: `40${(++serial).toString(16).padStart(4, '0')}${randomBytes(6).toString('hex')}`,
    subject: s.subject,
    issuer: s.issuer ? s.issuer.cert.subject : s.subject,
    notBefore: new Date(from),
    notAfter: new Date(to),
    signingAlgorithm: ALG,
    publicKey: s.key.publicKey,
    signingKey: (s.issuer?.keys ?? s.key).privateKey,
    extensions,
  });
  const pem = c.toString('pem') + '\n';
  return { cert: new X509Certificate(pem), pem, keys: s.key };
}

const caExts = (extra: x509.Extension[] = [], pathLen?: number) => [
  new x509.BasicConstraintsExtension(true, pathLen, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ...extra,
];

// ---------------------------------------------------------------------------------------------
// generated chains

const interArb = fc.record({
  nc: fc.constantFrom<Nc>('none', 'none', 'permDns', 'exclDns', 'permUri', 'exclUri'),
  ca: fc.constantFrom(true, true, true, true, false),
  ku: fc.constantFrom('certSign', 'certSign', 'certSign', 'absent', 'digitalSignature'),
  pathLen: fc.constantFrom(undefined, undefined, 0, 1),
  eku: fc.constantFrom('none', 'none', 'none', 'clientAuth', 'serverAuth'),
  unknown: fc.constantFrom('none', 'none', 'critical', 'plain'),
  validity: fc.constantFrom<'ok' | 'expired'>('ok', 'ok', 'ok', 'ok', 'ok', 'expired'),
});
const leafArb = fc.record({
  san: fc.constantFrom<string>('DNS:agent.good.example', 'DNS:agent.evil.example', 'URI:https://agent.good.example/a', 'URI:https://agent.evil.example/a', 'URI:urn:agent:x', 'none'),
  ku: fc.constantFrom('digitalSignature', 'digitalSignature', 'keyEncipherment', 'keyAgreement', 'absent'),
  eku: fc.constantFrom('clientAuth', 'clientAuth', 'none', 'serverAuth', 'both'),
  ca: fc.constantFrom(false, false, false, false, true),
  unknown: fc.constantFrom('none', 'none', 'critical', 'plain'),
  criticalSan: fc.boolean(),
  validity: fc.constantFrom<'ok' | 'expired' | 'future'>('ok', 'ok', 'ok', 'ok', 'ok', 'expired', 'future'),
});
type InterSpec = typeof interArb extends fc.Arbitrary<infer T> ? T : never;
type LeafSpec = typeof leafArb extends fc.Arbitrary<infer T> ? T : never;

function unknownExt(u: string): x509.Extension[] {
  return u === 'none' ? [] : [ext(UNKNOWN, u === 'critical', NULL)];
}

function ekuExt(e: string): x509.Extension[] {
  if (e === 'none') return [];
  const list = e === 'both' ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage[e as 'clientAuth' | 'serverAuth']];
  return [new x509.ExtendedKeyUsageExtension(list)];
}

async function makeInter(i: InterSpec, n: number, issuer: Node): Promise<Node> {
  const ku = i.ku === 'absent' ? [] : [new x509.KeyUsagesExtension(i.ku === 'certSign' ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature, true)];
  return make({
    subject: `CN=generated intermediate ${n}`,
    key: keyPool[2 + n]!,
    issuer,
    validity: i.validity,
    extensions: [new x509.BasicConstraintsExtension(i.ca, i.ca ? i.pathLen : undefined, true), ...ku, ...(i.nc === 'none' ? [] : [nameConstraints(i.nc)]), ...ekuExt(i.eku), ...unknownExt(i.unknown)],
  });
}

async function makeLeaf(l: LeafSpec, issuer: Node): Promise<Node> {
  const kuFlag = { digitalSignature: x509.KeyUsageFlags.digitalSignature, keyEncipherment: x509.KeyUsageFlags.keyEncipherment, keyAgreement: x509.KeyUsageFlags.keyAgreement } as const;
  const san = l.san === 'none' ? [] : [new x509.SubjectAlternativeNameExtension([{ type: l.san.startsWith('DNS:') ? 'dns' : 'url', value: l.san.slice(4) }], l.criticalSan)];
  return make({
    subject: 'CN=generated agent',
    key: keyPool[1]!,
    issuer,
    validity: l.validity,
    extensions: [
      new x509.BasicConstraintsExtension(l.ca, undefined, true),
      ...(l.ku === 'absent' ? [] : [new x509.KeyUsagesExtension(kuFlag[l.ku as keyof typeof kuFlag], true)]),
      ...ekuExt(l.eku),
      ...san,
      ...unknownExt(l.unknown),
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// fixtures: keys, the fixed anchors, one direct-mode gate

let tmp: string;
let fx: Fixtures;
let up: RecordingUpstream;
let gate: RunningGate;
/** Anchors of GATE_CLIENT_CA (direct gate), by name. */
const anchors: Record<string, Node> = {};
let bundlePem = '';

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'agent-gate-pv-prop-'));
  for (let i = 0; i < 9; i++) keyPool.push((await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair);
  // keyPool: 0 spare, 1 leaf, 2..4 intermediates, 5.. anchors.
  const offRoot = await make({ subject: 'CN=off-bundle root', key: keyPool[0]!, extensions: caExts() });
  anchors.plain = await make({ subject: 'CN=prop root plain', key: keyPool[5]!, extensions: caExts() });
  anchors.constrained = await make({ subject: 'CN=prop root constrained', key: keyPool[6]!, extensions: caExts([nameConstraints('permDns')]) });
  // An intermediate alone in the bundle (its root is not): no anchor without partial chains.
  anchors.intermediate = await make({ subject: 'CN=prop bundle intermediate', key: keyPool[7]!, issuer: offRoot, extensions: caExts([nameConstraints('exclDns')]) });
  // Must never issue: not a CA, and a CA with an unknown critical extension.
  anchors.notCa = await make({ subject: 'CN=prop bundle non-CA', key: keyPool[8]!, issuer: anchors.plain, extensions: [new x509.BasicConstraintsExtension(false, undefined, true)] });
  anchors.critical = await make({ subject: 'CN=prop root critical', key: keyPool[4]!, extensions: caExts(unknownExt('critical')) });
  bundlePem = Object.values(anchors).map((a) => a.pem).join('');
  writeFileSync(join(tmp, 'bundle.pem'), bundlePem);
  fx = await makeFixtures();
  up = await startUpstream();
  gate = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_CLIENT_CA: join(tmp, 'bundle.pem') }));
}, 60_000);

afterAll(async () => {
  await gate?.close();
  await up?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
/** `openssl verify -purpose sslclient`; the error line when it refuses. */
async function opensslVerify(caPem: string, untrusted: Node[], leaf: Node): Promise<{ ok: boolean; out: string }> {
  const base = join(tmp, `v${++seq}`);
  writeFileSync(`${base}.ca`, caPem);
  writeFileSync(`${base}.leaf`, leaf.pem);
  if (untrusted.length) writeFileSync(`${base}.u`, untrusted.map((n) => n.pem).join(''));
  const args = ['verify', '-purpose', 'sslclient', '-CAfile', `${base}.ca`, ...(untrusted.length ? ['-untrusted', `${base}.u`] : []), `${base}.leaf`];
  try {
    const r = await execFileP('openssl', args);
    return { ok: true, out: r.stdout };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stderr ?? ''}${e.stdout ?? ''}`.split('\n').find((l) => l.startsWith('error')) ?? 'refused' };
  }
}

const generated = fc.record({
  anchor: fc.constantFrom('plain', 'plain', 'constrained', 'intermediate', 'notCa', 'critical'),
  inters: fc.array(interArb, { maxLength: 2 }),
  leaf: leafArb,
});

/** anchor -> intermediates (top first) -> leaf. */
async function build(g: { anchor: string; inters: InterSpec[]; leaf: LeafSpec }): Promise<{ anchor: Node; inters: Node[]; leaf: Node }> {
  const anchor = anchors[g.anchor]!;
  const inters: Node[] = [];
  let issuer = anchor;
  for (const [n, i] of g.inters.entries()) inters.push((issuer = await makeInter(i, n, issuer)));
  return { anchor, inters, leaf: await makeLeaf(g.leaf, issuer) };
}

const tally: Record<string, number> = {};
const count = (k: string) => (tally[k] = (tally[k] ?? 0) + 1);

describe('forwarded mode: ForwardedPathValidator against openssl verify', () => {
  it('never accepts what openssl refuses; refuses what openssl accepts only by a named contract rule', async () => {
    await fc.assert(
      fc.asyncProperty(generated, async (g) => {
        const { anchor, inters, leaf } = await build(g);
        // nginx forwards only the leaf: the intermediates are bundle certificates (anchors).
        const pem = anchor.pem + inters.map((i) => i.pem).join('');
        const oracle = await opensslVerify(pem, [], leaf);
        let verdict: string;
        try {
          await new ForwardedPathValidator(new TrustBundle(pem)).validate(Buffer.from(leaf.cert.raw), Date.now());
          verdict = 'accepted';
        } catch (err) {
          if (!(err instanceof GateError) || err.code !== 'client_cert_invalid') throw err;
          verdict = err.detail ?? '';
        }
        const ctx = `${JSON.stringify(g)}: openssl ${oracle.ok ? 'OK' : oracle.out}, gate ${verdict}`;
        if (verdict === 'accepted') expect(oracle.ok, ctx).toBe(true);
        else if (oracle.ok) expect(verdict, ctx).toMatch(EXTRA_RULES);
        count(`fwd ${oracle.ok ? 'ok' : 'refused'}/${verdict === 'accepted' ? 'accepted' : 'refused'}`);
      }),
      { seed: SEED, numRuns: 60 },
    );
    console.info(`[path-validation.property] ${JSON.stringify(tally)}`);
    // The generator must reach both verdicts, or the comparison says nothing.
    expect(tally['fwd ok/accepted'] ?? 0).toBeGreaterThan(3);
    expect(tally['fwd refused/refused'] ?? 0).toBeGreaterThan(3);
  }, 60_000);
});

/** POST P/v1/challenge over a fresh mTLS connection presenting the leaf and intermediates (nearest first). */
async function challenge(leaf: Node, above: Node[], keyPem: string): Promise<{ status: number; code?: string }> {
  const r = await tlsExchange(gate.url, { ca: fx.ca.certPem, cert: leaf.pem + above.map((a) => a.pem).join(''), key: keyPem }, RAW_CHALLENGE);
  return { status: r.status, code: codeIn(r.body) };
}

describe('direct mode: real TLS against a real gate, openssl verify as the oracle', () => {
  it('never accepts what openssl refuses; refuses what openssl accepts only by a named contract rule', async () => {
    const leafKeyPem = `-----BEGIN PRIVATE KEY-----\n${Buffer.from(await subtle.exportKey('pkcs8', keyPool[1]!.privateKey)).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`;
    const seen: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(generated, async (g) => {
        const { anchor, inters, leaf } = await build(g);
        const above = [...inters].reverse();
        const oracle = await opensslVerify(bundlePem, above, leaf);
        const r = await challenge(leaf, above, leafKeyPem);
        const ctx = `${JSON.stringify(g)}: openssl ${oracle.ok ? 'OK' : oracle.out}, gate ${r.status} ${r.code ?? ''}`;
        expect([201, 403], ctx).toContain(r.status);
        if (r.status === 201) expect(oracle.ok, ctx).toBe(true);
        else {
          expect(r.code, ctx).toBe('client_cert_invalid');
          if (oracle.ok) {
            // Name the reason: the contract's rules on the chain OpenSSL accepted, in process.
            let reason = 'accepted in process';
            try {
              checkAcceptedChain([leaf.cert, ...above.map((a) => a.cert), anchor.cert], new TrustBundle(bundlePem), Date.now());
            } catch (err) {
              reason = (err as GateError).detail ?? '';
            }
            expect(reason, ctx).toMatch(EXTRA_RULES);
          }
        }
        const k = `${oracle.ok ? 'ok' : 'refused'}/${r.status}`;
        seen[k] = (seen[k] ?? 0) + 1;
      }),
      { seed: SEED, numRuns: 15 },
    );
    console.info(`[path-validation.property] direct ${JSON.stringify(seen)}`);
    expect(seen['ok/201'] ?? 0).toBeGreaterThan(0);
    expect(seen['refused/403'] ?? 0).toBeGreaterThan(0);
  }, 60_000);

  it('bundle certificates that are not roots of a valid path issue nothing: an intermediate alone, a non-CA, a root with an unknown critical extension (both modes, as openssl)', async () => {
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${Buffer.from(await subtle.exportKey('pkcs8', keyPool[1]!.privateKey)).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`;
    for (const a of [anchors.intermediate!, anchors.notCa!, anchors.critical!]) {
      const l = await makeLeaf({ san: 'URI:urn:agent:bad-anchor', ku: 'digitalSignature', eku: 'clientAuth', ca: false, unknown: 'none', criticalSan: false, validity: 'ok' }, a);
      expect((await opensslVerify(bundlePem, [], l)).ok, a.cert.subject).toBe(false);
      expect(await challenge(l, [], keyPem), a.cert.subject).toMatchObject({ status: 403, code: 'client_cert_invalid' });
      await expect(new ForwardedPathValidator(new TrustBundle(bundlePem)).validate(Buffer.from(l.cert.raw), Date.now()), a.cert.subject).rejects.toMatchObject({ code: 'client_cert_invalid' });
    }
    // Control: the same leaf under the plain root is accepted by all three.
    const ok = await makeLeaf({ san: 'URI:urn:agent:good-anchor', ku: 'digitalSignature', eku: 'clientAuth', ca: false, unknown: 'none', criticalSan: false, validity: 'ok' }, anchors.plain!);
    expect((await opensslVerify(bundlePem, [], ok)).ok).toBe(true);
    expect(await challenge(ok, [], keyPem)).toMatchObject({ status: 201 });
    expect((await new ForwardedPathValidator(new TrustBundle(bundlePem)).validate(Buffer.from(ok.cert.raw), Date.now())).agentId).toBe('urn:agent:good-anchor');
  });
});
