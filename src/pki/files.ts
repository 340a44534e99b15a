/**
 * File helpers of the dev PKI: atomic writes with the final mode already set, and PEM loading.
 * @module
 */
import { X509Certificate as NodeX509, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { KeyAndCert } from './issue.js';

/** Mode of private key and PKCS#12 files. */
export const PRIVATE_FILE_MODE = 0o600;
/** Mode of certificate files: public data. */
export const PUBLIC_FILE_MODE = 0o644;
/** Mode of directories the dev PKI creates. */
export const PRIVATE_DIR_MODE = 0o700;

/**
 * Writes `data` to `path` with exactly `mode` through a private temporary file in the same
 * directory (O_CREAT|O_EXCL|O_NOFOLLOW, never a name someone planted), then renames it over
 * `path`: readers never see a half-written file, a symlink planted at `path` is replaced rather
 * than followed, and the mode is set before any byte lands (open's mode alone is subject to the
 * umask and ignored when the file already exists).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${randomBytes(8).toString('hex')}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600).catch((err: unknown) => {
    throw writeError(path, err);
  });
  try {
    try {
      await fh.chmod(mode);
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    // Only the file this call created: never a name it failed to create.
    await rm(tmp, { force: true });
    throw writeError(path, err);
  }
}

/** The error of a failed write, naming the file asked for (the temporary file's name means nothing to the caller). */
function writeError(path: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  // A system error's message ends with ", <syscall> '<temporary path>'": keep what went wrong.
  const why = typeof e?.syscall === 'string' && typeof e.message === 'string' ? e.message.split(`, ${e.syscall}`)[0] : String((err as Error)?.message ?? err);
  return Object.assign(new Error(`cannot write ${path}: ${why}`, { cause: err }), e?.code ? { code: e.code } : {});
}

/** Creates `dir` (and missing parents) as 0700; an existing directory keeps its mode. */
export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/** True when `path` exists (any type). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Loads a certificate and key pair from PEM files. */
export async function loadKeyAndCert(certPath: string, keyPath: string): Promise<KeyAndCert> {
  const [certPem, keyPem] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  return { certPem, keyPem, certDer: new NodeX509(certPem).raw };
}
