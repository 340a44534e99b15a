/**
 * The dev CA's database of issued certificates, in the `index.txt` format of `openssl ca`, so
 * that `openssl ocsp -index`, `openssl ca -gencrl` and our own CRL writer and OCSP responder all
 * read the same file. Each line holds six tab-separated fields:
 *
 *     V|R|E  notAfter  [revokedAt[,reason]]  SERIAL  unknown  /CN=subject
 *
 * Times are ASN.1 UTCTime text (`YYMMDDHHMMSSZ`; GeneralizedTime from 2050 on, as openssl
 * writes them), serials upper-case hex as OpenSSL's `BN_bn2hex` prints them: openssl looks
 * serials up by string comparison, so any other spelling would make it answer `unknown`.
 * @module
 */
import { X509Certificate as NodeX509 } from 'node:crypto';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { PUBLIC_FILE_MODE, exists, writeFileAtomic } from './files.js';

/** Revocation reasons `revokeCertificate` records (RFC 5280 5.3.1 names, as openssl spells them). */
export type RevocationReason = 'keyCompromise' | 'superseded' | 'cessationOfOperation' | 'unspecified';

/** Every {@link RevocationReason}, for CLI choices and validation. */
export const REVOCATION_REASONS: readonly RevocationReason[] = ['keyCompromise', 'superseded', 'cessationOfOperation', 'unspecified'];

/**
 * CRLReason codes (RFC 5280 5.3.1) of every reason name `openssl ca` may write in the index;
 * `keyTime`/`CAkeyTime`/`holdInstruction` are openssl's spellings that carry an extra field.
 */
const REASON_CODES: Record<string, number> = {
  unspecified: 0,
  keycompromise: 1,
  keytime: 1,
  cacompromise: 2,
  cakeytime: 2,
  affiliationchanged: 3,
  superseded: 4,
  cessationofoperation: 5,
  certificatehold: 6,
  holdinstruction: 6,
  removefromcrl: 8,
};

const REASON_NAMES: Record<number, string> = {
  0: 'unspecified',
  1: 'keyCompromise',
  2: 'CACompromise',
  3: 'affiliationChanged',
  4: 'superseded',
  5: 'cessationOfOperation',
  6: 'certificateHold',
  8: 'removeFromCRL',
};

/** The RFC 5280 CRLReason code of a reason name (case-insensitive, openssl's aliases too); undefined when unknown. */
export function reasonCode(reason: string): number | undefined {
  return REASON_CODES[reason.toLowerCase()];
}

/** One line of the database. */
export interface CaDbEntry {
  status: 'valid' | 'revoked' | 'expired';
  /** Upper-case hex, even length, no leading zero bytes: `BN_bn2hex` form. */
  serial: string;
  notAfter: Date;
  /** Set when revoked. */
  revokedAt?: Date;
  /** Canonical RFC 5280 name (`keyCompromise`, ...) when one was recorded. */
  reason?: string;
  /** Subject in openssl's one-line form, `/CN=bot-1`. */
  subject: string;
}

const STATUS_LETTER = { valid: 'V', revoked: 'R', expired: 'E' } as const;
const LETTER_STATUS: Record<string, CaDbEntry['status']> = { V: 'valid', R: 'revoked', E: 'expired' };

/** Location of the database in `dir`. */
export function caDatabasePath(dir: string): string {
  return join(resolve(dir), 'index.txt');
}

/**
 * A serial number in `BN_bn2hex` form: upper-case hex, leading zero bytes dropped, padded to
 * whole bytes, `00` for zero. Accepts colons and spaces (openssl's `-text` output) and `0x`.
 */
export function canonicalSerial(input: string): string {
  const hex = input.trim().replace(/^0x/i, '').replace(/[:\s]/g, '');
  if (!/^[0-9a-fA-F]{1,80}$/.test(hex)) throw new TypeError(`not a hex serial number: ${JSON.stringify(input)}`);
  let s = hex.toUpperCase().replace(/^0+/, '');
  if (s.length % 2 === 1) s = `0${s}`;
  return s === '' ? '00' : s;
}

/** ASN.1 time text as openssl's index holds it: UTCTime for 1950-2049, GeneralizedTime otherwise. */
export function formatIndexTime(d: Date): string {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const year = d.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  return year >= 1950 && year < 2050 ? `${digits.slice(2)}Z` : `${digits}Z`;
}

