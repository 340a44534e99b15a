import { buildGate, type Gate, type GateDeps } from '../../src/app.js';
import { formatViolation, loadConfig } from '../../src/config/index.js';
import type { Fixtures } from './fixtures.js';

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
    GATE_LOG_LEVEL: 'silent',
    // Functional suites must not trip limits; the rate-limit suite turns them on.
    GATE_RATE_LIMITS: 'off',
    ...extra,
  };
}

/** Builds and starts a gate from `env` (throws listing violations). */
export async function startGate(env: Record<string, string>, deps: GateDeps = {}): Promise<RunningGate> {
  const { config, violations } = loadConfig(env);
  if (!config || violations.length > 0) throw new Error(violations.map(formatViolation).join('\n'));
  const gate = await buildGate(config, { warn: () => {}, ...deps });
  const { publicPort, adminPort } = await gate.listen();
  return { gate, url: `https://127.0.0.1:${publicPort}`, adminUrl: `http://127.0.0.1:${adminPort}`, close: () => gate.close() };
}
