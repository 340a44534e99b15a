/**
 * The audit HMAC key: a text file holding base64 of at least 32 random bytes.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AuditSetupError } from './errors.js';

/** Shortest key accepted, in bytes: the HMAC-SHA256 block output size. */
export const MIN_AUDIT_KEY_BYTES = 32;

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/**
 * Reads and decodes the key file; throws {@link AuditSetupError} (GATE_AUDIT_KEY_FILE) naming the problem.
 * @example const key = loadAuditKey('/etc/agent-gate/audit.key');
 */
export function loadAuditKey(path: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AuditSetupError('GATE_AUDIT_KEY_FILE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
  // Surrounding whitespace (an editor's final newline) is not part of the key.
  const b64 = text.trim();
  if (b64.length === 0) throw new AuditSetupError('GATE_AUDIT_KEY_FILE', `${path} is empty`);
  // Buffer.from(…, 'base64') skips bad characters silently; a typo must not shorten the key.
  if (!BASE64_RE.test(b64)) throw new AuditSetupError('GATE_AUDIT_KEY_FILE', `${path} must hold one base64 value (as written by \`agent-gate audit keygen\`)`);
  const key = Buffer.from(b64, 'base64');
  if (key.length < MIN_AUDIT_KEY_BYTES) throw new AuditSetupError('GATE_AUDIT_KEY_FILE', `${path} holds ${key.length} bytes; at least ${MIN_AUDIT_KEY_BYTES} are required`);
  return key;
}

/** A fresh key as the base64 text a key file holds (no newline). */
export function generateAuditKey(): string {
  return randomBytes(MIN_AUDIT_KEY_BYTES).toString('base64');
}
