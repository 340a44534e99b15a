/**
 * The cluster primary of `agent-gate serve` with `GATE_WORKERS` > 1. It serves no request
 * itself: it forks the workers, shares the public and admin listeners with them (node:cluster,
 * round-robin: the primary accepts and deals connections out in turn, so TLS handshakes spread
 * evenly instead of piling on whichever process the kernel wakes, and each worker's share of the
 * connection caps fills at the same pace), and owns what must be one per gate:
 * - the audit trail's HMAC chain (workers send their events over IPC; src/audit/remote.ts);
 * - the TLS session-ticket key, rotated every `GATE_TLS_TICKET_ROTATE_S` and sent to every worker;
 * - the gate's `/metrics` (every worker's registry aggregated with prom-client's cluster
 *   aggregation, plus `worker_restarts_total`) and `/readyz` (ready only when every worker is);
 * - restarting a worker that dies (exponential backoff), and SIGTERM: every worker drains, then
 *   the trail is closed and the primary exits 0.
 * @module
 */
import cluster, { type Worker } from 'node:cluster';
import { pino, type Logger } from 'pino';
import { loadMaterials, openAuditTrail, StartupError } from '../app.js';
import { recordForwarded, type AuditLog } from '../audit/index.js';
import { formatViolation, type GateConfig } from '../config/index.js';
import { aggregateMetrics, createMetrics, metricsSnapshot, type GateMetrics } from '../metrics/index.js';
import { ANSWER_TIMEOUT_MS, isGateMessage, type PrimaryMessage, type PrimaryQuestion, type ReadinessProblem, type WorkerMessage } from './messages.js';
import { rotateTicketKeys } from './tickets.js';

/** Exit code for configuration violations (section 11). */
const EXIT_CONFIG = 2;
/** First restart delay after a worker dies; doubles per death in a row, up to {@link RESTART_MAX_MS}. */
const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 10_000;
/** A worker serving this long resets the backoff. */
const RESTART_STABLE_MS = 30_000;

/** Options of {@link runPrimary} (tests shorten the clock). */
export interface PrimaryOptions {
  /** Where the primary's log lines go; default stdout. */
  log?: Logger;
}

interface Slot {
  worker: Worker;
  listening: boolean;
  stableTimer?: NodeJS.Timeout;
}

