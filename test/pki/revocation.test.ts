import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x509 } from '../../src/lib/x509.js';
import { runCli } from '../helpers/cli.js';
import { cliArgv } from '../helpers/serve.js';
import {
  buildOcspResponse,
  createCa,
  createCrl,
  initDevPki,
  issueAgentCert,
  issueAgentFiles,
  issueOcspSignerCert,
  readCaDatabase,
  readDevPkiConfig,
  revokeCertificate,
  startOcspResponder,
  writeCrl,
  type KeyAndCert,
  type OcspResponder,
} from '../../src/pki/index.js';

const execFileP = promisify(execFile);
const REPO = resolve(import.meta.dirname, '..', '..');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs openssl without blocking the event loop (our responder answers it from this very
 * process); a non-zero exit is a result to assert on. Bounded: no openssl call may hang a test.
 */
async function openssl(args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileP('openssl', args, { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

interface SingleStatus {
  serial: string;
  status: 'good' | 'revoked' | 'unknown';
  revokedAt?: number;
  reason?: number;
}

interface ParsedOcsp {
  /** OCSPResponseStatus: 0 successful, 1 malformedRequest, ... */
  status: number;
  responses: SingleStatus[];
  /** Hex of the echoed nonce extension value, when present. */
  nonce?: string;
  certs: number;
  thisUpdate?: number;
  nextUpdate?: number;
}

type Asn1Node = { idBlock: { tagNumber: number }; valueBlock: { value?: Asn1Node[]; valueDec?: number } } & { toDate?: () => Date };

/** Our own reading of a response, independent of the code under test: pkijs only. */
function parseOcsp(der: Buffer): ParsedOcsp {
  const resp = pkijs.OCSPResponse.fromBER(new Uint8Array(der));
  const status = resp.responseStatus.valueBlock.valueDec;
  if (!resp.responseBytes) return { status, responses: [], certs: 0 };
  const basic = pkijs.BasicOCSPResponse.fromBER(resp.responseBytes.response.valueBlock.valueHexView);
  const responses = basic.tbsResponseData.responses.map((r): SingleStatus => {
    const serial = Buffer.from(r.certID.serialNumber.valueBlock.valueHexView).toString('hex').toUpperCase().replace(/^00/, '');
    const cs = r.certStatus as Asn1Node;
    const tag = cs.idBlock.tagNumber;
    if (tag === 0) return { serial, status: 'good' };
    if (tag === 2) return { serial, status: 'unknown' };
    const [time, reason] = cs.valueBlock.value ?? [];
    return {
      serial,
      status: 'revoked',
      revokedAt: time?.toDate?.().getTime(),
      reason: reason?.valueBlock.value?.[0]?.valueBlock.valueDec,
    };
  });
  const nonce = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === '1.3.6.1.5.5.7.48.1.2');
  return {
    status,
    responses,
    nonce: nonce ? Buffer.from(nonce.extnValue.valueBlock.valueHexView).toString('hex') : undefined,
    certs: basic.certs?.length ?? 0,
    thisUpdate: basic.tbsResponseData.responses[0]?.thisUpdate.getTime(),
    nextUpdate: basic.tbsResponseData.responses[0]?.nextUpdate?.getTime(),
  };
}

function nonceOfRequest(der: Buffer): string | undefined {
  const req = pkijs.OCSPRequest.fromBER(new Uint8Array(der));
  const ext = req.tbsRequest.requestExtensions?.find((e) => e.extnID === '1.3.6.1.5.5.7.48.1.2');
  return ext ? Buffer.from(ext.extnValue.valueBlock.valueHexView).toString('hex') : undefined;
}

async function post(url: string, body: Buffer, contentType = 'application/ocsp-request'): Promise<{ status: number; type: string | null; der: Buffer }> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': contentType }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get('content-type'), der: Buffer.from(await res.arrayBuffer()) };
}

let tmp: string;
let seq = 0;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'agent-gate-revocation-'));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A fresh dev PKI directory with agents `good` and `bad`, `bad` revoked for keyCompromise. */
async function devPki(opts: { crlUrl?: string; ocspUrl?: string } = {}): Promise<{ dir: string; good: string; bad: string; badSerial: string }> {
  const dir = join(tmp, `pki-${++seq}`);
  await initDevPki(dir, opts);
  const good = (await issueAgentFiles(dir, 'good')).cert;
  const bad = (await issueAgentFiles(dir, 'bad')).cert;
  const badPem = await readFile(bad, 'utf8');
  await revokeCertificate(dir, badPem, { reason: 'keyCompromise' });
  return { dir, good, bad, badSerial: new X509Certificate(badPem).serialNumber };
}

/** An OCSP request made by openssl itself, the client the responder must understand. */
async function opensslRequest(dir: string, certPath: string, extra: string[] = []): Promise<Buffer> {
  const out = join(tmp, `req-${++seq}.der`);
  // Digest flags (-sha256) must come before -cert.
  const r = await openssl(['ocsp', ...extra, '-issuer', join(dir, 'ca.crt'), '-cert', certPath, '-reqout', out]);
  expect(r.code, r.stderr).toBe(0);
  return readFile(out);
}