/** Parses {@link formatIndexTime} text (either length); throws on anything else. */
export function parseIndexTime(text: string): Date {
  const m = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) throw new TypeError(`bad time ${JSON.stringify(text)}`);
  const [, y = '', mo = '', d = '', h = '', mi = '', s = ''] = m;
  // RFC 5280 4.1.2.5.1: two-digit years 50-99 are 19xx, 00-49 are 20xx.
  const year = y.length === 4 ? Number(y) : Number(y) >= 50 ? 1900 + Number(y) : 2000 + Number(y);
  const date = new Date(Date.UTC(year, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)));
  if (Number.isNaN(date.getTime())) throw new TypeError(`bad time ${JSON.stringify(text)}`);
  return date;
}

/** Parses the text of an index file; throws naming the line for anything openssl would not read either. */
export function parseCaDatabase(text: string): CaDbEntry[] {
  const entries: CaDbEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/\r$/, '');
    if (line === '') continue;
    try {
      entries.push(parseLine(line));
    } catch (err) {
      throw new Error(`index.txt line ${i + 1}: ${(err as Error).message}`, { cause: err });
    }
  }
  return entries;
}

function parseLine(line: string): CaDbEntry {
  const fields = line.split('\t');
  if (fields.length !== 6) throw new TypeError(`expected 6 tab-separated fields, got ${fields.length}`);
  const [letter = '', notAfter = '', revoked = '', serial = '', , subject = ''] = fields;
  const status = LETTER_STATUS[letter];
  if (!status) throw new TypeError(`unknown status ${JSON.stringify(letter)}`);
  const entry: CaDbEntry = { status, serial: canonicalSerial(serial), notAfter: parseIndexTime(notAfter), subject };
  if (status === 'revoked') {
    const [when = '', reason] = revoked.split(',');
    entry.revokedAt = parseIndexTime(when);
    if (reason !== undefined) {
      const code = reasonCode(reason);
      if (code === undefined) throw new TypeError(`unknown revocation reason ${JSON.stringify(reason)}`);
      entry.reason = REASON_NAMES[code];
    }
  }
  return entry;
}

/** The text of an index file holding `entries`. */
export function formatCaDatabase(entries: readonly CaDbEntry[]): string {
  return entries
    .map((e) => {
      let revoked = '';
      if (e.status === 'revoked' && e.revokedAt) revoked = formatIndexTime(e.revokedAt) + (e.reason ? `,${e.reason}` : '');
      // A tab or newline in the subject would shift every field after it.
      const subject = e.subject.replace(/[\t\r\n]/g, ' ');
      return [STATUS_LETTER[e.status], formatIndexTime(e.notAfter), revoked, e.serial, 'unknown', subject].join('\t') + '\n';
    })
    .join('');
}

