/**
 * `agent-gate` as a real process (`node <bundle> serve`, the run's bundle of src/cli/main.ts:
 * test/setup/cli-bundle.ts), for the tests that need one: signals, exit statuses, a second gate
 * process. Everything else starts gates in-process (test/helpers/gate.ts startGate) or runs the
 * command line in-process (test/helpers/cli.ts runCli).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { inject } from 'vitest';
import { freePort, GiveUp, waitFor } from './ports.js';

/**
 * The arguments after `node` that make it `agent-gate`: `spawn(process.execPath, [...cliArgv(), 'serve'])`.
 * --enable-source-maps maps the bundle's stack traces back to src/ (the map is inline).
 */
export function cliArgv(): string[] {
  return ['--enable-source-maps', inject('cliEntry')];
}

/** A running `serve` child on loopback ports. */
export interface ServeProcess {
  child: ChildProcess;
  url: string;
  adminUrl: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** The tail (8000 characters) of stdout and stderr together. */
  output(): string;
  /** SIGTERM, then SIGKILL after 10 s; resolves once exited. */
  stop(): Promise<void>;
}

/**
 * Spawns `serve` with process.env, then `env`, on fresh loopback ports (GATE_LISTEN and
 * GATE_ADMIN_LISTEN), and resolves once its admin readyz answers 200.
 */
export async function spawnServe(env: Record<string, string>): Promise<ServeProcess> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, [...cliArgv(), 'serve'], {
    env: { ...process.env, ...env, GATE_LISTEN: `127.0.0.1:${port}`, GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Both pipes are always drained (a full pipe would block the gate), keeping the tail for errors.
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-8000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new GiveUp(`exited with ${child.exitCode}`);
        return (await fetch(`${adminUrl}/readyz`)).status === 200;
      },
      30_000,
      'gate process ready',
      100,
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; output: ${out}`);
  }
  return {
    child,
    url: `https://127.0.0.1:${port}`,
    adminUrl,
    exited,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
