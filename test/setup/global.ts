import type { TestProject } from 'vitest/node';
import { startRedis } from '../helpers/redis.js';
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
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return () => redis.stop();
}
