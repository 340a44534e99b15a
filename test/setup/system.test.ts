/**
 * The optional tools of the test setup: installed when missing (as root), and one line naming
 * what is skipped for each that still is.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ensureOptionalTools } from './system.js';

const dir = mkdtempSync(join(tmpdir(), 'agent-gate-tools-'));
const path = process.env.PATH;
process.env.PATH = `${dir}:${path}`;
afterAll(() => {
  process.env.PATH = path;
  rmSync(dir, { recursive: true, force: true });
});

it('installs a missing tool, leaves one that is there, and names what a missing one skips', () => {
  const installed: string[] = [];
  const lines = ensureOptionalTools([
    { bin: 'sh', skips: 'nothing', install: () => installed.push('sh') },
    {
      bin: 'ag-test-tool-a',
      skips: 'the a checks',
      install: () => {
        installed.push('a');
        writeFileSync(join(dir, 'ag-test-tool-a'), '#!/bin/sh\nexit 0\n');
        chmodSync(join(dir, 'ag-test-tool-a'), 0o755);
      },
    },
    {
      bin: 'ag-test-tool-b',
      skips: 'the b checks',
      install: () => {
        installed.push('b');
        throw new Error('no such package');
      },
    },
  ]);
  // Installing is for root with apt-get only; elsewhere each missing tool is just reported.
  const root = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  expect(installed).toEqual(root ? ['a', 'b'] : []);
  expect(lines).toEqual([
    ...(root ? [] : ['optional tool missing: ag-test-tool-a (install it as root): skipping the a checks']),
    `optional tool missing: ag-test-tool-b (${root ? 'could not install it' : 'install it as root'}): skipping the b checks`,
  ]);
});
