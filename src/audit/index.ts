/**
 * The audit trail (PROTOCOL.md sections 9 and 12: `GATE_AUDIT_FILE`, `GATE_AUDIT_KEY_FILE`):
 * append-only JSON lines, each chained to the one before by HMAC-SHA256, with checkpoints in a
 * second file so truncation shows too. Written off the request path in fsynced batches.
 * The line format is described in `format.ts`.
 * @module
 */
export { AuditLog, type AuditSink } from './log.js';
export type { AuditEvent, AuditOptions } from './options.js';
export { AuditSetupError, type AuditVariable } from './errors.js';
export { CHECKPOINT_EVENT, GENESIS, OVERFLOW_EVENT, type Checkpoint } from './format.js';
export { generateAuditKey, loadAuditKey, MIN_AUDIT_KEY_BYTES } from './key.js';
export { verifyAudit, type AuditReport } from './verify.js';
export { forwardAuditTo, recordForwarded, RemoteAuditLog, type AuditTransport, type ForwardedAuditEvent } from './remote.js';
