/**
 * One worker process of a gate running `GATE_WORKERS` > 1 (see primary.ts). It builds a whole
 * gate from the same configuration and listens on the same addresses (node:cluster shares the
 * listeners through the primary), with four seams:
 * - audit events go to the primary, which owns the one HMAC chain (src/audit/remote.ts);
 * - the admin `/metrics` and `/readyz` answer for the whole gate, asking the primary, which
 *   collects every worker's registry and readiness;
 * - the TLS session-ticket key comes from the primary (the same on every worker);
 * - the connection caps and the in-flight cap are this worker's share of the gate's.
 * @module
 */
import type { Gate, GateDeps } from '../app.js';
import { forwardAuditTo } from '../audit/index.js';
import type { GateConfig } from '../config/index.js';
import { GateError } from '../errors.js';
import { exposeGateMetrics, metricsSnapshot } from '../metrics/index.js';
import { ANSWER_TIMEOUT_MS, isGateMessage, type PrimaryMessage, type ReadinessProblem, type WorkerMessage, type WorkerQuestion } from './messages.js';
import { ticketServer } from './tickets.js';

/**
 * A worker's share of a per-gate cap. Round-robin scheduling deals connections out evenly, so
 * the shares fill together; the gate never holds more than the cap, and may refuse a little
 * before it when one worker's share is full while another's is not.
 */
export function workerShare(cap: number, workers: number): number {
  return Math.max(1, Math.floor(cap / workers));
}

/** The configuration a worker builds its gate from: the caps divided between the workers. */
export function workerConfig(config: GateConfig): GateConfig {
  const n = config.workers;
  return {
    ...config,
    maxInflight: workerShare(config.maxInflight, n),
    connections: { ...config.connections, max: workerShare(config.connections.max, n), maxPerAddress: workerShare(config.connections.maxPerAddress, n) },
  };
}

function send(m: WorkerMessage, cb?: () => void): void {
  if (!process.connected) {
    cb?.();
    return;
  }
  // A channel closing under us is the primary going away: the 'disconnect' handler drains.
  process.send!(m, undefined, {}, () => cb?.());
}

function toGateError(p: ReadinessProblem | null | undefined): GateError | undefined {
  return p ? new GateError(p.code, { detail: p.detail, headers: p.retryAfter ? { 'retry-after': p.retryAfter } : {} }) : undefined;
}

function toProblem(e: GateError | undefined): ReadinessProblem | null {
  return e ? { code: e.code, detail: e.detail, retryAfter: e.headers['retry-after'] } : null;
}

/** The worker side of the cluster; create before building the gate. */
export class WorkerLink {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (m: Extract<PrimaryMessage, { type: 'ag:answer' }>) => void; timer: NodeJS.Timeout }>();
  private local: (() => Promise<GateError | undefined>) | undefined;
  private gate: Gate | undefined;

  constructor() {
    forwardAuditTo({
      send: (ev) => send({ type: 'ag:audit', ev }),
      flush: () => this.flush(),
    });
    process.on('message', (m: unknown) => {
      if (isGateMessage(m)) void this.onMessage(m as PrimaryMessage);
    });
  }

  /** The deps that route the admin readiness through the primary. */
  deps(): Pick<GateDeps, 'readiness'> {
    return {
      readiness: (local) => {
        this.local = local;
        // The primary asks every worker, this one included, for its own readiness.
        return async () => toGateError((await this.ask('ready')).problem);
      },
    };
  }

  /** Wires the built gate (before it listens): whole-gate /metrics, the shared ticket key. */
  async attach(gate: Gate): Promise<void> {
    this.gate = gate;
    exposeGateMetrics(gate.metrics, async () => {
      const a = await this.ask('metrics');
      if (a.text === undefined) throw new Error('the primary did not answer with the gate metrics');
      return a.text;
    });
    const { key } = await this.ask('tickets');
    if (key) ticketServer(gate.publicApp.server)?.setTicketKeys(Buffer.from(key, 'base64'));
  }

  /** Tells the primary this worker serves. */
  listening(): void {
    send({ type: 'ag:listening' });
  }

  /** Resolves when everything sent so far (audit events first) has left this process. */
  flush(): Promise<void> {
    return new Promise((resolve) => send({ type: 'ag:flush' }, resolve));
  }

  private ask(what: WorkerQuestion): Promise<Extract<PrimaryMessage, { type: 'ag:answer' }>> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ type: 'ag:answer', id, problem: { code: 'overloaded', detail: 'the cluster primary did not answer', retryAfter: '1' } });
      }, ANSWER_TIMEOUT_MS * 2);
      this.waiting.set(id, { resolve, timer });
      send({ type: 'ag:ask', id, what });
    });
  }

  private async onMessage(m: PrimaryMessage): Promise<void> {
    switch (m.type) {
      case 'ag:answer': {
        const w = this.waiting.get(m.id);
        if (!w) return;
        this.waiting.delete(m.id);
        clearTimeout(w.timer);
        w.resolve(m);
        return;
      }
      case 'ag:tickets':
        if (this.gate) ticketServer(this.gate.publicApp.server)?.setTicketKeys(Buffer.from(m.key, 'base64'));
        return;
      case 'ag:ask':
        if (m.what === 'metrics') {
          const metrics = this.gate ? await metricsSnapshot(this.gate.metrics.registry) : [];
          send({ type: 'ag:answer', id: m.id, metrics });
        } else {
          const problem = this.local ? toProblem(await this.local().catch(() => new GateError('overloaded', { detail: 'readiness check failed' }))) : { code: 'overloaded' as const, detail: 'starting' };
          send({ type: 'ag:answer', id: m.id, problem });
        }
        return;
    }
  }
}
