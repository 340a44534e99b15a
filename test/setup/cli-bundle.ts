/**
 * The `agent-gate` command line as one JavaScript file per test run, for the tests that must
 * run it as a process (signals, exit statuses, cluster workers, pki-init.sh). Starting
 * `node --import tsx src/cli/main.ts` costs about twice a bundled start (tsx compiles and
 * resolves each of ~150 modules on every start), and those starts were a large part of the
 * suite's time on two cores. It is built from the same sources with esbuild (which tsx uses
 * too), dependencies left to node_modules, at the start of each run and again before each
 * rerun in watch mode (test/setup/global.ts), so the processes run the sources under test.
 * Source maps are inlined (cliArgv() passes --enable-source-maps): a child's stack trace
 * names src/ files and lines, not the bundle's.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

/** Where one run's bundles live and what they are. */
export interface CliBundle {
  dir: string;
  /** `node <cli>` is `agent-gate`. */
  cli: string;
  /** src/pki/index.ts as a module (pki-init.sh's helper imports it). */
  pki: string;
}

/**
 * Bundles src/cli/main.ts and src/pki/index.ts into `dir`, which must sit two levels below the
 * repository root: the CLI finds package.json and nginx/ relative to its own file, as
 * src/cli/ and src/nginx/ do.
 */
export async function buildCliBundle(root: string, dir: string): Promise<CliBundle> {
  mkdirSync(dir, { recursive: true });
  await build({
    absWorkingDir: root,
    entryPoints: { 'agent-gate': 'src/cli/main.ts', pki: 'src/pki/index.ts' },
    outdir: dir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'warning',
  });
  return { dir, cli: join(dir, 'agent-gate.mjs'), pki: join(dir, 'pki.mjs') };
}
