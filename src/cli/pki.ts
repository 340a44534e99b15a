/**
 * `agent-gate pki init|issue|revoke|crl|ocsp-responder`: the dev PKI from the command line.
 * Written paths go to stdout, one per line, so scripts can capture them (the responder prints
 * its URL there instead); everything else, including a generated PKCS#12 password, goes to stderr.
 * @module
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { Command, type ErrorOptions } from 'commander';
import {
  KEY_ALGS,
  REVOCATION_REASONS,
  caDatabasePath,
  devPkiConfigPath,
  devPkiPaths,
  initDevPki,
  isValidAgentName,
  issueAgentFiles,
  revokeCertificate,
  startOcspResponder,
  writeCrl,
  type KeyAlg,
  type RevocationReason,
} from '../pki/index.js';
import { untilSignal } from './command.js';
import { writeOut, writeErr, oneLine } from './output.js';

const DEFAULT_DIR = 'pki/dev';
const DEFAULT_ALG: KeyAlg = 'ec-p256';
// Exit status of refused input and failed operations, as for `config check` (PROTOCOL.md section 12).
const EXIT_ERROR = 2;

/**
 * A command whose every error, commander's own usage errors included, exits with status 2.
 * `createCommand` makes its subcommands the same kind; settings such as a program's
 * exitOverride are still inherited through `copyInheritedSettings`.
 */
class PkiCommand extends Command {
  override createCommand(name?: string): Command {
    return new PkiCommand(name);
  }

  override error(message: string, errorOptions?: ErrorOptions): never {
    return super.error(message, { ...errorOptions, exitCode: EXIT_ERROR });
  }
}

/** Thrown for bad input; reported as one line like any other failure. */
class UsageError extends Error {}

function parseAlg(value: string): KeyAlg {
  if ((KEY_ALGS as readonly string[]).includes(value)) return value as KeyAlg;
  throw new UsageError(`--alg must be one of ${KEY_ALGS.join(', ')}, got ${JSON.stringify(value)}`);
}

function parseReason(value: string | undefined): RevocationReason | undefined {
  if (value === undefined || (REVOCATION_REASONS as readonly string[]).includes(value)) return value as RevocationReason | undefined;
  throw new UsageError(`--reason must be one of ${REVOCATION_REASONS.join(', ')}, got ${JSON.stringify(value)}`);
}

function parsePort(value: string): number {
  // 0 asks for any free port; the printed URL says which one was taken.
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) throw new UsageError(`--port must be a port number from 0 to 65535, got ${JSON.stringify(value)}`);
  return Number(value);
}

/**
 * The certificate or serial `revoke` was given: an existing file wins (PEM, or DER as `openssl
 * x509 -outform der` writes), anything else must be a hex serial as `openssl x509 -serial` or
 * `-text` prints it.
 */
async function certOrSerial(arg: string): Promise<string> {
  const isFile = await stat(arg).then(
    (s) => s.isFile(),
    () => false,
  );
  if (isFile) {
    const raw = await readFile(arg);
    try {
      return new X509Certificate(raw).toString();
    } catch {
      throw new UsageError(`${arg} does not hold a certificate (PEM or DER)`);
    }
  }
  const serial = arg.replace(/^serial=/i, '');
  if (/^(0x)?[0-9a-fA-F:]+$/.test(serial)) return serial;
  throw new UsageError(`${JSON.stringify(arg)} is neither a certificate file nor a hex serial number`);
}

function parseDays(value: string): number {
  if (!/^[1-9][0-9]{0,3}$/.test(value)) throw new UsageError(`--days must be a whole number of days from 1 to 3650, got ${JSON.stringify(value)}`);
  return Number(value);
}

async function readPassword(file: string): Promise<string> {
  const text = await readFile(file, 'utf8');
  // Files written by `echo` end with a newline that is not part of the password.
  const password = text.replace(/\r?\n$/, '');
  if (password.length === 0) throw new UsageError(`--p12-password-file ${file} is empty`);
  if (/[\r\n]/.test(password)) throw new UsageError(`--p12-password-file ${file} must hold a single line`);
  return password;
}