/** Runs the primary until SIGTERM/SIGINT; the process exits from here. */
export async function runPrimary(config: GateConfig, opts: PrimaryOptions = {}): Promise<void> {
  const log = opts.log ?? pino({ level: config.logLevel, base: { pid: process.pid, role: 'primary' } });
  // Files and keys are checked once here, so a bad one is one violation line, not one per worker.
  const metrics: GateMetrics = createMetrics();
  let audit: AuditLog | undefined;
  try {
    await loadMaterials(config, () => {});
    audit = await openAuditTrail(config.audit, metrics, () => log);
  } catch (err) {
    if (!(err instanceof StartupError)) throw err;
    for (const v of err.violations) process.stderr.write(formatViolation(v) + '\n');
    process.exit(EXIT_CONFIG);
  }

  const slots = new Map<number, Slot>();
  let everListening = false;
  let stopping = false;
  let crashesInARow = 0;
  let exitCode = 0;

  const broadcast = (m: PrimaryMessage) => {
    for (const { worker } of slots.values()) if (worker.isConnected()) worker.send(m);
  };
  const tickets = rotateTicketKeys(config.ticketRotateS, (key) => broadcast({ type: 'ag:tickets', key: key.toString('base64') }));

  // Questions the primary put to workers, by id.
  let nextId = 1;
  const waiting = new Map<number, (m: Extract<WorkerMessage, { type: 'ag:answer' }> | undefined) => void>();
  const askWorker = (worker: Worker, what: PrimaryQuestion) =>
    new Promise<Extract<WorkerMessage, { type: 'ag:answer' }> | undefined>((resolve) => {
      const id = nextId++;
      const timer = setTimeout(() => done(undefined), ANSWER_TIMEOUT_MS);
      const done = (m: Extract<WorkerMessage, { type: 'ag:answer' }> | undefined) => {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(m);
      };
      waiting.set(id, done);
      if (worker.isConnected()) worker.send({ type: 'ag:ask', id, what } satisfies PrimaryMessage);
      else done(undefined);
    });

  const gateMetrics = async (): Promise<string> => {
    const answers = await Promise.all([...slots.values()].map((s) => askWorker(s.worker, 'metrics')));
    const snapshots = answers.flatMap((a) => (a?.metrics ? [a.metrics] : []));
    return aggregateMetrics([...snapshots, await metricsSnapshot(metrics.registry)]);
  };

  const gateReadiness = async (): Promise<ReadinessProblem | null> => {
    if (stopping) return { code: 'overloaded', detail: 'draining', retryAfter: '5' };
    const serving = [...slots.values()].filter((s) => s.listening);
    if (serving.length < config.workers) return { code: 'overloaded', detail: `${serving.length} of ${config.workers} workers serving`, retryAfter: '1' };
    const answers = await Promise.all(serving.map((s) => askWorker(s.worker, 'ready')));
    for (const a of answers) {
      if (!a) return { code: 'overloaded', detail: 'a worker did not answer', retryAfter: '1' };
      if (a.problem) return a.problem;
    }
    return null;
  };

  const onMessage = (worker: Worker, m: WorkerMessage) => {
    switch (m.type) {
      case 'ag:audit':
        if (audit) recordForwarded(audit, m.ev);
        return;
      case 'ag:answer':
        waiting.get(m.id)?.(m);
        return;
      case 'ag:listening': {
        const slot = slots.get(worker.id);
        if (!slot) return;
        slot.listening = true;
        everListening = true;
        slot.stableTimer = setTimeout(() => (crashesInARow = 0), RESTART_STABLE_MS).unref();
        return;
      }
      case 'ag:flush':
        return;
      case 'ag:ask': {
        const reply = (a: Omit<Extract<PrimaryMessage, { type: 'ag:answer' }>, 'type' | 'id'>) => {
          if (worker.isConnected()) worker.send({ type: 'ag:answer', id: m.id, ...a } satisfies PrimaryMessage);
        };
        if (m.what === 'tickets') reply({ key: tickets.current().toString('base64') });
        else if (m.what === 'ready') void gateReadiness().then((problem) => reply({ problem }));
        else
          void gateMetrics().then(
            (text) => reply({ text }),
            (err: unknown) => {
              log.error({ event: 'metrics_error', err }, 'cannot aggregate worker metrics');
              reply({});
            },
          );
        return;
      }
    }
  };

  const fork = () => {
    const worker = cluster.fork();
    slots.set(worker.id, { worker, listening: false });
    worker.on('message', (m: unknown) => {
      if (isGateMessage(m)) onMessage(worker, m as WorkerMessage);
    });
  };

  let finish: (() => void) | undefined;
  cluster.on('exit', (worker, code, signal) => {
    const slot = slots.get(worker.id);
    slots.delete(worker.id);
    if (slot?.stableTimer) clearTimeout(slot.stableTimer);
    if (stopping) {
      // A worker still starting when the SIGTERM came (before it could install its drain, even
      // before its code loaded) ends by that signal: it was serving nothing, so that is drained.
      const startingAndSignalled = !slot?.listening && (signal === 'SIGTERM' || signal === 'SIGINT');
      if (code !== 0 && !startingAndSignalled) exitCode = 1;
      log.info({ event: 'worker_exit', worker: worker.id, pid: worker.process.pid, code, signal }, 'worker drained');
      if (slots.size === 0) finish?.();
      return;
    }
    if (!everListening) {
      // Dying before any worker served is a start-up failure (its stderr says why): stop, do not loop.
      log.error({ event: 'worker_exit', worker: worker.id, pid: worker.process.pid, code, signal }, 'worker failed to start');
      exitCode = code === EXIT_CONFIG ? EXIT_CONFIG : 1;
      void stop('startup_failure');
      return;
    }
    const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** crashesInARow);
    crashesInARow++;
    log.error({ event: 'worker_exit', worker: worker.id, pid: worker.process.pid, code, signal, restart_in_ms: delay }, 'worker died; restarting');
    setTimeout(() => {
      if (stopping) return;
      metrics.workerRestarts.inc();
      fork();
    }, delay);
  });

  const stop = (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ event: 'shutdown', signal: reason, workers: slots.size }, 'draining every worker');
    // Workers past the drain deadline (plus time to close the store and flush) are killed.
    const deadline = setTimeout(() => {
      for (const { worker } of slots.values()) worker.process.kill('SIGKILL');
    }, config.drainTimeoutMs + 5000).unref();
    const drained = new Promise<void>((resolve) => {
      finish = resolve;
      if (slots.size === 0) resolve();
    });
    for (const { worker } of slots.values()) worker.process.kill('SIGTERM');
    void drained.then(async () => {
      clearTimeout(deadline);
      tickets.stop();
      // Every worker has flushed its events into the IPC channel before exiting: now seal the chain.
      await audit?.close().catch((err: unknown) => {
        log.error({ event: 'audit_error', err }, 'audit trail could not be closed');
        exitCode = 1;
      });
      process.exit(exitCode);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  // Explicit although it is Linux's default: Windows defaults to SCHED_NONE.
  cluster.schedulingPolicy = cluster.SCHED_RR;
  log.info({ event: 'cluster_start', workers: config.workers }, `starting ${config.workers} workers`);
  for (let i = 0; i < config.workers; i++) fork();
}
