/**
 * `agent-gate demo-upstream [--listen HOST:PORT]`: the demo upstream of `agent-gate dev` as a
 * process of its own, for stacks that run it next to the gate (docker-compose.yml). It answers
 * every request with 200 and the identity headers the gate added, until SIGTERM or SIGINT.
 * The URL goes to stdout once listening; errors are one line on stderr and exit status 2.
 * @module
 */
import { isIP } from 'node:net';
import type { Command } from 'commander';
import { EXIT_ERROR, OneLineCommand, untilSignal } from './command.js';
import { startDemoUpstream } from './demo-upstream.js';
import { oneLine } from './output.js';

const DEFAULT_LISTEN = '127.0.0.1:8080';
/** After SIGTERM, connections still open after this long are closed. */
const CLOSE_GRACE_MS = 5000;

/** `HOST:PORT` (IPv6 in brackets) as host and port; port 0 asks for any free port. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : -1;
  if (!m || port > 65535) throw new TypeError(`--listen must be HOST:PORT (IPv6 as [addr]:PORT, port 0-65535), got ${JSON.stringify(value)}`);
  const bracketed = m[1]!.startsWith('[');
  const host = bracketed ? m[1]!.slice(1, -1) : m[1]!;
  if (bracketed && isIP(host) !== 6) throw new TypeError(`--listen: ${m[1]} is not an IPv6 address`);
  return { host, port };
}

/** Adds `demo-upstream` to `program`. */
export function registerDemoCommands(program: Command): void {
  const cmd = new OneLineCommand('demo-upstream')
    .copyInheritedSettings(program)
    .showHelpAfterError(false)
    .description('run the demo upstream (echoes the identity headers the gate adds) until SIGTERM or SIGINT')
    .option('--listen <host:port>', 'address to listen on (0.0.0.0:8080 in a container)', DEFAULT_LISTEN)
    .action(async (opts: { listen: string }, self: Command) => {
      try {
        const { host, port } = parseListen(opts.listen);
        // Handlers go in before the URL is printed: whoever waits for the URL may signal at once.
        const stopped = untilSignal();
        const started = await startDemoUpstream(host, port);
        const address = started.server.address();
        const actualPort = typeof address === 'object' && address ? address.port : port;
        const url = `http://${host.includes(':') ? `[${host}]` : host}:${actualPort}`;
        (self.configureOutput().writeOut ?? ((s: string) => process.stdout.write(s)))(`${url}\n`);
        process.stderr.write(`demo upstream listening on ${url}\n`);
        const signal = await stopped;
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => started.server.closeAllConnections(), CLOSE_GRACE_MS);
          force.unref();
          started.server.close(() => {
            clearTimeout(force);
            resolve();
          });
          started.server.closeIdleConnections();
        });
        process.stderr.write(`${signal}: demo upstream stopped\n`);
      } catch (err) {
        self.error(`error: ${oneLine(err)}`, { exitCode: EXIT_ERROR, code: 'agent-gate.demo.failed' });
      }
    });
  program.addCommand(cmd);
}
