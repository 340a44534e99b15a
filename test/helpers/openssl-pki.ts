/**
 * Certificates the dev PKI factories cannot make (name constraints, unknown critical
 * extensions, odd key usages, huge RSA exponents), built with the openssl CLI in a temp dir,
 * and `openssl verify` as an oracle.
 */
import { execFile } from 'node:child_process';
import { generatePrimeSync, createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KeyAndCert } from '../../src/pki/index.js';

const execFileP = promisify(execFile);

/** A scratch directory for one suite. */
export class OpensslPki {
  readonly dir = mkdtempSync(join(tmpdir(), 'agent-gate-ossl-'));
  private seq = 0;

  /** A fresh key: `ec` (P-256) or `rsa:<bits>`; PEM. */
  async key(kind = 'ec'): Promise<string> {
    const out = join(this.dir, `k${++this.seq}.key`);
    const args = kind === 'ec' ? ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${kind.split(':')[1] ?? 2048}`];
    await execFileP('openssl', ['genpkey', ...args, '-out', out]);
    return readFileSync(out, 'utf8');
  }

  /**
   * A certificate for `keyPem` (self-signed when no issuer) with openssl x509v3_config lines
   * `ext`; `days` negative gives an expired one, `startsInDays` a not-yet-valid one.
   */
  async cert(o: { subj: string; ext: string[]; keyPem: string; issuer?: KeyAndCert; days?: number; startsInDays?: number }): Promise<KeyAndCert> {
    const base = join(this.dir, `c${++this.seq}`);
    writeFileSync(`${base}.key`, o.keyPem, { mode: 0o600 });
    writeFileSync(`${base}.ext`, `[v3]\n${o.ext.join('\n')}\n`);
    const days = o.days ?? 30;
    const start = o.startsInDays ?? (days < 0 ? days - 2 : -1);
    const end = days < 0 ? days : start + days + 1;
    const fmt = (d: number) => new Date(Date.now() + d * 86_400_000).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
    const issuerKey = o.issuer ? `${base}.ikey` : `${base}.key`;
    if (o.issuer) {
      writeFileSync(`${base}.icrt`, o.issuer.certPem);
      writeFileSync(issuerKey, o.issuer.keyPem, { mode: 0o600 });
    }
    // `openssl ca`, because `x509 -req` cannot set notBefore in OpenSSL 3.0.
    await execFileP('openssl', ['req', '-new', '-key', `${base}.key`, '-subj', o.subj, '-out', `${base}.csr`]);
    const conf = `${base}.cnf`;
    writeFileSync(
      conf,
      [
        '[ca]', 'default_ca = d', '[d]', `database = ${base}.idx`, `new_certs_dir = ${this.dir}`, `serial = ${base}.srl`,
        'default_md = sha256', 'policy = p', 'unique_subject = no', 'copy_extensions = none', '[p]', 'commonName = optional',
        'organizationName = optional', 'emailAddress = optional',
      ].join('\n') + '\n',
    );
    writeFileSync(`${base}.idx`, '');
    writeFileSync(`${base}.srl`, `40${randomBytes(15).toString('hex')}\n`);
    await execFileP('openssl', [
      'ca', '-batch', '-notext', '-config', conf, '-in', `${base}.csr`, '-out', `${base}.crt`,
      ...(o.issuer ? ['-cert', `${base}.icrt`, '-keyfile', issuerKey] : ['-selfsign', '-keyfile', `${base}.key`]),
      '-startdate', fmt(start), '-enddate', fmt(end), '-extfile', `${base}.ext`, '-extensions', 'v3', '-subj', o.subj, '-preserveDN',
    ]);
    const certPem = readFileSync(`${base}.crt`, 'utf8');
    return { certPem, keyPem: o.keyPem, certDer: Buffer.from(new X509Certificate(certPem).raw) };
  }

  /** `openssl verify -purpose sslclient` of `leaf` with `untrusted` against `caFile` PEM; true when it passes. */
  async verify(caPem: string, untrusted: KeyAndCert[], leaf: KeyAndCert): Promise<{ ok: boolean; out: string }> {
    const base = join(this.dir, `v${++this.seq}`);
    writeFileSync(`${base}.ca`, caPem);
    writeFileSync(`${base}.u`, untrusted.map((c) => c.certPem).join(''));
    writeFileSync(`${base}.leaf`, leaf.certPem);
    const args = ['verify', '-CAfile', `${base}.ca`, ...(untrusted.length ? ['-untrusted', `${base}.u`] : []), '-purpose', 'sslclient', `${base}.leaf`];
    try {
      const { stdout, stderr } = await execFileP('openssl', args);
      return { ok: true, out: stdout + stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  }
}

function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [m, ((a % m) + m) % m, 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new Error('not invertible');
  return ((s0 % m) + m) % m;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b) [a, b] = [b, a % b];
  return a;
}

const b64u = (n: bigint) => {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, 'hex').toString('base64url');
};

/**
 * An RSA private key (PKCS#8 PEM) with a public exponent of about `expBits` bits: the
 * amplification of issue 13 class 4 (verification costs like a private-key operation).
 * OpenSSL refuses exponents over 64 bits for moduli over 3072 bits, so `bits` <= 3072 there.
 */
export function hugeExponentRsaKey(bits: number, expBits: number): string {
  for (;;) {
    const p = generatePrimeSync(bits / 2, { bigint: true });
    const q = generatePrimeSync(bits / 2, { bigint: true });
    if (p === q) continue;
    const phi = (p - 1n) * (q - 1n);
    let e = BigInt(`0x${randomBytes(Math.ceil(expBits / 8)).toString('hex')}`) | 1n | (1n << BigInt(expBits - 1));
    while (gcd(e, phi) !== 1n) e += 2n;
    const d = modInverse(e, phi);
    const n = p * q;
    const jwk = { kty: 'RSA', n: b64u(n), e: b64u(e), d: b64u(d), p: b64u(p), q: b64u(q), dp: b64u(d % (p - 1n)), dq: b64u(d % (q - 1n)), qi: b64u(modInverse(q, p)) };
    return createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }) as string;
  }
}

/** x509v3 lines of a CA; `extra` appended. */
export const caExt = (extra: string[] = []) => ['basicConstraints=critical,CA:true', 'keyUsage=critical,keyCertSign,cRLSign', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid', ...extra];
/** x509v3 lines of an agent certificate with `san`; `extra` appended. */
export const leafExt = (san: string, extra: string[] = [], ku = 'critical,digitalSignature') => [
  'basicConstraints=critical,CA:false',
  ...(ku ? [`keyUsage=${ku}`] : []),
  'extendedKeyUsage=clientAuth',
  ...(san ? [`subjectAltName=${san}`] : []),
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid',
  ...extra,
];
