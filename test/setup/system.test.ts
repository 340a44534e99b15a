/**
 * The optional tools of the test setup: installed when missing (as root), and one line naming
 * what is skipped for each that still is.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { assertTrustedPath, ensureOptionalTools, missingInCi } from './system.js';

const dir = mkdtempSync(join(tmpdir(), 'agent-gate-tools-'));
const path = process.env.PATH;
process.env.PATH = `${dir}:${path}`;
afterAll(() => {
  process.env.PATH = path;
  rmSync(dir, { recursive: true, force: true });
});

it('installs a missing tool, leaves one that is there, and names what a missing one skips', () => {
  const installed: string[] = [];
  const missing = ensureOptionalTools([
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
      requiredInCi: true,
      install: () => {
        installed.push('b');
        throw new Error('no such package');
      },
    },
  ]);
  // Installing is for root with apt-get only; elsewhere each missing tool is just reported.
  const root = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  expect(installed).toEqual(root ? ['a', 'b'] : []);
  expect(missing.map((m) => m.line)).toEqual([
    ...(root ? [] : ['optional tool missing: ag-test-tool-a (install it as root): skipping the a checks']),
    `optional tool missing: ag-test-tool-b (${root ? 'could not install it: no such package' : 'install it as root'}): skipping the b checks`,
  ]);
  // Under CI only the tools marked requiredInCi stop the run (a, when missing, does not).
  expect(missingInCi(missing)).toEqual(['ag-test-tool-b']);
});

it('runs an installer as root only from a tree nobody else can write (a shared/ planted beside a checkout in /tmp is refused)', () => {
  const tree = mkdtempSync(join(tmpdir(), 'agent-gate-trust-'));
  try {
    const shared = join(tree, 'shared');
    mkdirSync(join(shared, 'tools', 'k6'), { recursive: true, mode: 0o755 });
    const installer = join(shared, 'tools', 'k6', 'install');
    writeFileSync(installer, '#!/bin/sh\n', { mode: 0o755 });
    chmodSync(shared, 0o755);
    expect(() => assertTrustedPath(installer, shared)).not.toThrow();
    // Writable by others anywhere on the way: refused.
    chmodSync(join(shared, 'tools'), 0o777);
    expect(() => assertTrustedPath(installer, shared)).toThrow(/writable by others/);
    chmodSync(join(shared, 'tools'), 0o755);
    chmodSync(installer, 0o775);
    expect(() => assertTrustedPath(installer, shared)).toThrow(/writable by others/);
    // Outside the tree it was asked about: refused.
    expect(() => assertTrustedPath(installer, join(tree, 'elsewhere-does-not-exist'))).toThrow();
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
});
