import type { TestProject } from 'vitest/node';
import { join } from 'node:path';
import { startRedis } from '../helpers/redis.js';
import { resetLogs, scanLogs } from './log-scan.js';
import { ensureSystemPackages } from './system.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
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
  // One directory per run, so concurrent runs on one machine do not judge each other's logs.
  const logDir = join(process.cwd(), '.tmp', 'test-logs', `run-${process.pid}`);
  resetLogs(logDir);
  process.env.AG_TEST_LOG_DIR = logDir;
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return async () => {
    await redis.stop();
    const { files, lines, findings } = scanLogs(logDir);
    process.stdout.write(`log scan: ${lines} lines in ${files} files of test gate logs, ${findings.length} secrets found\n`);
    if (findings.length > 0) {
      process.stderr.write(findings.slice(0, 50).join('\n') + '\n');
      throw new Error(`secrets in log output: ${findings.length} (see above; logs kept in ${logDir})`);
    }
    resetLogs(logDir);
  };
}
