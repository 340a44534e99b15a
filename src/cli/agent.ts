/**
 * `agent-gate agent ...`: the agent side from the command line.
 *
 * - `agent-gate agent token --cert F --key F [--ca F] <gate-url>` prints the token response JSON.
 * - `agent-gate agent call --cert F --key F [--ca F] [-X M] [-H 'n: v']... [-d data] <url>`
 *   runs the flow, calls `<url>` through the gate and prints the response body; exit 0 on 2xx,
 *   1 otherwise. A gate refusal prints `error: <code> (<status>) instance=<instance>` on stderr.
 *
 * There is deliberately no option to skip verification of the gate's certificate.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { GateClient, GateClientError, type GateClientOptions } from '../client/index.js';
import { isGateProblem, parseProblem } from '../client/response.js';

interface TlsFlags {
  cert: string;
  key: string;
  ca?: string;
  servername?: string;
  pathPrefix?: string;
  timeout?: string;
}

interface CallFlags extends TlsFlags {
  request?: string;
  header: string[];
  data?: string;
}

function withTlsOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--cert <file>', 'agent certificate chain (PEM)')
    .requiredOption('--key <file>', 'agent private key (PEM)')
    .option('--ca <file>', "CA bundle (PEM) to verify the gate's certificate (default: system roots)")
    .option('--servername <name>', "name the gate's certificate must match (default: the URL host)")
    .option('--path-prefix <path>', "the gate's path prefix", '/.agent-gate')
    .option('--timeout <ms>', 'timeout of each HTTP exchange in milliseconds', '30000');
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

function clientFor(origin: string, flags: TlsFlags): GateClient {
  const timeout = Number(flags.timeout ?? '30000');
  if (!Number.isInteger(timeout) || timeout <= 0) throw new Error(`--timeout must be a positive integer (got ${flags.timeout})`);
  const opts: GateClientOptions = {
    baseUrl: origin,
    cert: readFile(flags.cert, '--cert'),
    key: readFile(flags.key, '--key'),
    requestTimeoutMs: timeout,
  };
  if (flags.ca !== undefined) opts.ca = readFile(flags.ca, '--ca');
  if (flags.servername !== undefined) opts.servername = flags.servername;
  if (flags.pathPrefix !== undefined) opts.pathPrefix = flags.pathPrefix;
  return new GateClient(opts);
}

function parseUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`not a URL: ${raw}`);
  }
  if (url.protocol !== 'https:') throw new Error(`the gate URL must be https:// (got ${url.protocol})`);
  return url;
}

function parseHeaders(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of list) {
    const i = h.indexOf(':');
    const name = i > 0 ? h.slice(0, i).trim() : '';
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw new Error(`bad header (want 'name: value'): ${h}`);
    const key = name.toLowerCase();
    const value = h.slice(i + 1).trim();
    out[key] = out[key] !== undefined ? `${out[key]}, ${value}` : value;
  }
  return out;
}

/** `-d @file` reads the file, `-d @-` reads stdin (as curl does); anything else is literal. */
function readData(data: string): string | Buffer {
  if (data === '@-') return readFileSync(0);
  if (data.startsWith('@')) return readFile(data.slice(1), '-d');
  return data;
}

function write(stream: NodeJS.WriteStream, data: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

function refusalLine(code: string, status: number, instance: string | undefined): string {
  return `error: ${code} (${status})${instance !== undefined ? ` instance=${instance}` : ''}\n`;
}

/** One line on stderr for an error, with the low-level cause (TLS, DNS...) when there is one. */
async function report(err: unknown): Promise<void> {
  process.exitCode = 1;
  if (err instanceof GateClientError) {
    await write(process.stderr, err.code === 'unexpected_response' ? `error: ${err.message}\n` : refusalLine(err.code, err.status, err.instance));
    return;
  }
  const e = err as Error & { code?: string; cause?: Error & { code?: string } };
  const cause = e.cause?.message ? ` (${e.cause.code ?? e.cause.message})` : '';
  await write(process.stderr, `error: ${e.message ?? String(err)}${e.code && !e.message?.includes(e.code) ? ` [${e.code}]` : ''}${cause}\n`);
}

async function tokenAction(gateUrl: string, flags: TlsFlags): Promise<void> {
  let client: GateClient | undefined;
  try {
    client = clientFor(parseUrl(gateUrl).origin, flags);
    const token = await client.fetchToken();
    await write(process.stdout, `${JSON.stringify(token)}\n`);
  } catch (err) {
    await report(err);
  } finally {
    await client?.close().catch(() => undefined);
  }
}

async function callAction(rawUrl: string, flags: CallFlags): Promise<void> {
  let client: GateClient | undefined;
  try {
    const url = parseUrl(rawUrl);
    const headers = parseHeaders(flags.header);
    const body = flags.data !== undefined ? readData(flags.data) : undefined;
    const method = (flags.request ?? (body !== undefined ? 'POST' : 'GET')).toUpperCase();
    client = clientFor(url.origin, flags);
    const res = await client.request(`${url.pathname}${url.search}`, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const problem = parseProblem(res);
    const ok = res.status >= 200 && res.status < 300;
    if (!ok && isGateProblem(problem)) {
      await write(process.stderr, refusalLine(problem.code, res.status, problem.instance));
    } else {
      await write(process.stdout, res.body);
    }
    process.exitCode = ok ? 0 : 1;
  } catch (err) {
    await report(err);
  } finally {
    await client?.close().catch(() => undefined);
  }
}

/** Adds `agent token` and `agent call` to `program`. */
export function registerAgentCommands(program: Command): void {
  const agent = program
    .command('agent')
    .description('agent side: obtain a token, or call the protected API through the gate');

  withTlsOptions(agent.command('token'))
    .description('run challenge -> proof -> token and print the token response JSON')
    .argument('<gate-url>', 'gate base URL, https://host:port')
    .action((gateUrl: string, flags: TlsFlags) => tokenAction(gateUrl, flags));

  withTlsOptions(agent.command('call'))
    .description("call a URL through the gate with a fresh token and print the response body (exit 0 on 2xx)")
    .argument('<url>', 'full URL, e.g. https://127.0.0.1:8443/some/path?q=1 (the gate is its origin)')
    .option('-X, --request <method>', 'HTTP method (default GET, or POST with -d)')
    .option(
      '-H, --header <header>',
      "request header 'name: value' (repeatable)",
      (value: string, prev: string[]) => [...prev, value],
      [] as string[],
    )
    .option('-d, --data <data>', 'request body (@file reads a file, @- reads stdin)')
    .action((url: string, flags: CallFlags) => callAction(url, flags));
}