/** openssl's own responder answering one request from `index.txt`, in -reqin/-respout mode: no socket at all. */
async function opensslRespond(dir: string, request: Buffer): Promise<Buffer> {
  const reqin = join(tmp, `oreq-${++seq}.der`);
  const respout = join(tmp, `oresp-${seq}.der`);
  await writeFile(reqin, request);
  const ca = join(dir, 'ca.crt');
  const r = await openssl(['ocsp', '-index', join(dir, 'index.txt'), '-CA', ca, '-rsigner', ca, '-rkey', join(dir, 'ca.key'), '-reqin', reqin, '-respout', respout, '-nmin', '5']);
  expect(r.code, r.stderr).toBe(0);
  return readFile(respout);
}

async function writeTemp(name: string, data: string | Buffer): Promise<string> {
  const path = join(tmp, `${++seq}-${name}`);
  await writeFile(path, data);
  return path;
}

describe('CA database (index.txt)', () => {
  it('records the server and agent certificates in openssl ca format', async () => {
    const { dir, good, bad, badSerial } = await devPki();
    const lines = (await readFile(join(dir, 'index.txt'), 'utf8')).split('\n').filter(Boolean);
    expect(lines).toHaveLength(3);
    const goodSerial = new X509Certificate(await readFile(good)).serialNumber;
    expect(lines[0]).toMatch(/^V\t\d{12}Z\t\t[0-9A-F]{32}\tunknown\t\/CN=localhost$/);
    expect(lines[1]).toMatch(new RegExp(`^V\\t\\d{12}Z\\t\\t${goodSerial}\\tunknown\\t/CN=good$`));
    expect(lines[2]).toMatch(new RegExp(`^R\\t\\d{12}Z\\t\\d{12}Z,keyCompromise\\t${badSerial}\\tunknown\\t/CN=bad$`));
    expect(await readFile(join(dir, 'index.txt.attr'), 'utf8')).toBe('unique_subject = no\n');

    const db = await readCaDatabase(dir);
    expect(db.map((e) => e.status)).toEqual(['valid', 'valid', 'revoked']);
    const notAfter = Date.parse(new X509Certificate(await readFile(bad)).validTo);
    expect(db[2]).toMatchObject({ serial: badSerial, subject: '/CN=bad', reason: 'keyCompromise' });
    expect(db[2]?.notAfter.getTime()).toBe(notAfter);
    expect(Math.abs((db[2]?.revokedAt?.getTime() ?? 0) - Date.now())).toBeLessThan(60_000);
  });

  it('openssl ocsp -index reads it: good, revoked with its reason, unknown for an unrecorded serial', async () => {
    const { dir, good, bad } = await devPki();
    const stranger = await issueAgentCert(
      { certPem: await readFile(join(dir, 'ca.crt'), 'utf8'), keyPem: await readFile(join(dir, 'ca.key'), 'utf8'), certDer: new X509Certificate(await readFile(join(dir, 'ca.crt'))).raw },
      'unrecorded',
    );
    const unrecorded = await writeTemp('unrecorded.crt', stranger.certPem);
    const ca = join(dir, 'ca.crt');
    for (const [cert, want] of [
      [good, 'good'],
      [bad, 'revoked'],
      [unrecorded, 'unknown'],
    ] as const) {
      const resp = await writeTemp('resp.der', await opensslRespond(dir, await opensslRequest(dir, cert)));
      // -no_nonce: the request openssl builds from -cert to match the answer has a nonce of its own.
      const r = await openssl(['ocsp', '-respin', resp, '-issuer', ca, '-cert', cert, '-CAfile', ca, '-no_nonce']);
      expect(r.stdout).toContain(`${cert}: ${want}`);
      expect(r.stderr).toContain('Response verify OK');
      if (want === 'revoked') expect(r.stdout).toContain('Reason: keyCompromise');
    }
  });

  it('openssl ca -gencrl reads it and lists the revoked serial', async () => {
    const { dir, badSerial } = await devPki();
    const cnf = await writeTemp(
      'ca.cnf',
      [
        '[ ca ]',
        'default_ca = dev',
        '[ dev ]',
        `database = ${join(dir, 'index.txt')}`,
        `certificate = ${join(dir, 'ca.crt')}`,
        `private_key = ${join(dir, 'ca.key')}`,
        'default_md = sha256',
        'default_crl_days = 1',
        '',
      ].join('\n'),
    );
    const out = join(tmp, `${++seq}-openssl.crl`);
    const gen = await openssl(['ca', '-config', cnf, '-gencrl', '-out', out]);
    expect(gen.code, gen.stderr).toBe(0);
    const text = await openssl(['crl', '-in', out, '-noout', '-text']);
    expect(text.stdout).toContain(`Serial Number: ${badSerial}`);
    expect(text.stdout).toContain('Key Compromise');
  });

  it('revokes idempotently, by serial too, and refuses unknown serials and foreign certificates', async () => {
    const { dir, good, badSerial } = await devPki();
    const before = await readFile(join(dir, 'index.txt'), 'utf8');
    const again = await revokeCertificate(dir, badSerial.toLowerCase(), { reason: 'superseded' });
    expect(again.changed).toBe(false);
    expect(again.entry.reason).toBe('keyCompromise');
    expect(await readFile(join(dir, 'index.txt'), 'utf8')).toBe(before);

    const goodSerial = new X509Certificate(await readFile(good)).serialNumber;
    const colons = goodSerial.match(/../g)?.join(':') ?? '';
    const at = new Date('2030-01-02T03:04:05.678Z');
    const byColons = await revokeCertificate(dir, colons, { at, reason: 'unspecified' });
    expect(byColons).toMatchObject({ changed: true, entry: { serial: goodSerial, status: 'revoked' } });
    // Whole seconds, as the index holds them; `unspecified` recorded as no reason, like openssl ca.
    expect(byColons.entry.revokedAt?.toISOString()).toBe('2030-01-02T03:04:05.000Z');
    expect(byColons.entry.reason).toBeUndefined();
    expect(await readFile(join(dir, 'index.txt'), 'utf8')).toContain(`R\t`);
    expect(await readFile(join(dir, 'index.txt'), 'utf8')).toMatch(new RegExp(`\\t300102030405Z\\t${goodSerial}\\t`));

    await expect(revokeCertificate(dir, 'ABCDEF')).rejects.toThrow(/serial ABCDEF is not in/);
    await expect(revokeCertificate(dir, 'not-hex')).rejects.toThrow(/not a hex serial/);
    const other = await issueAgentCert(await createCa(), 'foreign');
    await expect(revokeCertificate(dir, other.certPem)).rejects.toThrow(/was not issued by the CA/);
  });

  it('adds and revokes a certificate of the CA missing from the index, as openssl ca -revoke does', async () => {
    const { dir } = await devPki();
    const ca: KeyAndCert = {
      certPem: await readFile(join(dir, 'ca.crt'), 'utf8'),
      keyPem: await readFile(join(dir, 'ca.key'), 'utf8'),
      certDer: new X509Certificate(await readFile(join(dir, 'ca.crt'))).raw,
    };
    const legacy = await issueAgentCert(ca, 'legacy');
    const { entry, changed } = await revokeCertificate(dir, legacy.certPem);
    expect(changed).toBe(true);
    expect(entry).toMatchObject({ status: 'revoked', subject: '/CN=legacy', serial: new X509Certificate(legacy.certPem).serialNumber });
    expect((await readCaDatabase(dir)).length).toBe(4);
  });

  it('keeps every entry when agents are issued in parallel', async () => {
    const dir = join(tmp, `parallel-${++seq}`);
    await initDevPki(dir);
    const names = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'];
    await Promise.all(names.map((n) => issueAgentFiles(dir, n)));
    const subjects = (await readCaDatabase(dir)).map((e) => e.subject).sort();
    expect(subjects).toEqual(['/CN=localhost', ...names.map((n) => `/CN=${n}`)].sort());
  });

  it('reads what openssl ca writes: expired entries, reason aliases with extra fields', async () => {
    const dir = join(tmp, `handmade-${++seq}`);
    await initDevPki(dir);
    await writeFile(
      join(dir, 'index.txt'),
      [
        'E\t200101000000Z\t\t0A\tunknown\t/CN=old',
        'R\t491231235959Z\t240102030405Z,CAkeyTime,20240101000000Z\t00FF\tunknown\t/CN=ca-key',
        'R\t20510101000000Z\t240102030405Z\t0100\tunknown\t/CN=far/O=x',
        '',
      ].join('\n'),
    );
    const db = await readCaDatabase(dir);
    expect(db).toEqual([
      { status: 'expired', serial: '0A', notAfter: new Date('2020-01-01T00:00:00Z'), subject: '/CN=old' },
      { status: 'revoked', serial: 'FF', notAfter: new Date('2049-12-31T23:59:59Z'), revokedAt: new Date('2024-01-02T03:04:05Z'), reason: 'CACompromise', subject: '/CN=ca-key' },
      { status: 'revoked', serial: '0100', notAfter: new Date('2051-01-01T00:00:00Z'), revokedAt: new Date('2024-01-02T03:04:05Z'), subject: '/CN=far/O=x' },
    ]);
    // Rewritten in openssl's spelling: GeneralizedTime from 2050, BN_bn2hex serials.
    await revokeCertificate(dir, '0a');
    const text = await readFile(join(dir, 'index.txt'), 'utf8');
    expect(text).toContain('\t20510101000000Z\t240102030405Z\t0100\t');
    expect(text).toContain('R\t200101000000Z\t');
    expect(text).toContain('\t240102030405Z,CACompromise\tFF\t');

    await writeFile(join(dir, 'index.txt'), 'V\t200101000000Z\t\t0A\tunknown\n');
    await expect(readCaDatabase(dir)).rejects.toThrow(/index.txt line 1: expected 6 tab-separated fields/);
  });

  it('starts a fresh index, CRL and counter when the CA is recreated', async () => {
    const { dir } = await devPki();
    await writeCrl(dir);
    await initDevPki(dir, { force: true });
    const db = await readCaDatabase(dir);
    expect(db.map((e) => e.subject)).toEqual(['/CN=localhost']);
    await expect(readFile(join(dir, 'ca.crl'))).rejects.toThrow(/ENOENT/);
    await expect(readFile(join(dir, 'crlnumber'))).rejects.toThrow(/ENOENT/);
  });
});

