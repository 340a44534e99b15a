/**
 * PKCS#12 export through `openssl pkcs12 -export`.
 *
 * Why openssl and not a library: node-forge's PKCS#12 writer handles RSA keys only, and the dev
 * PKI defaults to ECDSA and offers Ed25519; one openssl process per bundle is cheap, and only
 * `--p12` needs it.
 * @module
 */
import { spawn } from 'node:child_process';

/** Inputs of {@link exportPkcs12}: PEM files already on disk. */
export interface Pkcs12Input {
  certPath: string;
  keyPath: string;
  /** Chain certificates to include (the issuing CA). */
  caPath: string;
  /** Friendly name shown by keychains. */
  friendlyName: string;
  password: string;
}

/**
 * Runs openssl and returns the PKCS#12 DER. The password goes through stdin (`-passout stdin`):
 * never in argv (visible in ps) nor in the environment (inherited by anything openssl spawns).
 * Ciphers are pinned to AES-256-CBC with a SHA-256 MAC so OpenSSL 1.1 produces the same modern
 * bundle OpenSSL 3 does by default, and nothing needs `-legacy` to open it.
 */
export async function exportPkcs12(input: Pkcs12Input): Promise<Buffer> {
  if (input.password.length === 0) throw new TypeError('the PKCS#12 password must not be empty');
  if (/[\r\n]/.test(input.password)) throw new TypeError('the PKCS#12 password must be one line');
  const args = [
    'pkcs12', '-export',
    '-in', input.certPath,
    '-inkey', input.keyPath,
    '-certfile', input.caPath,
    '-name', input.friendlyName,
    '-keypbe', 'AES-256-CBC',
    '-certpbe', 'AES-256-CBC',
    '-macalg', 'sha256',
    '-passout', 'stdin',
  ];
  const { code, stdout, stderr } = await run('openssl', args, `${input.password}\n`);
  if (code !== 0 || stdout.length === 0) {
    const why = stderr.toString('utf8').trim().split('\n')[0] ?? '';
    throw new Error(`openssl pkcs12 -export failed (exit ${code})${why ? `: ${why}` : ''}`);
  }
  return stdout;
}

interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: Buffer;
}

function run(cmd: string, args: string[], stdin: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ENOENT' ? new Error(`${cmd} not found on PATH; it is needed to write PKCS#12 files`, { cause: e }) : e);
    });
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }));
    // openssl may exit before reading stdin (bad arguments); its exit code reports that, not EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}
