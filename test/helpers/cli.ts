/**
 * The `agent-gate` command line run in-process: the real command tree (src/cli/program.ts),
 * its real output and exit statuses, without a `tsx` process per call (seconds each on two
 * cores). What a process adds (the bin's shebang, main.ts's last-resort handler) is tested
 * once in test/cli/help.test.ts.
 */
import { CommanderError } from 'commander';
import { vi } from 'vitest';
import { buildProgram, walkCommands } from '../../src/cli/program.js';

/** What one run printed and its exit status. */
export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as one JSON document. */
  json: <T = Record<string, unknown>>() => T;
}

/** process.exit called by a command (serve's startup failures): ends the run with its code. */
class ExitCalled extends Error {
  constructor(readonly code: number) {
    super(`process.exit(${code})`);
  }
}

/** Only one run at a time: the environment and process.stdout are the process's own. */
let queue: Promise<unknown> = Promise.resolve();

/**
 * Runs `agent-gate <args>` with `env` set on top of process.env for the run (a null value
 * unsets the variable). Commander's exits, `process.exit` and `process.exitCode` become `exitCode`; an error
 * escaping the command is printed as main.ts prints it (`agent-gate: <message>`, status 1).
 */
export function runCli(args: string[], env: Record<string, string | null> = {}): Promise<CliResult> {
  const run = queue.then(() => runNow(args, env));
  queue = run.catch(() => {});
  return run;
}

/**
 * runCli with `env` as the run's whole GATE_* environment: the runner's own GATE_* variables are
 * unset for the run, as in a clean child environment.
 */
export function runCliGateEnv(args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  const unset = Object.fromEntries(Object.keys(process.env).filter((k) => k.startsWith('GATE_')).map((k) => [k, null]));
  const given = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v ?? null]));
  return runCli(args, { ...unset, ...given });
}

async function runNow(args: string[], env: Record<string, string | null>): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const program = buildProgram();
  for (const cmd of [program, ...walkCommands(program).map((c) => c.command)]) {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: (s) => (stdout += s), writeErr: (s) => (stderr += s) });
  }
  // Commands that write to the streams themselves (agent call, audit keygen...).
  const capture = (sink: 'out' | 'err') => (chunk: string | Uint8Array, ...rest: unknown[]) => {
    const s = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (sink === 'out') stdout += s;
    else stderr += s;
    (rest.find((r) => typeof r === 'function') as ((e?: Error) => void) | undefined)?.();
    return true;
  };
  const so = vi.spyOn(process.stdout, 'write').mockImplementation(capture('out') as typeof process.stdout.write);
  const se = vi.spyOn(process.stderr, 'write').mockImplementation(capture('err') as typeof process.stderr.write);
  const ex = vi.spyOn(process, 'exit').mockImplementation((code?: string | number | null) => {
    throw new ExitCalled(Number(code ?? 0));
  });
  const savedEnv = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  const savedExitCode = process.exitCode;
  for (const [k, v] of Object.entries(env)) {
    if (v === null) delete process.env[k];
    else process.env[k] = v;
  }
  process.exitCode = undefined;
  let exitCode: number;
  try {
    await program.parseAsync(['node', 'agent-gate', ...args]);
    exitCode = Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) exitCode = err.exitCode;
    else if (err instanceof ExitCalled) exitCode = err.code;
    else {
      stderr += `agent-gate: ${(err as Error)?.message ?? String(err)}\n`;
      exitCode = 1;
    }
  } finally {
    so.mockRestore();
    se.mockRestore();
    ex.mockRestore();
    for (const [k, v] of Object.entries(savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    process.exitCode = savedExitCode;
  }
  return { exitCode, stdout, stderr, json: <T>() => JSON.parse(stdout) as T };
}
