/**
 * Writing `agent-gate nginx-config`'s output without trusting the target directory: DIR holds
 * the HMAC secret, so it must be the caller's own and closed to other users, and no file is
 * written by following a name someone else could have planted there.
 *
 * Files are written by the dev PKI's `writeFileAtomic` (src/pki/files.ts): a private temporary
 * file (O_CREAT|O_EXCL|O_NOFOLLOW, mode set before any byte lands) renamed over the target.
 * rename(2) replaces the directory entry itself, so a symlink planted at the target is replaced,
 * never followed; and unlike O_EXCL on the final name, it also re-renders over the previous
 * output (key rotation) with nginx never reading a half-written file.
 * @module
 */
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** Mode of a missing DIR when created; search for others is added afterwards (see {@link prepareOutputDir}). */
const NEW_DIR_MODE = 0o700;

function callerUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Refuses `dir` unless it is a real directory (not a symlink) owned by the caller and not
 * writable by group or others; `what` names it in the message.
 */
async function checkOwnDir(dir: string, what: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) throw new TypeError(`${what} ${dir} is a symbolic link: give the real directory`);
  if (!st.isDirectory()) throw new TypeError(`${what} ${dir} is not a directory`);
  const uid = callerUid();
  if (uid !== undefined && st.uid !== uid) throw new TypeError(`${what} ${dir} is owned by uid ${st.uid}, not by the caller (uid ${uid}): it will hold the HMAC secret, choose a directory of your own`);
  if ((st.mode & 0o022) !== 0) throw new TypeError(`${what} ${dir} is writable by group or others (mode ${octal(st.mode)}): it will hold the HMAC secret, chmod go-w or choose another directory`);
}

/**
 * Makes `dir` ready for the output: creates it 0700 when missing (parents 0755), refuses an
 * existing one another user owns or could write to, then grants search (not read, not write)
 * to group and others on DIR and DIR/temp, which nginx's workers need when it starts as root.
 */
export async function prepareOutputDir(dir: string): Promise<void> {
  await mkdir(dirname(dir), { recursive: true, mode: 0o755 });
  try {
    await mkdir(dir, { mode: NEW_DIR_MODE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await checkOwnDir(dir, '--dir');
  const st = await lstat(dir);
  if ((st.mode & 0o011) !== 0o011) await chmod(dir, (st.mode & 0o7777) | 0o011);
  const temp = join(dir, 'temp');
  try {
    await mkdir(temp, { mode: 0o755 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await checkOwnDir(temp, '--dir');
  await chmod(temp, 0o755);
}
