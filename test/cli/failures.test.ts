/**
 * The CLI where it fails or stops, as an outside review found it (each test failed on the code
 * at 903a77b): `config check` never prints a secret, also in the forms ioredis and operators
 * use (a Redis password in the query or holding `@`, an HMAC secret without its kid); a usage
 * error of any command is one line on stderr and exit 2. (`serve` with workers on SIGTERM while
 * a restarted worker starts: test/cluster/workers.test.ts.) Also, found later: a dev-PKI file
 * that cannot be written is named as asked.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { cliArgv } from '../helpers/serve.js';

let fx: Fixtures;

beforeAll(async () => {
  fx = await makeFixtures();
}, 60_000);
afterAll(() => {
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
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

// A file the dev PKI cannot write is named as asked, not by the private temporary file written
// first (writeFileAtomic), and the temporary file does not stay behind.
it('pki crl --out into a missing directory names the file asked for', async () => {
  const dir = join(fx.dir, 'pki-crl-out');
  expect((await cli(['pki', 'init', '--dir', dir], { GATE_ENV: 'dev' })).code).toBe(0);
  const out = join(fx.dir, 'no-such-dir', 'ca.crl');
  const r = await cli(['pki', 'crl', '--dir', dir, '--out', out], { GATE_ENV: 'dev' });
  expect(r.code).toBe(2);
  expect(r.err).toBe(`error: cannot write ${out}: ENOENT: no such file or directory\n`);
  // A write that fails after the temporary file exists (the rename onto a directory): the same
  // form of message, and the temporary file beside the target is gone.
  const parent = join(fx.dir, 'pki-crl-parent');
  const target = join(parent, 'is-a-dir');
  mkdirSync(target, { recursive: true });
  const r2 = await cli(['pki', 'crl', '--dir', dir, '--out', target], { GATE_ENV: 'dev' });
  expect(r2.code).toBe(2);
  expect(r2.err).toMatch(new RegExp(`^error: cannot write ${target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: E[A-Z]+: [^,']+\n$`));
  expect(readdirSync(parent)).toEqual(['is-a-dir']);
});
