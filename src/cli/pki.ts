/**
 * `agent-gate pki init` and `agent-gate pki issue <name>`: the dev PKI from the command line.
 * Written paths go to stdout, one per line, so scripts can capture them; everything else,
 * including a generated PKCS#12 password, goes to stderr.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Command, type ErrorOptions } from 'commander';
import { KEY_ALGS, devPkiPaths, initDevPki, isValidAgentName, issueAgentFiles, type KeyAlg } from '../pki/index.js';

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

// Through commander's output configuration, so a program (or a test) that redirects it gets ours too.
function writeOut(cmd: Command, text: string): void {
  const write = cmd.configureOutput().writeOut ?? ((s: string) => process.stdout.write(s));
  write(text);
}

function writeErr(cmd: Command, text: string): void {
  const write = cmd.configureOutput().writeErr ?? ((s: string) => process.stderr.write(s));
  write(text);
}

function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\s*\n\s*/g, ' ').trim();
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
}

interface IssueOptions {
  dir: string;
  alg: string;
  days: string;
  p12?: boolean;
  p12PasswordFile?: string;
}

/** Adds the `pki` command group (`init`, `issue`) to `program`. */
export function registerPkiCommands(program: Command): void {
  const pki = new PkiCommand('pki')
    .copyInheritedSettings(program)
    .description('manage the dev/staging PKI (CA, server and agent certificates)');
  program.addCommand(pki);

  pki
    .command('init')
    .description('create a CA and a localhost server certificate, unless present')
    .option('--dir <dir>', 'PKI directory', DEFAULT_DIR)
    .option('--alg <alg>', `key algorithm: ${KEY_ALGS.join(', ')}`, DEFAULT_ALG)
    .option('--force', 'recreate the CA and server certificate (invalidates issued agents)')
    .action(
      guarded(async (opts: InitOptions, cmd: Command) => {
        const alg = parseAlg(opts.alg);
        const { dir, created } = await initDevPki(opts.dir, { alg, force: opts.force === true });
        if (!created) writeErr(cmd, `dev PKI already present in ${dir}; nothing written (use --force to recreate)\n`);
        else {
          const p = devPkiPaths(dir);
          writeOut(cmd, [p.caCert, p.caKey, p.serverCert, p.serverKey].join('\n') + '\n');
        }
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
}
