import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    // Real servers and handshakes: generous per-test bounds, never fixed sleeps.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: more workers only add contention to the TLS-heavy suites.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    // One module graph per worker, not per file: importing src/ (fastify, pkijs, jose, x509...)
    // again for each of ~80 files was about a third of the suite's time ("collect"). Files
    // must therefore leave no process-wide state behind (env, spies, timers, listeners): the
    // suite passes with each file alone and with files sharing a worker.
    isolate: false,
    reporters: ['default', 'json'],
    outputFile: { json: '.tmp/vitest-results.json' },
  },
});
