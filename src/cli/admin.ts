/**
 * `agent-gate admin ...`: the admin API of a running gate (PROTOCOL.md section 1) from the
 * command line.
 *
 * - `admin cooldowns`, `admin cooldown-clear <thumbprint>`
 * - `admin denylist`, `admin deny (--thumbprint T | --agent-id ID) --reason R [--ttl S]`,
 *   `admin undeny <id>`
 * - `admin refusal <id | urn:agent-gate:refusal:id>`
 *
 * Every command takes `--url` (env `GATE_ADMIN_URL`, default `http://127.0.0.1:9464`) and a
 * credential: `--token-file` (env `GATE_ADMIN_TOKEN_FILE`, the file the gate reads; the secret
 * is never taken from argv, nor printed) and/or `--cert`/`--key`, an admin client certificate
 * for an HTTPS admin listener with `GATE_ADMIN_CLIENT_CA`; `--ca` verifies that listener.
 *
 * Output: one JSON document on stdout. Exit status: 0 done; 1 refused by the gate (one line
 * `error: <code> (<status>) instance=<instance>` on stderr) or gate unreachable; 2 usage,
 * option or credential-file error (one line on stderr).
 * @module
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Argument, Command, InvalidArgumentError, Option, type ErrorOptions } from 'commander';
import { Agent, request } from 'undici';
import { readBounded } from '../client/response.js';
import { checkCaBundle } from '../lib/pem.js';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const DEFAULT_URL = 'http://127.0.0.1:9464';
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const REFUSAL_URN = 'urn:agent-gate:refusal:';
// The admin API's own limits (src/admin/routes.ts), checked here so a typo is a usage error.
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;
const DENY_ID = /^[0-9a-f]{16}$/;
const REFUSAL_ID = /^[A-Za-z0-9]{1,64}$/;
const MAX_TTL_S = 31_536_000;

/** Wrong input or setup on the caller's side: exit 2. */
class UsageError extends Error {}

/** The gate answered, but not with success: exit 1 with this line. */
class Refused extends Error {}

/** The commander error code of a command that ran and failed (exit status of its own). */
const FAILED = 'agent-gate.admin.failed';

/** A command whose usage errors (commander's own included) exit with status 2. */
class AdminCommand extends Command {
  override createCommand(name?: string): Command {
    return new AdminCommand(name);
  }

  override error(message: string, errorOptions?: ErrorOptions): never {
    // commander gives its InvalidArgumentError exit status 1: a usage error all the same.
    const exitCode = errorOptions?.code === FAILED ? errorOptions.exitCode : EXIT_USAGE;
    return super.error(message, { ...errorOptions, exitCode });
  }
}

interface ConnFlags {
  url: string;
  tokenFile?: string;
  cert?: string;
  key?: string;
  ca?: string;
  servername?: string;
  timeout: number;
}

interface DenyFlags extends ConnFlags {
  thumbprint?: string;
  agentId?: string;
  reason: string;
  ttl?: number;
}

const oneLine = (err: unknown): string => (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').trim();

function checked(re: RegExp, want: string): (value: string) => string {
  return (value) => {
    if (!re.test(value)) throw new InvalidArgumentError(`want ${want}`);
    return value;
  };
}

function intIn(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`want an integer from ${min} to ${max}`);
    return n;
  };
}

function refusalId(value: string): string {
  const id = value.toLowerCase().startsWith(REFUSAL_URN) ? value.slice(REFUSAL_URN.length) : value;
  if (!REFUSAL_ID.test(id)) throw new InvalidArgumentError(`want a refusal id or ${REFUSAL_URN}<id>`);
  return id;
}

