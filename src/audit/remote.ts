/**
 * The audit trail of a gate running several worker processes (`GATE_WORKERS` > 1): one writer.
 * The cluster primary opens the real {@link AuditLog} and owns the HMAC chain; in a worker,
 * `AuditLog.open` returns a {@link RemoteAuditLog} that sends each sanitized event to the
 * primary over the cluster IPC channel. So the trail stays one file with one sequence, verified
 * by `agent-gate audit verify` exactly as for a single process, and a restarted worker has no
 * chain to resume. `ts` is the primary's clock when the event arrives (within IPC latency of
 * the worker's).
 * @module
 */
import type { AuditLog } from './log.js';
import type { AuditEvent } from './options.js';
import { sanitizeEvent } from './sanitize.js';

/** One event on its way from a worker to the writer. */
export interface ForwardedAuditEvent {
  event: string;
  fields: Record<string, unknown>;
}

/** How a worker reaches the writer. */
export interface AuditTransport {
  /** Sends one sanitized event; never throws. */
  send(ev: ForwardedAuditEvent): void;
  /** Resolves once everything sent so far has left this process. */
  flush(): Promise<void>;
}

let transport: AuditTransport | undefined;

/** Makes `AuditLog.open` in this process forward to `t` instead of writing a file (cluster workers). */
export function forwardAuditTo(t: AuditTransport | undefined): void {
  transport = t;
}

/** The transport set by {@link forwardAuditTo}, if any. */
export function auditTransport(): AuditTransport | undefined {
  return transport;
}

/** The part of {@link AuditLog} the gate uses; the compiler keeps both in step. */
type AuditSurface = Pick<AuditLog, 'record' | 'flush' | 'close' | 'pending' | 'dropped'>;

/** A worker's audit log: events go to the primary's writer (see module doc). */
export class RemoteAuditLog implements AuditSurface {
  private closed = false;
  private droppedTotal = 0;

  constructor(private readonly to: AuditTransport, private readonly onError?: (err: Error) => void) {}

  /** Nothing is held here: sent events are the writer's. */
  get pending(): number {
    return 0;
  }

  /** Events refused because this log was closed. */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** Sanitizes `ev` here (a throwing getter must fail in the worker, not in the writer) and sends it. */
  record(ev: AuditEvent): void {
    if (this.closed) {
      this.droppedTotal++;
      return;
    }
    try {
      const { event, fields, problem } = sanitizeEvent(ev);
      if (problem) this.onError?.(new TypeError(`audit event rewritten as ${event}: ${problem}`));
      this.to.send({ event, fields });
    } catch (err) {
      this.to.send({ event: 'invalid_event', fields: { _error: 'event could not be read' } });
      this.onError?.(new TypeError(`audit event could not be read: ${(err as Error)?.message ?? String(err)}`));
    }
  }

  /** Resolves when every event recorded so far has been handed to the IPC channel. */
  flush(): Promise<void> {
    return this.to.flush();
  }

  /** Flushes; later events are counted as dropped (the writer's own close writes the checkpoint). */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}

/** The writer side: records a forwarded event in the primary's chain. */
export function recordForwarded(log: Pick<AuditLog, 'record'>, ev: ForwardedAuditEvent): void {
  if (!ev || typeof ev.event !== 'string' || typeof ev.fields !== 'object' || ev.fields === null) {
    log.record({ event: 'invalid_event', _error: 'malformed event from a worker' });
    return;
  }
  log.record({ ...ev.fields, event: ev.event });
}
