import type { TestProject } from 'vitest/node';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis } from '../helpers/redis.js';
import { buildCliBundle } from './cli-bundle.js';
import { resetLogs, scanLogs } from './log-scan.js';
import { ensureOptionalTools, ensureSystemPackages, missingInCi } from './system.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    /** The bundled `agent-gate` (test/setup/cli-bundle.ts): `node <cliEntry> ...`. */
    cliEntry: string;
    /** src/pki/index.ts, bundled beside it. */
    pkiModule: string;
  }
}

/** Installs what the suite needs and starts one shared redis-server for it. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  try {
    ensureSystemPackages();
  } catch (err) {
    // One clear line, then stop: nothing else can run meaningfully.
    process.stderr.write(`\n${(err as Error).message}\n`);
    process.exit(1);
  }
  const missing = ensureOptionalTools();
  for (const m of missing) process.stderr.write(`${m.line}\n`);
  // CI always ran these checks (.ci/run installed docker-compose or failed): it still must.
  const ci = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
  const required = ci ? missingInCi(missing) : [];
  if (required.length > 0) {
    process.stderr.write(`\nCI: missing ${required.join(', ')}, which CI must not skip\n`);
    process.exit(1);
  }
  // One directory per run, so concurrent runs on one machine do not judge each other's logs.
  const logDir = join(process.cwd(), '.tmp', 'test-logs', `run-${process.pid}`);
  resetLogs(logDir);
  process.env.AG_TEST_LOG_DIR = logDir;
  // Two levels below the root, like src/cli/ (see cli-bundle.ts); one per run, like the logs.
  const bundle = await buildCliBundle(process.cwd(), join(process.cwd(), '.tmp', `cli-${process.pid}`));
  project.provide('cliEntry', bundle.cli);
  project.provide('pkiModule', bundle.pki);
  // Watch mode reruns in this same process: rebuild in place (same paths, so what was provided
  // stays right) so the processes a rerun starts run the edited sources, not the first build.
  // Vitest awaits this before the rerun starts.
  project.onTestsRerun(async () => {
    await buildCliBundle(process.cwd(), bundle.dir);
  });
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return async () => {
    await redis.stop();
    rmSync(bundle.dir, { recursive: true, force: true });
    const { files, lines, findings } = scanLogs(logDir);
    process.stdout.write(`log scan: ${lines} lines in ${files} files of test gate logs, ${findings.length} secrets found\n`);
    if (findings.length > 0) {
      process.stderr.write(findings.slice(0, 50).join('\n') + '\n');
      throw new Error(`secrets in log output: ${findings.length} (see above; logs kept in ${logDir})`);
    }
    resetLogs(logDir);
  };
}
