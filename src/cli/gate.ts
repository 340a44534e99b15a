import { buildGate, loadMaterials, StartupError, type Gate } from '../app.js';
import { formatViolation, loadConfig, maskedConfig, type GateConfig } from '../config/index.js';

/** Exit code for configuration violations (PROTOCOL.md section 11). */
export const EXIT_CONFIG = 2;

/** Parses the environment or prints every violation and exits 2. */
export function configOrExit(env: Record<string, string | undefined>): GateConfig {
  const { config, violations } = loadConfig(env);
  if (violations.length > 0 || !config) {
    for (const v of violations) process.stderr.write(formatViolation(v) + '\n');
    process.exit(EXIT_CONFIG);
  }
  return config;
}

/** `agent-gate config check`: effective config (secrets masked) on stdout, violations on stderr. */
export async function configCheck(env: Record<string, string | undefined>): Promise<number> {
  const { config, violations } = loadConfig(env);
  if (config) process.stdout.write(JSON.stringify(maskedConfig(config), null, 2) + '\n');
  const all = [...violations];
  if (config && violations.length === 0) {
    try {
      await loadMaterials(config, () => {});
    } catch (err) {
      if (!(err instanceof StartupError)) throw err;
      all.push(...err.violations);
    }
  }
  for (const v of all) process.stderr.write(formatViolation(v) + '\n');
  return all.length > 0 ? EXIT_CONFIG : 0;
}

/** Builds, listens and installs the SIGTERM/SIGINT drain; exits 2 on startup violations. */
export async function runGate(config: GateConfig, onListening?: (ports: { publicPort: number; adminPort: number }, gate: Gate) => void): Promise<Gate> {
  let gate: Gate;
  try {
    gate = await buildGate(config);
  } catch (err) {
    if (err instanceof StartupError) {
      for (const v of err.violations) process.stderr.write(formatViolation(v) + '\n');
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
  const ports = await gate.listen();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gate.publicApp.log.info({ event: 'shutdown', signal }, 'draining');
    gate.drain().then(
      () => process.exit(0),
      (err: unknown) => {
        gate.publicApp.log.error({ err }, 'drain failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  onListening?.(ports, gate);
  return gate;
}
