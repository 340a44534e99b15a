/**
 * `agent-gate audit verify` and `audit keygen` run in-process (test/helpers/cli.ts: the real
 * command tree, output and exit statuses): exit statuses 0, 1, 2, the report, one stderr line on errors.
 */
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, generateAuditKey } from '../../src/audit/index.js';
import { runCli, type CliResult } from '../helpers/cli.js';

let tmp: string;
let keyFile: string;
let trail: string;

/** Runs `agent-gate audit ...` in-process with GATE_AUDIT_KEY_FILE set to `key` (unset when null). */
function cli(args: string[], key: string | null = keyFile): Promise<CliResult> {
  return runCli(['audit', ...args], { GATE_AUDIT_KEY_FILE: key });
}

async function writeTrail(file: string, n: number, close = true): Promise<AuditLog> {
  const log = await AuditLog.open({ file, keyFile });
  for (let i = 1; i <= n; i++) log.record({ event: 'refusal', refusal_id: `R${i}`, code: 'proof_invalid', status: 403 });
  if (close) await log.close();
  else await log.flush();
  return log;
}

async function dropLine(file: string, line: number): Promise<void> {
  const ls = (await readFile(file, 'utf8')).split('\n');
  ls.splice(line - 1, 1);
  await writeFile(file, ls.join('\n'));
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'agent-gate-audit-cli-'));
  keyFile = join(tmp, 'audit.key');
  await writeFile(keyFile, generateAuditKey() + '\n', { mode: 0o600 });
  trail = join(tmp, 'trail.jsonl');
  await writeTrail(trail, 50);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('agent-gate audit verify', () => {
  it('exits 0 on an intact trail and prints the report', async () => {
    const r = await cli(['verify', trail]);
    expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    expect(r.stdout).toContain(`audit trail: ${trail}\n`);
    expect(r.stdout).toContain('lines: 51, event records verified: 50\n');
    expect(r.stdout).toMatch(/last checkpoint: record 51, 50 event records before it, \d{4}-\d\d-\d\dT/);
    expect(r.stdout).toContain('unconfirmed: 0 event records after the last checkpoint\n');
    expect(r.stdout.endsWith('result: intact\n')).toBe(true);
  });

  it('lists records after the last checkpoint as unconfirmed (still exit 0)', async () => {
    const file = join(tmp, 'open.jsonl');
    await writeTrail(file, 5);
    const log = await writeTrail(file, 3, false);
    const r = await cli(['verify', file]);
    await log.close();
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('unconfirmed: 3 event records after the last checkpoint (records 7-9)');
  });

  it('exits 1 with the first broken link when a line was deleted', async () => {
    const file = join(tmp, 'deleted.jsonl');
    await copyFile(trail, file);
    await copyFile(`${trail}.checkpoint`, `${file}.checkpoint`);
    await dropLine(file, 20);
    const r = await cli(['verify', file]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/first broken link: line 20: seq 21 where 20 was expected/);
    expect(r.stdout.endsWith('result: BROKEN\n')).toBe(true);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^audit verify: .*: first broken link at line 20/)]);
  });

  it('exits 1 on truncation below the checkpoint; --checkpoint names the checkpoint file', async () => {
    const file = join(tmp, 'cut.jsonl');
    const cp = join(tmp, 'elsewhere.checkpoint');
    await copyFile(trail, file);
    await copyFile(`${trail}.checkpoint`, cp);
    await dropLine(file, 51);
    // Without the checkpoint file (none at the default path), the cut cannot show.
    const blind = await cli(['verify', file]);
    expect(blind.exitCode).toBe(0);
    expect(blind.stdout).toContain('checkpoint file: none found');
    const r = await cli(['verify', file, '--checkpoint', cp]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('truncated: the checkpoint file confirms records up to 51, the trail has 50 lines');
  });

  it('exits 2 with one stderr line on key and usage errors', async () => {
    const short = join(tmp, 'short.key');
    await writeFile(short, Buffer.alloc(8).toString('base64'));
    const cases: [string, string[], string | null, RegExp][] = [
      ['key variable unset', ['verify', trail], null, /^error: GATE_AUDIT_KEY_FILE: not set/],
      ['short key', ['verify', trail], short, /^error: GATE_AUDIT_KEY_FILE: .* holds 8 bytes/],
      ['missing trail', ['verify', join(tmp, 'nope.jsonl')], keyFile, /^error: .*ENOENT/],
      ['missing named checkpoint file', ['verify', trail, '--checkpoint', join(tmp, 'nope.cp')], keyFile, /^error: .*ENOENT/],
      ['missing argument', ['verify'], keyFile, /^error: missing required argument 'file'/],
      ['unknown option', ['verify', trail, '--bogus'], keyFile, /^error: unknown option '--bogus'/],
    ];
    const results = await Promise.all(cases.map(([, args, key]) => cli(args, key)));
    cases.forEach(([what, , , line], i) => {
      const r = results[i];
      expect(r?.exitCode, what).toBe(2);
      expect(r?.stdout, what).toBe('');
      expect(r?.stderr.trimEnd().split('\n'), what).toEqual([expect.stringMatching(line)]);
    });
  });
});

describe('agent-gate audit keygen', () => {
  it('prints a key, or writes it 0600 and never overwrites', async () => {
    const printed = await cli(['keygen'], null);
    expect(printed.exitCode).toBe(0);
    expect(Buffer.from(printed.stdout.trim(), 'base64')).toHaveLength(32);

    const out = join(tmp, 'new.key');
    const first = await cli(['keygen', '--out', out], null);
    expect(first).toMatchObject({ exitCode: 0, stdout: '', stderr: `wrote ${out}; use GATE_AUDIT_KEY_FILE=${out}\n` });
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const key = await readFile(out, 'utf8');

    const again = await cli(['keygen', '--out', out], null);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(/^error: .* exists; refusing to overwrite an audit key\n$/);
    expect(await readFile(out, 'utf8')).toBe(key);
  });
});
