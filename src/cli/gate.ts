import cluster from 'node:cluster';
import { statSync } from 'node:fs';
import { buildGate, loadMaterials, StartupError, type Gate } from '../app.js';
import { runPrimary } from '../cluster/primary.js';
import { rotateTicketKeys, ticketServer } from '../cluster/tickets.js';
import { WorkerLink, workerConfig } from '../cluster/worker.js';
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

/**
 * The one exit of every startup failure (config, materials, files, admin token, listeners): its
 * `config violation: VAR: why` lines and exit 2. Anything else is a bug and is rethrown.
 */
function exitOnStartupError(err: unknown): never {
  if (!(err instanceof StartupError)) throw err;
  for (const v of err.violations) process.stderr.write(formatViolation(v) + '\n');
  process.exit(EXIT_CONFIG);
}

/** Binds both listeners; an address that cannot be bound is a violation of its variable. */
async function listenOrExit(gate: Gate, onFail: () => void): Promise<{ publicPort: number; adminPort: number }> {
  try {
    return await gate.listen();
  } catch (err) {
    onFail();
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (e?.syscall !== 'listen') throw err;
    // The public listener binds first: if it is up, the admin listener failed.
    const admin = gate.publicApp.server.listening;
    const { host, port } = admin ? gate.config.adminListen : gate.config.listen;
    await gate.close().catch(() => undefined);
    exitOnStartupError(new StartupError([{ variable: admin ? 'GATE_ADMIN_LISTEN' : 'GATE_LISTEN', why: `cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port}: ${e.code ?? e.message}` }]));
  }
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

/**
 * The warning line for an `OPENSSL_CONF` that is missing or a directory, which Node ignores
 * silently (one it may not read stops it at start instead): the gate then runs on OpenSSL's
 * defaults, without the image's deploy/node-openssl.cnf saving.
 */
export function opensslConfWarning(env: Record<string, string | undefined>): string | undefined {
  const file = env.OPENSSL_CONF;
  if (!file) return undefined;
  let why: string;
  try {
    if (!statSync(file).isDirectory()) return undefined;
    why = 'a directory';
  } catch (err) {
    why = (err as NodeJS.ErrnoException).code ?? 'error';
  }
  return `agent-gate: OPENSSL_CONF=${file} cannot be read (${why}): Node ignores it and runs on OpenSSL's defaults (two TLS 1.3 session tickets per handshake; deploy/node-openssl.cnf)`;
}

/**
 * Builds, listens and installs the SIGTERM/SIGINT drain; exits 2 on startup violations. With
 * `GATE_WORKERS` > 1 the first process becomes the cluster primary (src/cluster/primary.ts,
 * no gate of its own: resolves undefined) and each forked worker runs a gate here.
 */
export async function runGate(config: GateConfig, onListening?: (ports: { publicPort: number; adminPort: number }, gate: Gate) => void): Promise<Gate | undefined> {
  if (config.workers > 1 && cluster.isPrimary) {
    await runPrimary(config);
    return undefined;
  }
  const link = config.workers > 1 ? new WorkerLink() : undefined;
  // SIGTERM/SIGINT before the gate listens: nothing is in flight to drain, so exit 0 at once (a
  // worker the primary restarts and then stops while it starts must not die by the signal, which
  // made the primary exit 1).
  const early = () => process.exit(0);
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  let gate: Gate;
  try {
    gate = await buildGate(link ? workerConfig(config) : config, link?.deps());
  } catch (err) {
    exitOnStartupError(err);
  }
  // One process: its own rotating ticket key (set before the first connection); workers: the
  // primary's. A listener that fails (exit 2) stops it, so no timer outlives an in-process run.
  const tickets = link ? undefined : ticketServer(gate.publicApp.server);
  const rotation = tickets && rotateTicketKeys(config.ticketRotateS, (key) => tickets.setTicketKeys(key));
  await link?.attach(gate);
  const ports = await listenOrExit(gate, () => rotation?.stop());
  link?.listening();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    rotation?.stop();
    gate.publicApp.log.info({ event: 'shutdown', signal }, 'draining');
    gate.drain().then(
      // A worker's last audit events must leave through the IPC channel before it exits.
      async () => {
        await link?.flush();
        process.exit(0);
      },
      (err: unknown) => {
        gate.publicApp.log.error({ err }, 'drain failed');
        process.exit(1);
      },
    );
  };
  process.removeListener('SIGTERM', early);
  process.removeListener('SIGINT', early);
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // A worker whose primary is gone (killed) drains instead of serving on alone.
  if (link) process.once('disconnect', () => stop('disconnect'));
  if (!link || cluster.worker?.id === 1) onListening?.(ports, gate);
  return gate;
}
