/**
 * Turns a caller's event into a bounded, JSON-safe snapshot. Pure: no I/O.
 *
 * Audit records hold ids, codes and thumbprints, never certificate bodies, tokens or proofs:
 * the trail is kept for years and read by people who must not get credentials from it. The
 * bounds below only stop a careless caller from bloating the trail; they are no redaction.
 * @module
 */

/** Longest string value kept, in UTF-16 units; longer ones are cut and marked. */
export const MAX_STRING = 1024;
const MAX_KEYS = 64;
const MAX_ITEMS = 64;
const MAX_DEPTH = 4;
const MAX_KEY = 128;

/** Keys the writer sets itself; an event field of that name is stored with a `_` prefix. */
export const RESERVED_KEYS: ReadonlySet<string> = new Set(['seq', 'ts', 'event', 'prev', 'mac']);

const EVENT_NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

function cutString(s: string): string {
  return s.length <= MAX_STRING ? s : `${s.slice(0, MAX_STRING)}…(+${s.length - MAX_STRING} chars)`;
}

function cutKey(k: string): string {
  return k.length <= MAX_KEY ? k : k.slice(0, MAX_KEY);
}

/** A JSON-safe copy of `v`, bounded in depth, width and string length. */
export function sanitizeValue(v: unknown, depth = 0): unknown {
  switch (typeof v) {
    case 'string':
      return cutString(v);
    case 'number':
      // NaN and infinities are not JSON; keep them readable instead of turning them into null.
      return Number.isFinite(v) ? v : String(v);
    case 'boolean':
      return v;
    case 'bigint':
      return v.toString();
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (v === null) return null;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return `[binary ${v.byteLength} bytes]`;
  if (depth >= MAX_DEPTH) return '[nested too deep]';
  if (Array.isArray(v)) {
    const out = v.slice(0, MAX_ITEMS).map((x) => sanitizeValue(x, depth + 1) ?? null);
    if (v.length > MAX_ITEMS) out.push(`…(+${v.length - MAX_ITEMS} items)`);
    return out;
  }
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) return cutString(String(v));
  return sanitizeObject(v as Record<string, unknown>, depth, false);
}

function sanitizeObject(src: Record<string, unknown>, depth: number, top: boolean): Record<string, unknown> {
  // No prototype: a key named `__proto__` stays a plain field instead of changing the object.
  const out = Object.create(null) as Record<string, unknown>;
  let n = 0;
  for (const key of Object.keys(src)) {
    if (top && key === 'event') continue;
    if (n === MAX_KEYS) {
      out['_truncated_fields'] = Object.keys(src).length - n;
      break;
    }
    const value = sanitizeValue(src[key], depth + 1);
    if (value === undefined) continue;
    let k = cutKey(key);
    if (top) while (RESERVED_KEYS.has(k) || k in out) k = `_${k}`;
    out[k] = value;
    n++;
  }
  return out;
}

/** Whether `name` may be a caller's event name (`audit.*` is the writer's own). */
export function isValidEventName(name: unknown): name is string {
  return typeof name === 'string' && EVENT_NAME_RE.test(name) && !name.startsWith('audit.');
}

/** Splits a caller's event into its name and bounded fields; `problem` says what was rewritten. */
export function sanitizeEvent(ev: { event: unknown; [field: string]: unknown }): { event: string; fields: Record<string, unknown>; problem?: string } {
  const fields = sanitizeObject(ev, 0, true);
  if (isValidEventName(ev.event)) return { event: ev.event, fields };
  // Kept, not dropped: the record still shows that something happened and what it was called.
  fields['_event'] = sanitizeValue(ev.event) ?? null;
  return { event: 'invalid_event', fields, problem: `event name must match ${EVENT_NAME_RE.source} and not start with "audit."` };
}
