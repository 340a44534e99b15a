import { buildGate, type Gate, type GateDeps } from '../../src/app.js';
import { formatViolation, loadConfig } from '../../src/config/index.js';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import type { Fixtures } from './fixtures.js';

/** Log directory scanned by the global teardown. */
export const TEST_LOG_DIR = process.env.AG_TEST_LOG_DIR ?? join(process.cwd(), '.tmp', 'test-logs', 'adhoc');
let logStream: NodeJS.WritableStream | undefined;
/** One append-only log file per test worker process, written synchronously so none is lost at exit. */
function testLogStream(): NodeJS.WritableStream {
  if (!logStream) {
    mkdirSync(TEST_LOG_DIR, { recursive: true });
    logStream = pino.destination({ dest: join(TEST_LOG_DIR, `worker-${process.pid}.log`), sync: true, append: true }) as unknown as NodeJS.WritableStream;
  }
  return logStream;
}

/** A gate listening on random loopback ports. */
export interface RunningGate {
  gate: Gate;
  url: string;
  adminUrl: string;
  close(): Promise<void>;
}

/** The environment of a dev-profile test gate in direct mode. */
export function testEnv(fx: Fixtures, extra: Record<string, string>): Record<string, string> {
  return {
    GATE_ENV: 'dev',
    GATE_LISTEN: '127.0.0.1:0',
    GATE_ADMIN_LISTEN: '127.0.0.1:0',
    GATE_TLS_CERT: fx.serverCertFile,
    GATE_TLS_KEY: fx.serverKeyFile,
    GATE_CLIENT_CA: fx.caFile,
    // Every test gate logs at debug into .tmp/test-logs; the global teardown greps those
    // logs for tokens, proofs, keys and certificates (test/setup/log-scan.ts).
    GATE_LOG_LEVEL: 'debug',
    // Functional suites must not trip limits; the rate-limit suite turns them on.
    GATE_RATE_LIMITS: 'off',
    // Suites that turn limits on share one Redis and all connect from 127.0.0.1: a generous
    // per-address budget keeps them from tripping each other; tests of that limit set their own.
    GATE_RATE_CHALLENGE_IP: '100000/60',
    // Likewise for refusals per certificate: replay, race and fuzz suites refuse one certificate
    // hundreds of times on purpose; tests of that limit set their own.
    GATE_RATE_REFUSAL_IDENTITY: '100000/60',
    ...extra,
  };
}

/** Builds and starts a gate from `env` (throws listing violations). */
export async function startGate(env: Record<string, string>, deps: GateDeps = {}): Promise<RunningGate> {
  const { config, violations } = loadConfig(env);
  if (!config || violations.length > 0) throw new Error(violations.map(formatViolation).join('\n'));
  const gate = await buildGate(config, { warn: () => {}, logStream: testLogStream(), ...deps });
  const { publicPort, adminPort } = await gate.listen();
  return { gate, url: `https://127.0.0.1:${publicPort}`, adminUrl: `http://127.0.0.1:${adminPort}`, close: () => gate.close() };
}

/**
 * The environment of a dev-profile test gate in forwarded mode: plain HTTP behind a proxy on
 * 127.0.0.1, proxying to `upstreamUrl`, on the suite's shared Redis; the caller adds
 * GATE_FWD_HMAC_KEYS and whatever else it tests.
 */
export function forwardedTestEnv(fx: Fixtures, upstreamUrl: string, redisUrl: string, extra: Record<string, string>): Record<string, string> {
  return testEnv(fx, {
    GATE_MODE: 'forwarded',
    GATE_TLS_CERT: '',
    GATE_TLS_KEY: '',
    GATE_STORE: 'redis',
    GATE_REDIS_URL: redisUrl,
    GATE_UPSTREAM_URL: upstreamUrl,
    GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32',
    ...extra,
  });
}
