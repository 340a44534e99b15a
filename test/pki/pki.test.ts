import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEV_CA_COMMON_NAME,
  createCa,
  createIntermediateCa,
  ensureDevPki,
  initDevPki,
  issueAgentCert,
  issueAgentFiles,
  issueServerCert,
  type KeyAlg,
  type KeyAndCert,
} from '../../src/pki/index.js';

const execFileP = promisify(execFile);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs openssl; a non-zero exit is a result to assert on, not an exception. */
async function openssl(args: string[], env?: Record<string, string>): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileP('openssl', args, { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

interface Handshake {
  /** `socket.authorized` on the server side: the client certificate chained to `ca`. */
  serverAuthorized: boolean;
  authorizationError: string | undefined;
  clientAuthorized: boolean;
}

/** One real mTLS handshake on 127.0.0.1: the server asks for a client certificate but decides nothing. */
async function handshake(server: KeyAndCert, caPem: string, client: KeyAndCert): Promise<Handshake> {
  const srv = tls.createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const seen = new Promise<{ authorized: boolean; error: string | undefined }>((resolve) => {
    srv.on('secureConnection', (socket) => {
      const err = socket.authorizationError as unknown;
      resolve({ authorized: socket.authorized, error: err === null || err === undefined ? undefined : String(err) });
      socket.end();
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = srv.address() as AddressInfo;
    const clientAuthorized = await new Promise<boolean>((resolve, reject) => {
      const socket = tls.connect(
        { host: '127.0.0.1', port, servername: 'localhost', cert: client.certPem, key: client.keyPem, ca: caPem },
        () => {
          resolve(socket.authorized);
          socket.end();
        },
      );
      socket.on('error', reject);
    });
    const { authorized, error } = await seen;
    return { serverAuthorized: authorized, authorizationError: error, clientAuthorized };
  } finally {
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
}

let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'agent-gate-pki-'));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const ALGS: KeyAlg[] = ['ec-p256', 'ec-p384', 'ed25519', 'rsa-2048'];

describe.each(ALGS)('dev PKI files with %s', (alg) => {
  let dir: string;
  let files: { cert: string; key: string; p12?: string };

  beforeAll(async () => {
    dir = join(tmp, alg, 'dev');
    expect(await initDevPki(dir, { alg })).toEqual({ dir, created: true });
    files = await issueAgentFiles(dir, 'bot-1', { alg, p12Password: 'correct horse' });
  });

  it('openssl verifies the agent certificate for TLS client use', async () => {
    const r = await openssl(['verify', '-CAfile', join(dir, 'ca.crt'), '-purpose', 'sslclient', files.cert]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(': OK');
  });

  it('carries the SAN URI and the clientAuth EKU', async () => {
    const r = await openssl(['x509', '-in', files.cert, '-noout', '-ext', 'subjectAltName,extendedKeyUsage']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('URI:urn:agent:bot-1');
    expect(r.stdout).toContain('TLS Web Client Authentication');
    expect(r.stdout).not.toContain('TLS Web Server Authentication');
  });

  it('openssl verifies the server certificate for TLS server use', async () => {
    const r = await openssl(['verify', '-CAfile', join(dir, 'ca.crt'), '-purpose', 'sslserver', join(dir, 'server.crt')]);
    expect(r.stdout).toContain(': OK');
  });

  it('writes private files 0600 in 0700 directories', async () => {
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, 'agents'))).toBe(0o700);
    for (const key of [join(dir, 'ca.key'), join(dir, 'server.key'), files.key, files.p12 ?? '']) {
      expect(await mode(key)).toBe(0o600);
    }
  });

  it('writes PKCS#8 keys that Node parses and that match the certificate', async () => {
    const keyPem = await readFile(files.key, 'utf8');
    expect(keyPem.startsWith('-----BEGIN PRIVATE KEY-----\n')).toBe(true);
    const cert = new X509Certificate(await readFile(files.cert, 'utf8'));
    expect(cert.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(cert.subject).toBe('CN=bot-1');
    expect(cert.subjectAltName).toBe('URI:urn:agent:bot-1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.ca).toBe(false);
  });

  it('writes a PKCS#12 bundle openssl opens with the password and refuses without it', async () => {
    const p12 = files.p12 ?? '';
    const ok = await openssl(['pkcs12', '-info', '-noout', '-in', p12, '-passin', 'env:P12_PASS'], { P12_PASS: 'correct horse' });
    expect(ok.code).toBe(0);
    expect(ok.stderr).toContain('AES-256-CBC');
    const bad = await openssl(['pkcs12', '-info', '-noout', '-in', p12, '-passin', 'env:P12_PASS'], { P12_PASS: 'wrong' });
    expect(bad.code).not.toBe(0);
  });

  it('completes an mTLS handshake in Node with both sides authorized', async () => {
    const load = async (c: string, k: string): Promise<KeyAndCert> => {
      const certPem = await readFile(c, 'utf8');
      return { certPem, keyPem: await readFile(k, 'utf8'), certDer: new X509Certificate(certPem).raw };
    };
    const server = await load(join(dir, 'server.crt'), join(dir, 'server.key'));
    const agent = await load(files.cert, files.key);
    const r = await handshake(server, await readFile(join(dir, 'ca.crt'), 'utf8'), agent);
    expect(r).toEqual({ serverAuthorized: true, authorizationError: undefined, clientAuthorized: true });
  });
});

describe('in-memory certificates', () => {
  let ca: KeyAndCert;
  let server: KeyAndCert;

  beforeAll(async () => {
    ca = await createCa();
    server = await issueServerCert(ca);
  });

  async function files(name: string, ...pems: string[]): Promise<string[]> {
    const dir = await mkdtemp(join(tmp, `${name}-`));
    return Promise.all(
      pems.map(async (pem, i) => {
        const path = join(dir, `${i}.pem`);
        await writeFile(path, pem);
        return path;
      }),
    );
  }

  it('makes a CA with critical basicConstraints, keyCertSign and cRLSign, and an SKI', async () => {
    const r = await openssl(['x509', '-noout', '-text', '-in', (await files('ca', ca.certPem))[0] ?? '']);
    expect(r.stdout).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(r.stdout).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(r.stdout).toContain('Subject Key Identifier');
    expect(new X509Certificate(ca.certDer).subject).toBe(`CN=${DEV_CA_COMMON_NAME}`);
  });

  it('gives agent certificates a positive 16-byte serial, an AKI matching the CA SKI, and 30 days', async () => {
    const caCert = new X509Certificate(ca.certPem);
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const cert = new X509Certificate((await issueAgentCert(ca, 'bot', { alg: 'ed25519' })).certPem);
      expect(cert.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
      serials.add(cert.serialNumber);
      if (i === 0) {
        expect(cert.checkIssued(caCert)).toBe(true);
        const now = Date.now();
        const from = Date.parse(cert.validFrom);
        const to = Date.parse(cert.validTo);
        expect(now - from).toBeGreaterThanOrEqual(4 * 60_000);
        expect(now - from).toBeLessThanOrEqual(6 * 60_000);
        expect(Math.abs(to - now - 30 * 86_400_000)).toBeLessThan(60_000);
      }
    }
    expect(serials.size).toBe(20);
    const agent = await issueAgentCert(ca, 'bot');
    const [caPath, agentPath] = await files('aki', ca.certPem, agent.certPem);
    const ski = (await openssl(['x509', '-noout', '-ext', 'subjectKeyIdentifier', '-in', caPath ?? ''])).stdout.split('\n')[1]?.trim();
    const aki = (await openssl(['x509', '-noout', '-ext', 'authorityKeyIdentifier', '-in', agentPath ?? ''])).stdout;
    expect(ski).toMatch(/^[0-9A-F:]{59}$/);
    expect(aki).toContain(ski);
  });

  it('verifies an agent under an intermediate CA with -untrusted', async () => {
    const intermediate = await createIntermediateCa(ca, { alg: 'ec-p384' });
    const agent = await issueAgentCert(intermediate, 'deep', { alg: 'rsa-2048' });
    const [caPath, imPath, agentPath] = await files('chain', ca.certPem, intermediate.certPem, agent.certPem);
    const args = ['verify', '-CAfile', caPath ?? '', '-purpose', 'sslclient'];
    const ok = await openssl([...args, '-untrusted', imPath ?? '', agentPath ?? '']);
    expect(ok.stdout).toContain(': OK');
    const noIntermediate = await openssl([...args, agentPath ?? '']);
    expect(noIntermediate.code).not.toBe(0);
    const text = (await openssl(['x509', '-noout', '-text', '-in', imPath ?? ''])).stdout;
    expect(text).toMatch(/CA:TRUE, pathlen:0/);

    const chainPem = agent.certPem + intermediate.certPem;
    const r = await handshake(server, ca.certPem, { ...agent, certPem: chainPem });
    expect(r.serverAuthorized).toBe(true);
  });

  it('an agent certificate from another CA fails openssl verify and the TLS check', async () => {
    const otherCa = await createCa({ commonName: DEV_CA_COMMON_NAME });
    const stranger = await issueAgentCert(otherCa, 'stranger');
    const [caPath, agentPath] = await files('stranger', ca.certPem, stranger.certPem);
    const r = await openssl(['verify', '-CAfile', caPath ?? '', '-purpose', 'sslclient', agentPath ?? '']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/signature failure|unable to get local issuer/);
    const h = await handshake(server, ca.certPem, stranger);
    expect(h.serverAuthorized).toBe(false);
    expect(h.authorizationError).toBeDefined();
  });

  it('honours sanUri, sanDns, extraSans and eku overrides', async () => {
    const dnsOnly = new X509Certificate(
      (await issueAgentCert(ca, 'n', { sanUri: null, sanDns: ['a.example', 'b.example'], extraSans: 2, eku: 'serverAuth' })).certPem,
    );
    expect(dnsOnly.subjectAltName).toBe('DNS:a.example, DNS:b.example, DNS:extra-0.invalid, DNS:extra-1.invalid');
    expect(dnsOnly.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);

    const bare = await issueAgentCert(ca, 'bare', { sanUri: null, eku: 'none' });
    const bareCert = new X509Certificate(bare.certPem);
    expect(bareCert.subjectAltName).toBeUndefined();
    expect(bareCert.keyUsage).toBeUndefined();
    // Without an EKU, the certificate is still valid for client use (RFC 5280 4.2.1.12).
    const [caPath, barePath] = await files('bare', ca.certPem, bare.certPem);
    expect((await openssl(['verify', '-CAfile', caPath ?? '', '-purpose', 'sslclient', barePath ?? ''])).stdout).toContain(': OK');

    const custom = new X509Certificate((await issueAgentCert(ca, 'c', { sanUri: 'spiffe://example.org/c' })).certPem);
    expect(custom.subjectAltName).toBe('URI:spiffe://example.org/c');
  });

  it('honours explicit validity and refuses an inverted window', async () => {
    const notBefore = new Date('2020-01-01T00:00:00Z');
    const notAfter = new Date('2020-01-02T00:00:00Z');
    const expired = new X509Certificate((await issueAgentCert(ca, 'old', { notBefore, notAfter })).certPem);
    expect(Date.parse(expired.validTo)).toBe(notAfter.getTime());
    await expect(issueAgentCert(ca, 'x', { notBefore: notAfter, notAfter: notBefore })).rejects.toThrow(TypeError);
  });

  it('caps default lifetimes at the issuer end date', async () => {
    const shortCa = await createCa({ notAfter: new Date(Date.now() + 86_400_000) });
    const agent = new X509Certificate((await issueAgentCert(shortCa, 'capped')).certPem);
    expect(Date.parse(agent.validTo)).toBeLessThanOrEqual(Date.parse(new X509Certificate(shortCa.certPem).validTo));
  });

  it('refuses to issue from a leaf or with a key that is not the issuer key', async () => {
    await expect(issueAgentCert(server, 'x')).rejects.toThrow(/not a CA/);
    await expect(issueAgentCert({ ...ca, keyPem: server.keyPem }, 'x')).rejects.toThrow(/does not match/);
  });

  it('puts DNS and IP SANs in server certificates', async () => {
    const cert = new X509Certificate(server.certPem);
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
  });
});

describe('initDevPki, issueAgentFiles and ensureDevPki', () => {
  it('leaves an existing PKI alone, replaces it with force, and refuses a broken one', async () => {
    const dir = join(tmp, 'idempotent');
    await initDevPki(dir);
    const before = await readFile(join(dir, 'ca.crt'), 'utf8');
    expect((await initDevPki(dir)).created).toBe(false);
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).toBe(before);

    expect((await initDevPki(dir, { force: true })).created).toBe(true);
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).not.toBe(before);

    await rm(join(dir, 'server.crt'));
    const ca = await readFile(join(dir, 'ca.crt'), 'utf8');
    expect((await initDevPki(dir)).created).toBe(true);
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).toBe(ca);

    await rm(join(dir, 'ca.key'));
    await expect(initDevPki(dir)).rejects.toThrow(/incomplete CA/);
  });

  it('refuses bad agent names, bad validity and a missing CA', async () => {
    const dir = join(tmp, 'names');
    await initDevPki(dir);
    for (const bad of ['', 'Bot', '../x', '-x', 'a/b', 'x'.repeat(64)]) {
      await expect(issueAgentFiles(dir, bad)).rejects.toThrow(/invalid agent name/);
    }
    await expect(issueAgentFiles(dir, 'ok', { validityDays: 0 })).rejects.toThrow(/validityDays/);
    await expect(issueAgentFiles(join(tmp, 'nothing-here'), 'ok')).rejects.toThrow(/no CA/);
    const f = await issueAgentFiles(dir, 'a.b_c-1', { validityDays: 1 });
    const cert = new X509Certificate(await readFile(f.cert, 'utf8'));
    expect(Math.abs(Date.parse(cert.validTo) - Date.now() - 86_400_000)).toBeLessThan(60_000);
    expect(f.p12).toBeUndefined();
  });

  it('ensureDevPki provisions the demo agent once and re-issues it for a new CA', async () => {
    const dir = join(tmp, 'ensure');
    const paths = await ensureDevPki(dir);
    expect(paths.agentCert).toBe(join(dir, 'agents', 'demo.crt'));
    const first = await readFile(paths.agentCert, 'utf8');
    await ensureDevPki(dir);
    expect(await readFile(paths.agentCert, 'utf8')).toBe(first);

    await initDevPki(dir, { force: true });
    await ensureDevPki(dir);
    const r = await openssl(['verify', '-CAfile', paths.caCert, '-purpose', 'sslclient', paths.agentCert]);
    expect(r.stdout).toContain(': OK');
    expect(await readFile(paths.agentCert, 'utf8')).not.toBe(first);
  });
});
