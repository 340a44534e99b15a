/**
 * The CLI where it fails or stops, as an outside review found it (each test failed on the code
 * at 903a77b): `config check` never prints a secret, also in the forms ioredis and operators
 * use (a Redis password in the query or holding `@`, an HMAC secret without its kid); a usage
 * error of any command is one line on stderr and exit 2; `serve` with workers exits 0 on
 * SIGTERM even while a restarted worker is still starting.
 */
import { spawn, execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { cliArgv } from '../helpers/serve.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;

beforeAll(async () => {
  [fx, up] = await Promise.all([makeFixtures(), startUpstream()]);
}, 60_000);
afterAll(async () => {
  await up?.close();
});

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...cliArgv(), ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 }, (error, out, err) => {
      resolve({ code: error ? ((error as NodeJS.ErrnoException & { code?: number }).code as unknown as number) ?? 1 : 0, out, err });
    });
  });
}

// HARDENING.md: "`config check` output safe to paste (secrets as `***`)"; "The Redis password only in
// the secret carrying GATE_REDIS_URL — `config check` masks it." ioredis 5 takes `?password=` from
// the URL's query (and the last `@` ends the userinfo), so both forms authenticate.
it('config check masks a Redis password given in the URL query', async () => {
  const env = { ...testEnv(fx, {}), GATE_ENV: 'dev', GATE_STORE: 'redis', GATE_REDIS_URL: 'redis://127.0.0.1:6379/0?password=S3cretQueryPw' };
  const r = await cli(['config', 'check'], env);
  expect(r.out + r.err).not.toContain('S3cretQueryPw');
});

it('config check masks a Redis password holding a raw @ (no part of it printed)', async () => {
  const env = { ...testEnv(fx, {}), GATE_ENV: 'dev', GATE_STORE: 'redis', GATE_REDIS_URL: 'redis://:S3cret@TailOfPw@127.0.0.1:6379' };
  const r = await cli(['config', 'check'], env);
  expect(r.out + r.err).not.toContain('TailOfPw');
});

// HARDENING.md: "`config check` output safe to paste (secrets as `***`)". An operator who pastes the
// base64 secret (the content of nginx's --hmac-key-file) without its `kid:` gets it printed verbatim.
it('config check masks a GATE_FWD_HMAC_KEYS entry that lacks its kid', async () => {
  const secret = Buffer.alloc(32, 7).toString('base64');
  const env = { ...testEnv(fx, {}), GATE_MODE: 'forwarded', GATE_FWD_HMAC_KEYS: `k1:${Buffer.alloc(32, 1).toString('base64')},${secret}` };
  const r = await cli(['config', 'check'], env);
  expect(r.code).toBe(2);
  expect(r.out + r.err).not.toContain(secret);
});

// docs/reference/cli.md: "Every failure is one line on stderr."
it.each([
  [['config', 'check', '--bogus']],
  [['agent', 'call', 'https://127.0.0.1:1/']],
  [['agent', 'token', 'https://127.0.0.1:1']],
  [['keygen', '--bogus']],
  [['serve', '--bogus']],
  [['no-such-command']],
])('bad arguments %j: one line on stderr', async (args) => {
  const r = await cli(args, { GATE_ENV: 'dev' });
  expect(r.code).toBe(2);
  expect(r.err.trimEnd().split('\n'), r.err).toHaveLength(1);
});

/** The worker processes of the primary `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes('serve')) kids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return kids.sort();
}

// docs/protocol.md section 12: "With GATE_WORKERS > 1 the process receiving SIGTERM is the primary:
// every worker drains that way, then the primary exits 0." A replacement worker that is still
// starting (no SIGTERM handler yet) dies of the signal and the primary exits 1.
it('SIGTERM while a restarted worker is starting still exits 0', async () => {
  const [port, adminPort] = [await freePort(), await freePort()];
  const env = testEnv(fx, {
    GATE_WORKERS: '2',
    GATE_STORE: 'redis',
    GATE_REDIS_URL: inject('redisUrl'),
    GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()),
    GATE_UPSTREAM_URL: up.url,
    GATE_LISTEN: `127.0.0.1:${port}`,
    GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    GATE_DRAIN_TIMEOUT_MS: '3000',
    GATE_LOG_LEVEL: 'info',
  });
  const child = spawn(process.execPath, [...cliArgv(), 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined))?.status === 200, 40_000, 'cluster ready', 200);
    const [victim] = childrenOf(child.pid!);
    process.kill(victim!, 'SIGKILL');
    // The replacement is forked 250 ms later; signal the primary while it is still starting.
    await waitFor(() => childrenOf(child.pid!).length === 2 && !childrenOf(child.pid!).includes(victim!), 10_000, 'replacement forked', 10);
    child.kill('SIGTERM');
    const code = await exited;
    expect(code, out.split('\n').filter((l) => /worker_exit|shutdown/.test(l)).join('\n')).toBe(0);
  } finally {
    if (child.exitCode === null) {
      for (const pid of childrenOf(child.pid!)) process.kill(pid, 'SIGKILL');
      child.kill('SIGKILL');
    }
  }
}, 90_000);