function readFor(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? oneLine(err)}`);
  }
}

/** A --ca file that holds certificates only, and at least one: Node's TLS would trust the system roots for an empty one. */
function readCa(path: string): string {
  const pem = readFor('--ca', path).toString('utf8');
  try {
    checkCaBundle(pem);
  } catch (err) {
    throw new UsageError(`--ca ${path}: ${(err as Error).message}`);
  }
  return pem;
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  return isIP(h) === 4 ? h.startsWith('127.') : h === '::1';
}

/** The admin listener, reached with the credential of `flags`. */
class AdminApi {
  private readonly root: string;
  private readonly headers: Record<string, string> = {};
  private readonly dispatcher: Agent;

  constructor(flags: ConnFlags) {
    let url: URL;
    try {
      url = new URL(flags.url);
    } catch {
      throw new UsageError(`--url: not a URL: ${flags.url}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url: want http:// or https:// (got ${url.protocol})`);
    if (url.username || url.password) throw new UsageError('--url: credentials go in --token-file, not in the URL');
    const https = url.protocol === 'https:';
    if (!https && [flags.cert, flags.key, flags.ca, flags.servername].some((v) => v !== undefined)) {
      throw new UsageError('--cert, --key, --ca and --servername need an https:// --url');
    }
    if ((flags.cert === undefined) !== (flags.key === undefined)) throw new UsageError('--cert and --key go together');
    if (flags.tokenFile === undefined && flags.cert === undefined) {
      throw new UsageError('no admin credential: give --token-file (or set GATE_ADMIN_TOKEN_FILE), or --cert and --key');
    }
    if (flags.tokenFile !== undefined) {
      // Trimmed as the gate trims it; anything but one line of visible ASCII cannot be a header value.
      const secret = readFor('--token-file', flags.tokenFile).toString('utf8').trim();
      if (!/^[\x21-\x7e]+$/.test(secret)) throw new UsageError(`--token-file ${flags.tokenFile}: want one line holding the admin secret`);
      // The admin listener is plain HTTP only on loopback: elsewhere the secret would cross a network in clear.
      if (!https && !isLoopback(url.hostname)) throw new UsageError(`refusing to send the admin secret over http:// to ${url.hostname}; use https://`);
      this.headers.authorization = `Bearer ${secret}`;
    }
    this.root = url.origin + url.pathname.replace(/\/+$/, '');
    const connect = https
      ? {
          rejectUnauthorized: true,
          ...(flags.ca !== undefined ? { ca: readCa(flags.ca) } : {}),
          ...(flags.cert !== undefined ? { cert: readFor('--cert', flags.cert), key: readFor('--key', flags.key!) } : {}),
          ...(flags.servername !== undefined ? { servername: flags.servername } : {}),
        }
      : {};
    this.dispatcher = new Agent({ connect: { ...connect, timeout: flags.timeout }, headersTimeout: flags.timeout, bodyTimeout: flags.timeout });
  }

  /** One exchange; the parsed JSON body on 2xx (undefined on 204), {@link Refused} otherwise. */
  async call(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<unknown> {
    const url = `${this.root}${path}`;
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, {
        method,
        dispatcher: this.dispatcher,
        headers: { ...this.headers, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      const e = err as Error & { code?: string; cause?: { code?: string } };
      const code = e.code ?? e.cause?.code;
      throw new Refused(`error: cannot reach the admin listener at ${new URL(url).origin}: ${oneLine(err)}${code && !e.message.includes(code) ? ` [${code}]` : ''}`);
    }
    const length = res.headers['content-length'];
    const raw = (await readBounded(res.body, MAX_RESPONSE_BYTES, typeof length === 'string' ? length : undefined)).toString('utf8');
    let doc: unknown;
    try {
      doc = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      doc = undefined;
    }
    if (res.statusCode >= 200 && res.statusCode < 300 && (res.statusCode === 204 || doc !== undefined)) return doc;
    const p = (doc ?? {}) as { code?: unknown; instance?: unknown };
    // Only what a gate's problem+json can hold reaches the terminal: one line, no control characters.
    if (typeof p.code === 'string' && /^[a-z0-9_]{1,64}$/.test(p.code)) {
      const instance = typeof p.instance === 'string' && /^[\x21-\x7e]{1,256}$/.test(p.instance) ? ` instance=${p.instance}` : '';
      throw new Refused(`error: ${p.code} (${res.statusCode})${instance}`);
    }
    throw new Refused(`error: unexpected response from the admin listener: HTTP ${res.statusCode}${doc === undefined ? ' without a JSON body' : ''}`);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

/** Opens the API, runs `op`, prints its document; failures become one stderr line and the exit status. */
async function run(cmd: Command, flags: ConnFlags, op: (api: AdminApi) => Promise<unknown>): Promise<void> {
  let api: AdminApi | undefined;
  let failure: { exitCode: number; line: string } | undefined;
  try {
    api = new AdminApi(flags);
    const doc = await op(api);
    const write = cmd.configureOutput().writeOut ?? ((s: string) => process.stdout.write(s));
    write(`${JSON.stringify(doc, null, 2)}\n`);
  } catch (err) {
    if (err instanceof UsageError) failure = { exitCode: EXIT_USAGE, line: `error: ${oneLine(err)}` };
    else if (err instanceof Refused) failure = { exitCode: EXIT_FAILED, line: err.message };
    else failure = { exitCode: EXIT_FAILED, line: `error: ${oneLine(err)}` };
  } finally {
    await api?.close().catch(() => undefined);
  }
  // commander's error() honours the program's exitOverride, so callers can test this path.
  if (failure) cmd.error(failure.line, { exitCode: failure.exitCode, code: FAILED });
}

function withConnection(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'admin listener base URL').env('GATE_ADMIN_URL').default(DEFAULT_URL))
    .addOption(new Option('--token-file <file>', 'file holding the admin bearer secret (as the gate reads it)').env('GATE_ADMIN_TOKEN_FILE'))
    .option('--cert <file>', 'admin client certificate chain (PEM), for an https:// admin listener with GATE_ADMIN_CLIENT_CA')
    .option('--key <file>', 'private key of --cert (PEM)')
    .option('--ca <file>', "CA bundle (PEM) to verify the admin listener's certificate (default: system roots)")
    .option('--servername <name>', "name the admin listener's certificate must match (default: the URL host)")
    .addOption(new Option('--timeout <ms>', 'timeout of the HTTP exchange in milliseconds').argParser(intIn(1, 3_600_000)).default(10_000));
}

/** Adds the `admin` command group (cooldowns, deny list, refusal lookup) to `program`. */
export function registerAdminCommands(program: Command): void {
  const admin = new AdminCommand('admin')
    .copyInheritedSettings(program)
    // Usage errors are one line, like every other failure of these commands.
    .showHelpAfterError(false)
    .description('admin API of a running gate: cooldowns, deny list, refusal lookup (GATE_ADMIN_URL, GATE_ADMIN_TOKEN_FILE)');
  program.addCommand(admin);
  const thumbprintArg = () => new Argument('<thumbprint>', 'x5t#S256 of the certificate').argParser(checked(THUMBPRINT, 'a 43-character base64url x5t#S256 thumbprint'));

  withConnection(admin.command('cooldowns'))
    .description('list certificates cooling down after repeated failed proofs')
    .action((flags: ConnFlags, cmd: Command) => run(cmd, flags, (api) => api.call('GET', '/admin/v1/cooldowns')));

  withConnection(admin.command('cooldown-clear'))
    .description('clear the cooldown of a certificate: the agent may try again at once')
    .addArgument(thumbprintArg())
    .action((thumbprint: string, flags: ConnFlags, cmd: Command) =>
      run(cmd, flags, async (api) => {
        await api.call('DELETE', `/admin/v1/cooldowns/${encodeURIComponent(thumbprint)}`);
        return { thumbprint, cleared: true };
      }),
    );

  withConnection(admin.command('denylist'))
    .description('list deny-list entries')
    .action((flags: ConnFlags, cmd: Command) => run(cmd, flags, (api) => api.call('GET', '/admin/v1/denylist')));

  withConnection(
    admin
      .command('deny')
      .description('deny a certificate or an agent id on every gate sharing the store; prints the entry')
      .addOption(new Option('--thumbprint <thumbprint>', 'x5t#S256 of the certificate to deny').argParser(checked(THUMBPRINT, 'a 43-character base64url x5t#S256 thumbprint')).conflicts('agentId'))
      .addOption(new Option('--agent-id <id>', 'agent id to deny (all its certificates)').argParser(checked(/^.{1,256}$/s, '1 to 256 characters')))
      .addOption(new Option('--reason <text>', 'why (kept with the entry and in the audit trail)').argParser(checked(/^.{1,512}$/s, '1 to 512 characters')).makeOptionMandatory())
      .addOption(new Option('--ttl <seconds>', 'expiry in seconds (default: until removed with `admin undeny`)').argParser(intIn(1, MAX_TTL_S))),
  )
    .action((flags: DenyFlags, cmd: Command) => {
      if (flags.thumbprint === undefined && flags.agentId === undefined) cmd.error('error: give --thumbprint or --agent-id');
      const body = { ...(flags.thumbprint !== undefined ? { thumbprint: flags.thumbprint } : { agent_id: flags.agentId }), reason: flags.reason, ...(flags.ttl !== undefined ? { ttl_s: flags.ttl } : {}) };
      return run(cmd, flags, (api) => api.call('POST', '/admin/v1/denylist', body));
    });

  withConnection(admin.command('undeny'))
    .description('remove a deny-list entry')
    .addArgument(new Argument('<id>', 'entry id, as `admin denylist` shows it').argParser(checked(DENY_ID, 'a 16-hex-digit deny-list entry id')))
    .action((id: string, flags: ConnFlags, cmd: Command) =>
      run(cmd, flags, async (api) => {
        await api.call('DELETE', `/admin/v1/denylist/${encodeURIComponent(id)}`);
        return { id, removed: true };
      }),
    );

  withConnection(admin.command('refusal'))
    .description('look up a refusal by the id in its problem+json instance')
    .addArgument(new Argument('<id>', `refusal id, or the whole instance ${REFUSAL_URN}<id>`).argParser(refusalId))
    .action((id: string, flags: ConnFlags, cmd: Command) => run(cmd, flags, (api) => api.call('GET', `/admin/v1/refusals/${encodeURIComponent(id)}`)));
}
