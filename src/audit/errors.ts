/**
 * The one error type of the audit module for setup problems, naming the variable to change so
 * the gate can report it as a startup violation (PROTOCOL.md section 12).
 * @module
 */

/** The variable a setup problem belongs to. */
export type AuditVariable = 'GATE_AUDIT_FILE' | 'GATE_AUDIT_KEY_FILE';

/** A key or file the audit trail cannot start with; `message` is `<variable>: <why>`. */
export class AuditSetupError extends Error {
  constructor(
    readonly variable: AuditVariable,
    readonly why: string,
    options?: { cause?: unknown },
  ) {
    super(`${variable}: ${why}`, options);
    this.name = 'AuditSetupError';
  }
}