describe('CRL', () => {
  it('writes a CRL openssl verifies, listing the revoked serial with its reason, CRL number and AKI', async () => {
    const { dir, good, bad, badSerial } = await devPki();
    const path = await writeCrl(dir, { days: 2 });
    expect(path).toBe(join(dir, 'ca.crl'));
    const r = await openssl(['crl', '-in', path, '-CAfile', join(dir, 'ca.crt'), '-noout', '-text']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('verify OK');
    expect(r.stdout).toContain(`Serial Number: ${badSerial}`);
    expect(r.stdout).toContain('Key Compromise');
    expect(r.stdout).toMatch(/X509v3 CRL Number: \n\s+1\n/);
    expect(r.stdout).toContain('X509v3 Authority Key Identifier');
    const ski = (await openssl(['x509', '-in', join(dir, 'ca.crt'), '-noout', '-ext', 'subjectKeyIdentifier'])).stdout.split('\n')[1]?.trim() ?? '';
    expect(r.stdout).toContain(ski);
    // What relying parties do with it: the revoked agent fails a CRL-checked verify, the other passes.
    const checked = async (cert: string): Promise<Run> => openssl(['verify', '-crl_check', '-CRLfile', path, '-CAfile', join(dir, 'ca.crt'), cert]);
    const revokedCheck = await checked(bad);
    expect(revokedCheck.code).not.toBe(0);
    expect(revokedCheck.stdout + revokedCheck.stderr).toContain('certificate revoked');
    expect((await checked(good)).stdout).toContain(': OK');

    const next = await openssl(['crl', '-in', path, '-noout', '-nextupdate', '-lastupdate']);
    const last = Date.parse(/lastUpdate=(.*)/.exec(next.stdout)?.[1] ?? '');
    const nextUpdate = Date.parse(/nextUpdate=(.*)/.exec(next.stdout)?.[1] ?? '');
    expect(nextUpdate - last).toBe(2 * 86_400_000);

    // The counter is openssl's crlnumber file: the next CRL gets 2.
    expect(await readFile(join(dir, 'crlnumber'), 'utf8')).toBe('02\n');
    const out = join(tmp, `${++seq}-second.crl`);
    await writeCrl(dir, { out });
    expect((await openssl(['crl', '-in', out, '-noout', '-crlnumber'])).stdout.trim()).toBe('crlNumber=0x02');
  });

  it('a CRL signed by another key fails openssl verification; an empty one verifies', async () => {
    const ca = await createCa();
    const other = await createCa();
    const caPath = await writeTemp('ca.crt', ca.certPem);
    const revoked = [{ serial: '4A00FF', revokedAt: new Date(), reason: 'superseded' }];

    const forged = await createCrl(ca, revoked, { signer: other });
    const forgedPath = await writeTemp('forged.crl', forged.pem);
    const bad = await openssl(['crl', '-in', forgedPath, '-CAfile', caPath, '-noout']);
    // OpenSSL 3.0's `crl` reports the failure but still exits 0, hence the stderr check...
    expect(bad.stderr).toContain('verify failure');
    expect(bad.stderr).not.toContain('verify OK');
    // ...and a chain check that uses the CRL, which does fail by exit status.
    const leaf = await writeTemp('leaf.crt', (await issueAgentCert(ca, 'leaf')).certPem);
    const withForged = await openssl(['verify', '-crl_check', '-CRLfile', forgedPath, '-CAfile', caPath, leaf]);
    expect(withForged.code).not.toBe(0);
    expect(withForged.stdout + withForged.stderr).toMatch(/CRL signature failure/i);

    const real = await createCrl(ca, revoked, { crlNumber: 42n });
    const ok = await openssl(['crl', '-in', await writeTemp('real.crl', real.pem), '-CAfile', caPath, '-noout', '-text']);
    expect(ok.stderr).toContain('verify OK');
    expect(ok.stdout).toContain('Serial Number: 4A00FF');
    expect(ok.stdout).toMatch(/CRL Number: \n\s+42\n/);
    expect(real.pem.startsWith('-----BEGIN X509 CRL-----\n')).toBe(true);

    const empty = await createCrl(ca, []);
    const e = await openssl(['crl', '-in', await writeTemp('empty.crl', empty.der), '-inform', 'DER', '-CAfile', caPath, '-noout', '-text']);
    expect(e.stderr).toContain('verify OK');
    expect(e.stdout).toContain('No Revoked Certificates');
  });

  it('writes delta CRLs, issuing distribution points and extra critical extensions that openssl reads and judges like the gate', async () => {
    const ca = await createCa();
    const caPath = await writeTemp('idp-ca.crt', ca.certPem);
    const leaf = await writeTemp('idp-leaf.crt', (await issueAgentCert(ca, 'idp-leaf')).certPem);
    const verifyWith = async (...crls: string[]): Promise<Run> => openssl(['verify', '-crl_check', ...crls.flatMap((c) => ['-CRLfile', c]), '-CAfile', caPath, leaf]);

    const delta = await createCrl(ca, [{ serial: '4A01', revokedAt: new Date(), reason: 'removeFromCRL' }], { crlNumber: 8, deltaBase: 7, idp: { uris: ['http://crl.example/a.crl'], onlyContainsUserCerts: true, onlySomeReasons: 0x40 } });
    const d = await openssl(['crl', '-in', await writeTemp('delta.crl', delta.pem), '-CAfile', caPath, '-noout', '-text']);
    expect(d.stderr).toContain('verify OK');
    expect(d.stdout).toMatch(/Delta CRL Indicator: critical\n\s+7\n/);
    expect(d.stdout).toMatch(/Issuing Distribution Point: critical\n\s+Full Name:\n\s+URI:http:\/\/crl\.example\/a\.crl/);
    expect(d.stdout).toContain('Only User Certificates');
    expect(d.stdout).toMatch(/Only Some Reasons:\n\s+Key Compromise/);
    expect(d.stdout).toContain('Remove From CRL');

    // openssl agrees with the gate on what is not a complete answer for a leaf.
    const caOnly = await writeTemp('caonly.crl', (await createCrl(ca, [], { idp: { onlyContainsCACerts: true } })).pem);
    const scoped = await verifyWith(caOnly);
    // error 44: X509_V_ERR_DIFFERENT_CRL_SCOPE (no CRL of the leaf's scope).
    expect(scoped.code).not.toBe(0);
    expect(scoped.stdout + scoped.stderr).toMatch(/error 44 at 0 depth|Different CRL scope|unable to get certificate CRL/);
    const critical = await createCrl(ca, [], { extensions: [new x509.Extension('1.3.6.1.4.1.55555.1', true, new Uint8Array([5, 0]))] });
    expect((await verifyWith(await writeTemp('critical.crl', critical.pem))).stderr).toMatch(/unhandled critical CRL extension/);
    const full = await writeTemp('full.crl', (await createCrl(ca, [])).pem);
    expect((await verifyWith(caOnly, full)).stdout).toContain(': OK');

    const bare = await createCrl(ca, [], { crlNumber: null });
    expect((await openssl(['crl', '-in', await writeTemp('bare.crl', bare.pem), '-noout', '-text'])).stdout).not.toContain('CRL Number');
  });

  it('signs with every key type the dev PKI issues', async () => {
    for (const alg of ['ed25519', 'ec-p384', 'rsa-2048'] as const) {
      const ca = await createCa({ alg });
      const crl = await createCrl(ca, [{ serial: '01', revokedAt: new Date() }]);
      const r = await openssl(['crl', '-in', await writeTemp(`${alg}.crl`, crl.pem), '-CAfile', await writeTemp(`${alg}.crt`, ca.certPem), '-noout']);
      expect(r.stderr, alg).toContain('verify OK');
    }
  });
});

describe('CRL Distribution Points and Authority Information Access', () => {
  it('initDevPki stores the URLs in pki.json and issued agents carry them', async () => {
    const dir = join(tmp, `urls-${++seq}`);
    await initDevPki(dir, { crlUrl: 'http://127.0.0.1:8081/ca.crl', ocspUrl: 'http://127.0.0.1:8082/' });
    expect(JSON.parse(await readFile(join(dir, 'pki.json'), 'utf8'))).toEqual({
      crlUrl: 'http://127.0.0.1:8081/ca.crl',
      ocspUrl: 'http://127.0.0.1:8082/',
    });
    const { cert } = await issueAgentFiles(dir, 'pointed');
    const r = await openssl(['x509', '-in', cert, '-noout', '-ext', 'crlDistributionPoints,authorityInfoAccess']);
    expect(r.stdout).toContain('URI:http://127.0.0.1:8081/ca.crl');
    expect(r.stdout).toContain('OCSP - URI:http://127.0.0.1:8082/');
    expect(new X509Certificate(await readFile(cert)).infoAccess).toContain('OCSP - URI:http://127.0.0.1:8082/');

    // A later init on the existing PKI updates one URL and keeps the other.
    expect((await initDevPki(dir, { ocspUrl: 'http://127.0.0.1:9000/ocsp' })).created).toBe(false);
    expect(await readDevPkiConfig(dir)).toEqual({ crlUrl: 'http://127.0.0.1:8081/ca.crl', ocspUrl: 'http://127.0.0.1:9000/ocsp' });
    // The server certificate carries no pointers: only agents are checked for revocation.
    const server = await openssl(['x509', '-in', join(dir, 'server.crt'), '-noout', '-ext', 'crlDistributionPoints,authorityInfoAccess']);
    expect(server.stdout).toBe('');
  });

  it('issueAgentCert adds CDP, AIA OCSP and caIssuers only when asked, and refuses non-http URLs', async () => {
    const ca = await createCa();
    const withAll = await issueAgentCert(ca, 'a', { crlUrl: 'http://x.test/c.crl', ocspUrl: 'http://x.test/ocsp', caIssuersUrl: 'http://x.test/ca.crt' });
    const text = (await openssl(['x509', '-in', await writeTemp('a.crt', withAll.certPem), '-noout', '-ext', 'crlDistributionPoints,authorityInfoAccess'])).stdout;
    expect(text).toContain('URI:http://x.test/c.crl');
    expect(text).toContain('OCSP - URI:http://x.test/ocsp');
    expect(text).toContain('CA Issuers - URI:http://x.test/ca.crt');
    expect(text).not.toContain('critical');

    const plain = await issueAgentCert(ca, 'b');
    expect((await openssl(['x509', '-in', await writeTemp('b.crt', plain.certPem), '-noout', '-ext', 'crlDistributionPoints,authorityInfoAccess'])).stdout).toBe('');
    await expect(issueAgentCert(ca, 'c', { ocspUrl: 'ldap://x.test/' })).rejects.toThrow(/http or https/);
    await expect(initDevPki(join(tmp, `bad-url-${++seq}`), { crlUrl: 'not a url' })).rejects.toThrow(/absolute http/);
  });
});

describe('OCSP responder', () => {
  let pki: Awaited<ReturnType<typeof devPki>>;
  let responder: OcspResponder;
  let caPath: string;

  beforeAll(async () => {
    pki = await devPki();
    caPath = join(pki.dir, 'ca.crt');
    responder = await startOcspResponder({ dir: pki.dir });
  });

  afterAll(async () => {
    await responder?.close();
  });

  async function ask(url: string, cert: string, extra: string[] = []): Promise<Run> {
    return openssl(['ocsp', '-issuer', caPath, '-cert', cert, '-url', url, '-CAfile', caPath, '-timeout', '10', ...extra]);
  }

  it('listens on loopback and openssl ocsp -url gets good and revoked, verified', async () => {
    expect(responder.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const good = await ask(responder.url, pki.good, ['-resp_text']);
    expect(good.stdout).toContain(`${pki.good}: good`);
    expect(good.stderr).toContain('Response verify OK');
    expect(good.stdout).toContain('Next Update:');

    const bad = await ask(responder.url, pki.bad);
    expect(bad.stdout).toContain(`${pki.bad}: revoked`);
    expect(bad.stdout).toContain('Reason: keyCompromise');
    expect(bad.stderr).toContain('Response verify OK');
  });

  it('gives the same statuses as openssl\'s own responder for the same index and request', async () => {
    const ca: KeyAndCert = { certPem: await readFile(caPath, 'utf8'), keyPem: await readFile(join(pki.dir, 'ca.key'), 'utf8'), certDer: new X509Certificate(await readFile(caPath)).raw };
    const unrecorded = await writeTemp('unrecorded.crt', (await issueAgentCert(ca, 'unrecorded')).certPem);
    for (const [cert, want] of [
      [pki.good, 'good'],
      [pki.bad, 'revoked'],
      [unrecorded, 'unknown'],
    ] as const) {
      for (const flags of [[], ['-no_nonce'], ['-sha256']]) {
        const request = await opensslRequest(pki.dir, cert, flags);
        const ours = parseOcsp((await post(responder.url, request)).der);
        const theirs = parseOcsp(await opensslRespond(pki.dir, request));
        expect(ours.status).toBe(0);
        expect(ours.responses).toEqual(theirs.responses);
        expect(ours.responses[0]?.status, `${want} ${flags.join(' ')}`).toBe(want);
        expect(ours.nonce).toBe(nonceOfRequest(request));
        expect(ours.nonce).toBe(theirs.nonce);
      }
    }
  });

  it('answers a CertID of another issuer, and several CertIDs at once, like openssl', async () => {
    const otherDir = join(tmp, `other-${++seq}`);
    await initDevPki(otherDir);
    const foreign = (await issueAgentFiles(otherDir, 'foreign')).cert;
    const out = join(tmp, `${++seq}-multi.der`);
    // One request about three certificates, the last of them by another CA.
    const r = await openssl([
      'ocsp', '-issuer', caPath, '-cert', pki.good, '-cert', pki.bad,
      '-issuer', join(otherDir, 'ca.crt'), '-cert', foreign, '-reqout', out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const request = await readFile(out);
    const ours = parseOcsp((await post(responder.url, request)).der);
    const theirs = parseOcsp(await opensslRespond(pki.dir, request));
    expect(ours.responses.map((s) => s.status)).toEqual(['good', 'revoked', 'unknown']);
    expect(ours.responses).toEqual(theirs.responses);
  });

  it('sees a revocation on the next request, without a restart', async () => {
    const { cert } = await issueAgentFiles(pki.dir, 'later');
    expect((await ask(responder.url, cert)).stdout).toContain(`${cert}: good`);
    await revokeCertificate(pki.dir, await readFile(cert, 'utf8'), { reason: 'cessationOfOperation' });
    const after = await ask(responder.url, cert);
    expect(after.stdout).toContain(`${cert}: revoked`);
    expect(after.stdout).toContain('Reason: cessationOfOperation');
  });

  it('signs with a delegated responder certificate that openssl accepts', async () => {
    const ca: KeyAndCert = { certPem: await readFile(caPath, 'utf8'), keyPem: await readFile(join(pki.dir, 'ca.key'), 'utf8'), certDer: new X509Certificate(await readFile(caPath)).raw };
    const signer = await issueOcspSignerCert(ca, { alg: 'ed25519' });
    const text = (await openssl(['x509', '-in', await writeTemp('signer.crt', signer.certPem), '-noout', '-text'])).stdout;
    expect(text).toContain('OCSP Signing');
    expect(text).toContain('OCSP No Check');
    expect(text).toContain('CA:FALSE');

    const delegated = await startOcspResponder({ dir: pki.dir, signer, nextUpdateS: 60 });
    try {
      for (const [cert, want] of [
        [pki.good, 'good'],
        [pki.bad, 'revoked'],
      ] as const) {
        const r = await ask(delegated.url, cert);
        expect(r.stdout).toContain(`${cert}: ${want}`);
        expect(r.stderr).toContain('Response verify OK');
      }
      const parsed = parseOcsp((await post(delegated.url, await opensslRequest(pki.dir, pki.good))).der);
      expect(parsed.certs).toBe(1);
      expect((parsed.nextUpdate ?? 0) - (parsed.thisUpdate ?? 0)).toBe(60_000);
      expect(delegated.requests).toBe(3);
    } finally {
      await delegated.close();
    }

    // A responder certificate of another CA is refused by openssl.
    const rogue = await issueOcspSignerCert(await createCa());
    const rogueResponder = await startOcspResponder({ dir: pki.dir, signer: rogue });
    try {
      const r = await ask(rogueResponder.url, pki.good);
      expect(r.stderr).not.toContain('Response verify OK');
      expect(r.stderr).toMatch(/verify error|Verify Failure/i);
    } finally {
      await rogueResponder.close();
    }
  });

  it('counts requests, answers the GET form, and says malformedRequest to garbage', async () => {
    const before = responder.requests;
    const request = await opensslRequest(pki.dir, pki.bad);

    const get = await fetch(responder.url + encodeURIComponent(request.toString('base64')), { signal: AbortSignal.timeout(10_000) });
    expect(get.status).toBe(200);
    expect(get.headers.get('content-type')).toBe('application/ocsp-response');
    expect(parseOcsp(Buffer.from(await get.arrayBuffer())).responses).toMatchObject([{ serial: pki.badSerial, status: 'revoked' }]);
    // Unencoded `/` and the URL-safe alphabet are taken too.
    const raw = await fetch(responder.url + request.toString('base64url'), { signal: AbortSignal.timeout(10_000) });
    expect(parseOcsp(Buffer.from(await raw.arrayBuffer())).responses[0]?.status).toBe('revoked');

    // No content type at all: still answered.
    const untyped = await fetch(responder.url, { method: 'POST', body: request, signal: AbortSignal.timeout(10_000) });
    expect(parseOcsp(Buffer.from(await untyped.arrayBuffer())).status).toBe(0);

    const garbage = await post(responder.url, Buffer.from('definitely not DER'));
    expect(garbage.status).toBe(200);
    expect(garbage.type).toBe('application/ocsp-response');
    expect(parseOcsp(garbage.der)).toEqual({ status: 1, responses: [], certs: 0 });
    const shown = await openssl(['ocsp', '-respin', await writeTemp('garbage.der', garbage.der), '-resp_text', '-noverify']);
    expect(shown.stdout).toMatch(/malformedrequest \(1\)/i);

    const badGet = await fetch(`${responder.url}%%%`, { signal: AbortSignal.timeout(10_000) });
    expect(parseOcsp(Buffer.from(await badGet.arrayBuffer())).status).toBe(1);

    expect(responder.requests - before).toBe(5);
  });

  it('refuses other methods and bodies over 64 KiB without answering them as OCSP', async () => {
    const before = responder.requests;
    const put = await fetch(responder.url, { method: 'PUT', body: 'x', signal: AbortSignal.timeout(10_000) });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, POST');
    const big = await post(responder.url, Buffer.alloc(64 * 1024 + 1, 0x30));
    expect(big.status).toBe(413);
    expect(responder.requests).toBe(before);
  });

  it('builds forged answers on request: another serial, an unrelated signing key', async () => {
    const ca: KeyAndCert = { certPem: await readFile(caPath, 'utf8'), keyPem: await readFile(join(pki.dir, 'ca.key'), 'utf8'), certDer: new X509Certificate(await readFile(caPath)).raw };
    const request = await opensslRequest(pki.dir, pki.bad);
    const lookup = (): { status: 'good' } => ({ status: 'good' });

    const otherSerial = buildOcspResponse({ request, issuer: ca, lookup, overrideSerial: '0A0B0C' });
    expect(parseOcsp(otherSerial).responses).toEqual([{ serial: '0A0B0C', status: 'good' }]);
    const r1 = await openssl(['ocsp', '-respin', await writeTemp('o.der', otherSerial), '-issuer', caPath, '-cert', pki.bad, '-CAfile', caPath, '-no_nonce']);
    expect(r1.stdout + r1.stderr).toMatch(/No Status found/i);

    const wrongKey = buildOcspResponse({ request, issuer: ca, lookup, signWith: { keyPem: (await createCa()).keyPem } });
    const r2 = await openssl(['ocsp', '-respin', await writeTemp('w.der', wrongKey), '-issuer', caPath, '-cert', pki.bad, '-CAfile', caPath, '-no_nonce']);
    expect(r2.stderr).not.toContain('Response verify OK');
    expect(r2.stderr).toMatch(/Verify Failure|verify error/i);

    const fixed = new Date('2030-05-06T07:08:09Z');
    const stale = parseOcsp(buildOcspResponse({ request, issuer: ca, lookup, thisUpdate: fixed, nextUpdate: null }));
    expect(stale.thisUpdate).toBe(fixed.getTime());
    expect(stale.nextUpdate).toBeUndefined();
  });
});

describe('agent-gate pki revoke, crl and ocsp-responder', () => {
  const cli = (...args: string[]) => runCli(['pki', ...args]);

  /** The real command as a process: signals and stdout as an operator sees them. */
  function spawnResponder(dir: string): { url: Promise<string>; stop: () => Promise<{ code: number | null; stderr: string }> } {
    const child = spawn(process.execPath, [...cliArgv(), 'pki', 'ocsp-responder', '--dir', dir, '--port', '0'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => void (stderr += b.toString()));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const url = new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no URL within 30 s; stderr: ${stderr}`)), 30_000);
      child.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        const line = stdout.split('\n');
        if (line.length > 1) {
          clearTimeout(timer);
          res(line[0] ?? '');
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`responder exited (${code}) before printing its URL: ${stderr}`));
      });
    });
    return {
      url,
      stop: async () => {
        if (child.exitCode === null) child.kill('SIGTERM');
        return { code: await exited, stderr };
      },
    };
  }

  it('init with URLs, issue, revoke, crl, then the responder answers revoked until SIGTERM', async () => {
    const dir = join(tmp, `cli-${++seq}`);
    const init = await cli('init', '--dir', dir, '--crl-url', 'http://127.0.0.1:1/ca.crl', '--ocsp-url', 'http://127.0.0.1:2/');
    expect(init.exitCode).toBe(0);
    expect(init.stdout.trim().split('\n')).toEqual(['ca.crt', 'ca.key', 'server.crt', 'server.key', 'pki.json'].map((f) => join(dir, f)));

    expect((await cli('issue', 'doomed', '--dir', dir)).exitCode).toBe(0);
    const cert = join(dir, 'agents', 'doomed.crt');
    expect((await openssl(['x509', '-in', cert, '-noout', '-ext', 'authorityInfoAccess'])).stdout).toContain('OCSP - URI:http://127.0.0.1:2/');

    const revoke = await cli('revoke', cert, '--dir', dir, '--reason', 'keyCompromise');
    expect(revoke).toMatchObject({ exitCode: 0, stdout: `${join(dir, 'index.txt')}\n` });
    expect(revoke.stderr).toMatch(/^revoked serial [0-9A-F]+ \(\/CN=doomed\) at \S+ \(keyCompromise\);/);
    const again = await cli('revoke', cert, '--dir', dir);
    expect(again).toMatchObject({ exitCode: 0, stdout: '' });
    expect(again.stderr).toContain('already revoked');

    const crl = await cli('crl', '--dir', dir, '--days', '3');
    expect(crl).toMatchObject({ exitCode: 0, stdout: `${join(dir, 'ca.crl')}\n`, stderr: '' });
    const crlText = await openssl(['crl', '-in', join(dir, 'ca.crl'), '-CAfile', join(dir, 'ca.crt'), '-noout', '-text']);
    expect(crlText.stderr).toContain('verify OK');
    expect(crlText.stdout).toContain(`Serial Number: ${new X509Certificate(await readFile(cert)).serialNumber}`);

    const responder = spawnResponder(dir);
    try {
      const url = await responder.url;
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const r = await openssl(['ocsp', '-issuer', join(dir, 'ca.crt'), '-cert', cert, '-url', url, '-CAfile', join(dir, 'ca.crt'), '-timeout', '10']);
      expect(r.stdout).toContain(`${cert}: revoked`);
      expect(r.stderr).toContain('Response verify OK');
    } finally {
      const { code, stderr } = await responder.stop();
      expect(code).toBe(0);
      expect(stderr).toContain('SIGTERM: stopped after 1 request(s)');
    }
  });

  it('revokes by serial and refuses bad input with one line and exit 2', async () => {
    const dir = join(tmp, `cli-${++seq}`);
    await initDevPki(dir);
    const { cert } = await issueAgentFiles(dir, 'byserial');
    const serial = new X509Certificate(await readFile(cert)).serialNumber;
    expect((await cli('revoke', `serial=${serial}`, '--dir', dir)).exitCode).toBe(0);
    expect((await readCaDatabase(dir)).find((e) => e.serial === serial)?.status).toBe('revoked');

    for (const args of [
      ['revoke', 'ABCDEF', '--dir', dir],
      ['revoke', 'no/such/file.crt', '--dir', dir],
      ['revoke', cert, '--reason', 'boredom', '--dir', dir],
      ['crl', '--days', '0', '--dir', dir],
      ['crl', '--dir', join(tmp, 'nothing-here')],
      ['ocsp-responder', '--dir', dir],
      ['ocsp-responder', '--port', '70000', '--dir', dir],
      ['ocsp-responder', '--port', '0', '--dir', join(tmp, 'nothing-here')],
      ['init', '--dir', join(tmp, `cli-${++seq}`), '--ocsp-url', 'ftp://x/'],
    ]) {
      const r = await cli(...args);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(/^error: [^\n]+\n$/);
    }
  });
});