/** Runs `fn`, turning any failure into one `error: ...` line on stderr and exit status 2. */
function guarded<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      // commander's error() honours the program's exitOverride, so callers can test this path.
      const cmd = args[args.length - 1] as Command;
      cmd.error(`error: ${oneLine(err)}`, { exitCode: EXIT_ERROR, code: 'agent-gate.pki.failed' });
    }
  };
}

interface InitOptions {
  dir: string;
  alg: string;
  force?: boolean;
  crlUrl?: string;
  ocspUrl?: string;
  caIssuersUrl?: string;
}

interface RevokeCliOptions {
  dir: string;
  reason?: string;
}

interface CrlCliOptions {
  dir: string;
  days: string;
  out?: string;
}

interface ResponderCliOptions {
  dir: string;
  host: string;
  port: string;
}

interface IssueOptions {
  dir: string;
  alg: string;
  days: string;
  p12?: boolean;
  p12PasswordFile?: string;
}

/** Adds the `pki` command group (`init`, `issue`, `revoke`, `crl`, `ocsp-responder`) to `program`. */
export function registerPkiCommands(program: Command): void {
  const pki = new PkiCommand('pki')
    .copyInheritedSettings(program)
    // Every refusal is one stderr line (exit 2), not followed by the whole help.
    .showHelpAfterError(false)
    .description('manage the dev/staging PKI (CA, server and agent certificates)');
  program.addCommand(pki);

  pki
    .command('init')
    .description('create a CA and a localhost server certificate, unless present')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--alg <alg>', `key algorithm: ${KEY_ALGS.join(', ')}`, DEFAULT_ALG)
    .option('--force', 'recreate the CA and server certificate (invalidates issued agents)')
    .option('--crl-url <url>', 'CRL distribution point put in agent certificates from now on (stored in pki.json)')
    .option('--ocsp-url <url>', 'OCSP responder URL (AIA) put in agent certificates from now on (stored in pki.json)')
    .option('--ca-issuers-url <url>', 'CA certificate URL (AIA caIssuers) put in agent certificates from now on')
    .action(
      guarded(async (opts: InitOptions, cmd: Command) => {
        const alg = parseAlg(opts.alg);
        const urls = { crlUrl: opts.crlUrl, ocspUrl: opts.ocspUrl, caIssuersUrl: opts.caIssuersUrl };
        const configWritten = Object.values(urls).some((u) => u !== undefined);
        const { dir, created } = await initDevPki(opts.dir, { alg, force: opts.force === true, ...urls });
        const written = configWritten ? [devPkiConfigPath(dir)] : [];
        if (!created) {
          writeErr(cmd, `dev PKI already present in ${dir}; ${configWritten ? 'only pki.json updated' : 'nothing written'} (use --force to recreate)\n`);
        } else {
          const p = devPkiPaths(dir);
          written.unshift(p.caCert, p.caKey, p.serverCert, p.serverKey);
        }
        if (written.length > 0) writeOut(cmd, written.join('\n') + '\n');
      }),
    );

  pki
    .command('issue')
    .description('issue a short-lived agent client certificate (CN and SAN URI urn:agent:<name>)')
    .argument('<name>', 'agent name: ^[a-z0-9][a-z0-9._-]{0,62}$')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--alg <alg>', `key algorithm: ${KEY_ALGS.join(', ')}`, DEFAULT_ALG)
    .option('--days <days>', 'validity in days', '30')
    .option('--p12', 'also write a PKCS#12 bundle (needs openssl)')
    .option('--p12-password-file <file>', 'PKCS#12 password (first line); default: generated and printed to stderr')
    .action(
      guarded(async (name: string, opts: IssueOptions, cmd: Command) => {
        if (!isValidAgentName(name)) {
          throw new UsageError(`invalid agent name ${JSON.stringify(name)}: must match ^[a-z0-9][a-z0-9._-]{0,62}$`);
        }
        const alg = parseAlg(opts.alg);
        const validityDays = parseDays(opts.days);
        if (opts.p12PasswordFile !== undefined && !opts.p12) throw new UsageError('--p12-password-file needs --p12');

        let p12Password: string | undefined;
        let generated = false;
        if (opts.p12) {
          if (opts.p12PasswordFile !== undefined) p12Password = await readPassword(opts.p12PasswordFile);
          else {
            p12Password = randomBytes(18).toString('base64url');
            generated = true;
          }
        }
        const files = await issueAgentFiles(opts.dir, name, { alg, validityDays, p12Password });
        writeOut(cmd, [files.cert, files.key, ...(files.p12 ? [files.p12] : [])].join('\n') + '\n');
        // Shown once and never stored: whoever runs the command passes it on to the agent.
        if (generated) writeErr(cmd, `p12 password: ${p12Password}\n`);
      }),
    );

  pki
    .command('revoke')
    .description('mark a certificate of the dev CA revoked in its database (index.txt)')
    .argument('<cert-or-serial>', 'certificate file (PEM or DER) or hex serial number')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--reason <reason>', `revocation reason: ${REVOCATION_REASONS.join(', ')}`)
    .action(
      guarded(async (arg: string, opts: RevokeCliOptions, cmd: Command) => {
        const reason = parseReason(opts.reason);
        const { entry, changed } = await revokeCertificate(opts.dir, await certOrSerial(arg), { reason });
        const since = entry.revokedAt?.toISOString() ?? '?';
        const why = entry.reason ? ` (${entry.reason})` : '';
        if (!changed) {
          writeErr(cmd, `serial ${entry.serial} (${entry.subject}) was already revoked at ${since}${why}; nothing written\n`);
          return;
        }
        writeOut(cmd, `${caDatabasePath(opts.dir)}\n`);
        // The index alone changes nothing for relying parties: say what publishes it.
        writeErr(cmd, `revoked serial ${entry.serial} (${entry.subject}) at ${since}${why}; run \`agent-gate pki crl\` or serve OCSP to publish it\n`);
      }),
    );

  pki
    .command('crl')
    .description('write a signed CRL of the dev CA from its database')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--days <days>', 'days until nextUpdate', '7')
    .option('--out <file>', 'where to write the PEM CRL (default <dir>/ca.crl)')
    .action(
      guarded(async (opts: CrlCliOptions, cmd: Command) => {
        const days = parseDays(opts.days);
        const path = await writeCrl(opts.dir, { days, out: opts.out });
        writeOut(cmd, `${path}\n`);
      }),
    );

  pki
    .command('ocsp-responder')
    .description('serve OCSP for the dev CA over HTTP until SIGTERM or SIGINT; re-reads index.txt on every request')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .requiredOption('--port <port>', 'port to listen on (0: any free port)')
    .action(
      guarded(async (opts: ResponderCliOptions, cmd: Command) => {
        const port = parsePort(opts.port);
        const { caCert, caKey } = devPkiPaths(opts.dir);
        const present = await Promise.all([caCert, caKey].map((f) => stat(f).then(() => true, () => false)));
        if (present.includes(false)) throw new UsageError(`no CA in ${opts.dir} (${caCert} and ${caKey} expected): initialise the dev PKI first`);
        const responder = await startOcspResponder({ dir: opts.dir, host: opts.host, port });
        // Handlers go in before the URL is printed: whoever waits for the URL may signal at once.
        const stopped = untilSignal();
        writeOut(cmd, `${responder.url}\n`);
        writeErr(cmd, `OCSP responder for ${caCert} listening on ${responder.url}\n`);
        const signal = await stopped;
        await responder.close();
        writeErr(cmd, `${signal}: stopped after ${responder.requests} request(s)\n`);
      }),
    );
}
