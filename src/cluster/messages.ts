/**
 * The IPC messages between the cluster primary and its workers. Every type starts with `ag:`
 * so prom-client's or Node's own cluster messages are never mistaken for them. No message is
 * ever logged: `ag:tickets` carries the session-ticket key.
 * @module
 */
import type { ErrorCode } from '../errors.js';
import type { ForwardedAuditEvent } from '../audit/index.js';

/** A readiness problem as it travels (a GateError is rebuilt from it). */
export interface ReadinessProblem {
  code: ErrorCode;
  detail?: string;
  retryAfter?: string;
}

/** What a worker asks the primary about the whole gate. */
export type WorkerQuestion = 'metrics' | 'ready' | 'tickets';
/** What the primary collects from each worker. */
export type PrimaryQuestion = 'metrics' | 'ready';

/** Worker to primary. */
export type WorkerMessage =
  | { type: 'ag:ask'; id: number; what: WorkerQuestion }
  | { type: 'ag:answer'; id: number; metrics?: object[]; problem?: ReadinessProblem | null }
  | { type: 'ag:audit'; ev: ForwardedAuditEvent }
  | { type: 'ag:listening' }
  | { type: 'ag:flush' };

/** Primary to worker. */
export type PrimaryMessage =
  | { type: 'ag:ask'; id: number; what: PrimaryQuestion }
  | { type: 'ag:answer'; id: number; text?: string; problem?: ReadinessProblem | null; key?: string }
  | { type: 'ag:tickets'; key: string };

/** True for one of this module's messages (anything else on the channel is someone else's). */
export function isGateMessage(m: unknown): m is { type: string } {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('ag:');
}

/** How long one process waits for another's answer before treating it as missing. */
export const ANSWER_TIMEOUT_MS = 2000;
