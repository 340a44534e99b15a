import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../helpers/cli.js';

const execFileP = promisify(execFile);

/** Runs `agent-gate pki ...` in-process (test/helpers/cli.ts). */
function cli(...args: string[]): Promise<CliResult> {
  return runCli(['pki', ...args]);
}

let tmp: string;
let dir: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'agent-gate-pki-cli-'));
  dir = join(tmp, 'dev');
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('agent-gate pki', () => {
  it('init prints the written paths, then writes nothing the second time', async () => {
    const first = await cli('init', '--dir', dir, '--alg', 'ed25519');
    expect(first.exitCode).toBe(0);
    expect(first.stdout.trim().split('\n')).toEqual(['ca.crt', 'ca.key', 'server.crt', 'server.key'].map((f) => join(dir, f)));

    const second = await cli('init', '--dir', dir);
    expect(second).toMatchObject({ exitCode: 0, stdout: '' });
    expect(second.stderr).toContain('already present');
  });

  it('issue prints cert and key paths', async () => {
    const r = await cli('issue', 'bot-1', '--dir', dir, '--days', '7');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${join(dir, 'agents', 'bot-1.crt')}\n${join(dir, 'agents', 'bot-1.key')}\n`);
    expect(r.stderr).toBe('');
  });

  it('issue --p12 generates a password, prints it once to stderr, and it opens the bundle', async () => {
    const r = await cli('issue', 'bot-2', '--dir', dir, '--p12');
    expect(r.exitCode).toBe(0);
    const p12 = join(dir, 'agents', 'bot-2.p12');
    expect(r.stdout.trim().split('\n')).toContain(p12);
    const match = /^p12 password: (\S+)\n$/.exec(r.stderr);
    expect(match).not.toBeNull();
    expect(r.stdout).not.toContain(match?.[1] ?? '');
    await execFileP('openssl', ['pkcs12', '-info', '-noout', '-in', p12, '-passin', 'env:P12_PASS'], {
      env: { ...process.env, P12_PASS: match?.[1] ?? '' },
    });
    expect((await stat(p12)).mode & 0o777).toBe(0o600);
  });

  it('issue --p12-password-file uses the first line of the file', async () => {
    const pw = join(tmp, 'pw');
    await writeFile(pw, 's3cret pass\n');
    const r = await cli('issue', 'bot-3', '--dir', dir, '--p12', '--p12-password-file', pw);
    expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    await execFileP('openssl', ['pkcs12', '-info', '-noout', '-in', join(dir, 'agents', 'bot-3.p12'), '-passin', 'env:P12_PASS'], {
      env: { ...process.env, P12_PASS: 's3cret pass' },
    });
  });

  it.each([
    ['a bad agent name', ['issue', 'Bad_Name', '--dir']],
    ['a path in the agent name', ['issue', '../escape', '--dir']],
    ['an unknown algorithm', ['issue', 'ok', '--alg', 'dsa', '--dir']],
    ['zero days', ['issue', 'ok', '--days', '0', '--dir']],
    ['non-numeric days', ['issue', 'ok', '--days', '1e3', '--dir']],
    ['a password file without --p12', ['issue', 'ok', '--p12-password-file', '/nonexistent', '--dir']],
    ['a missing password file', ['issue', 'ok', '--p12', '--p12-password-file', '/nonexistent/pw', '--dir']],
    ['an unknown option', ['issue', 'ok', '--bogus', '--dir']],
    ['a missing name', ['issue', '--dir']],
  ])('refuses %s with one stderr line and exit 2', async (_what, args) => {
    const r = await cli(...args, dir);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: [^\n]+\n$/);
  });

  it('refuses to issue without a CA', async () => {
    const r = await cli('issue', 'ok', '--dir', join(tmp, 'empty'));
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^error: no CA in [^\n]+\n$/);
  });
});
