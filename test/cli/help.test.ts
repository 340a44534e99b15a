/**
 * The command line's self-description: `agent-gate --version` prints package.json's version,
 * and every command's `--help` ends with an example whose options exist on that command.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram, COMMAND_EXAMPLES, walkCommands } from '../../src/cli/program.js';
import { cliArgv } from '../helpers/serve.js';

const root = resolve(__dirname, '../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
const run = promisify(execFile);

/** The help text a user sees for `cmd`, including text added with addHelpText. */
function helpOf(cmd: Command): string {
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
  cmd.outputHelp();
  return out;
}

describe('agent-gate --version and --help', () => {
  const program = buildProgram();
  const commands = walkCommands(program).filter(({ command }) => command.name() !== 'help');

  it('has an example for every command, and none for a command that does not exist', () => {
    const paths = commands.map((c) => c.path);
    expect(paths.length).toBeGreaterThan(20);
    expect(paths.filter((p) => COMMAND_EXAMPLES[p] === undefined), 'commands without an example in COMMAND_EXAMPLES').toEqual([]);
    expect(Object.keys(COMMAND_EXAMPLES).filter((p) => !paths.includes(p)), 'examples of unknown commands').toEqual([]);
  });

  it.each(commands.map((c) => [c.path, c.command] as const))('`%s --help` ends with its example', (path, command) => {
    const help = helpOf(command);
    expect(help).toContain(`Usage: agent-gate ${path}`);
    expect(help).toMatch(/\nExample:\n {2}\$ [\s\S]*agent-gate /);
    expect(help.trimEnd().endsWith(COMMAND_EXAMPLES[path]!.trimEnd())).toBe(true);
  });

  it.each(Object.entries(COMMAND_EXAMPLES))('the example of `%s` uses only options the command has', (path, example) => {
    // The example's last agent-gate invocation, up to a shell operator.
    const call = example.replace(/\\\n\s*/g, ' ').split(/&&|\|/).filter((part) => part.includes('agent-gate ')).at(-1)!;
    const words = call.slice(call.indexOf('agent-gate ') + 'agent-gate '.length).trim().split(/\s+/);
    let cmd: Command = program;
    while (words.length > 0) {
      const sub = cmd.commands.find((c) => c.name() === words[0]);
      if (!sub) break;
      cmd = sub;
      words.shift();
    }
    const used = words.filter((w) => w.startsWith('-')).map((w) => w.split('=')[0]!);
    const known = cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => x !== undefined));
    expect(used.filter((u) => !known.includes(u)), `options of "${call.trim()}" unknown to \`${cmd.name()}\``).toEqual([]);
  });

  it('`agent-gate --version` and `-V` print the package.json version (as a process)', async () => {
    for (const flag of ['--version', '-V']) {
      const { stdout } = await run(process.execPath, [...cliArgv(), flag], { cwd: root, timeout: 30_000 });
      expect(stdout.trim()).toBe(pkg.version);
    }
  });

  it('`agent-gate agent call --help` shows its example (as a process)', async () => {
    const { stdout } = await run(process.execPath, [...cliArgv(), 'agent', 'call', '--help'], { cwd: root, timeout: 30_000 });
    expect(stdout).toContain('Example:\n  $ agent-gate agent call --cert pki/dev/agents/demo.crt');
  });
});