/** Files: the database of `dir`; empty when there is none yet (a PKI created before it existed). */
export async function readCaDatabase(dir: string): Promise<CaDbEntry[]> {
  let text: string;
  try {
    text = await readFile(caDatabasePath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return parseCaDatabase(text);
}

/**
 * `unique_subject = no`: re-issuing an agent under the same name is the normal case here, and
 * with the openssl default (`yes`) `openssl ca` would refuse to work on our index.
 */
const ATTR_TEXT = 'unique_subject = no\n';

async function writeDatabase(dir: string, entries: readonly CaDbEntry[]): Promise<void> {
  const root = resolve(dir);
  await writeFileAtomic(join(root, 'index.txt.attr'), ATTR_TEXT, PUBLIC_FILE_MODE);
  await writeFileAtomic(caDatabasePath(root), formatCaDatabase(entries), PUBLIC_FILE_MODE);
}

/** Files: creates an empty database in `dir` unless one exists; with `reset`, empties it (a new CA). */
export async function ensureCaDatabase(dir: string, opts: { reset?: boolean } = {}): Promise<void> {
  await withDatabaseLock(dir, async () => {
    if (opts.reset || !(await exists(caDatabasePath(dir)))) await writeDatabase(dir, []);
  });
}

/** The one-line subject openssl writes in the index, from Node's newline-separated form. */
function onelineSubject(cert: NodeX509): string {
  return cert.subject
    .split('\n')
    .filter((rdn) => rdn !== '')
    .map((rdn) => `/${rdn}`)
    .join('');
}

function entryOf(cert: NodeX509): CaDbEntry {
  return {
    status: 'valid',
    serial: canonicalSerial(cert.serialNumber),
    notAfter: new Date(Date.parse(cert.validTo)),
    subject: onelineSubject(cert),
  };
}

/**
 * Files: adds a certificate the CA in `dir` has just issued, as valid. Recording an already
 * recorded serial changes nothing (openssl refuses duplicate serials; ours are random anyway).
 */
export async function recordIssued(dir: string, certDer: Buffer): Promise<CaDbEntry> {
  const entry = entryOf(new NodeX509(certDer));
  return withDatabaseLock(dir, async () => {
    const entries = await readCaDatabase(dir);
    const known = entries.find((e) => e.serial === entry.serial);
    if (known) return known;
    await writeDatabase(dir, [...entries, entry]);
    return entry;
  });
}

/** Options of {@link revokeCertificate}. */
export interface RevokeOptions {
  /**
   * Recorded in the index, the CRL and OCSP answers. `unspecified` is recorded as no reason at
   * all: RFC 5280 5.3.1 says the reason code SHOULD then be absent, and that is what
   * `openssl ca -revoke` without `-crl_reason` writes, so both tools tell the same story.
   */
  reason?: RevocationReason;
  /** Revocation time; default now. Whole seconds are kept, as the index holds no more. */
  at?: Date;
}

/**
 * Files: marks a certificate of the CA in `dir` revoked, by PEM or by serial (hex, colons
 * allowed). Idempotent: revoking again keeps the first date and reason (`changed: false`).
 * An unknown serial is an error; a PEM certificate the CA issued but that is missing from the
 * index (issued before the index existed) is added and revoked, as `openssl ca -revoke` does.
 */
export async function revokeCertificate(
  dir: string,
  certPemOrSerial: string,
  opts: RevokeOptions = {},
): Promise<{ entry: CaDbEntry; changed: boolean }> {
  if (opts.reason !== undefined && !REVOCATION_REASONS.includes(opts.reason)) {
    throw new TypeError(`reason must be one of ${REVOCATION_REASONS.join(', ')}, got ${JSON.stringify(opts.reason)}`);
  }
  const at = new Date(Math.floor((opts.at ?? new Date()).getTime() / 1000) * 1000);
  if (Number.isNaN(at.getTime())) throw new TypeError('at must be a valid date');

  let fromCert: CaDbEntry | undefined;
  let serial: string;
  if (certPemOrSerial.includes('-----BEGIN')) {
    const cert = new NodeX509(certPemOrSerial);
    await assertIssuedBy(dir, cert);
    fromCert = entryOf(cert);
    serial = fromCert.serial;
  } else {
    serial = canonicalSerial(certPemOrSerial);
  }

  return withDatabaseLock(dir, async () => {
    const entries = await readCaDatabase(dir);
    let entry = entries.find((e) => e.serial === serial);
    if (!entry) {
      if (!fromCert) throw new Error(`serial ${serial} is not in ${caDatabasePath(dir)}`);
      entry = fromCert;
      entries.push(entry);
    }
    if (entry.status === 'revoked') return { entry, changed: false };
    entry.status = 'revoked';
    entry.revokedAt = at;
    if (opts.reason && opts.reason !== 'unspecified') entry.reason = opts.reason;
    await writeDatabase(dir, entries);
    return { entry, changed: true };
  });
}

async function assertIssuedBy(dir: string, cert: NodeX509): Promise<void> {
  const caPath = join(resolve(dir), 'ca.crt');
  let ca: NodeX509;
  try {
    ca = new NodeX509(await readFile(caPath));
  } catch (err) {
    throw new Error(`cannot read the CA certificate ${caPath}: ${(err as Error).message}`, { cause: err });
  }
  // Without this, a certificate of another CA with a colliding serial would revoke ours.
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new Error(`certificate ${cert.subject.replace(/\n/g, ', ')} (serial ${cert.serialNumber}) was not issued by the CA in ${resolve(dir)}`);
  }
}

// --- locking -----------------------------------------------------------------------------

/** Writers in this process queue per directory, so parallel issues in one process never poll. */
const queues = new Map<string, Promise<unknown>>();

const LOCK_WAIT_MS = 10_000;
// Longer than any read-modify-write of the index takes; a lock this old was left by a crash.
const LOCK_STALE_MS = 30_000;

/**
 * Runs `fn` holding the database lock of `dir`: read-modify-write of a whole file through a
 * rename would otherwise lose one of two concurrent updates (two `pki issue` runs from a
 * script). `<dir>/index.txt.lock` is created exclusively; openssl itself takes no lock, so
 * running `openssl ca` at the same time as us remains unsafe, as it is with itself.
 */
export async function withDatabaseLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const key = resolve(dir);
  const previous = queues.get(key) ?? Promise.resolve();
  const run = previous.then(() => withFileLock(key, fn));
  const settled = run.catch(() => undefined);
  queues.set(key, settled);
  try {
    return await run;
  } finally {
    if (queues.get(key) === settled) queues.delete(key);
  }
}

async function withFileLock<T>(root: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(root, 'index.txt.lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await open(lock, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const age = await stat(lock).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (age > LOCK_STALE_MS) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${lock} is held by another process; remove it if no agent-gate pki command is running`);
    // Jitter keeps two waiting processes from retrying in lockstep.
    await delay(20 + Math.floor(Math.random() * 30));
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}
