/**
 * The audit trail's line format, shared by the writer and the verifier. Pure: no I/O.
 *
 * A line is the JSON text `B` of an object without `mac` (written with `JSON.stringify`, keys in
 * insertion order), with its closing brace replaced by `,"mac":"<hex>"}`, then `\n`:
 *
 *     {"seq":1,"ts":1767225600000,"event":"refusal",...,"prev":"000…0","mac":"9f…"}
 *
 * where `<hex>` is 64 lowercase hex digits of HMAC-SHA256(key, B), B taken as UTF-8 bytes. The
 * verifier cuts the fixed 74-byte suffix `,"mac":"<hex>"}` off the stored bytes and puts the
 * brace back, so it checks exactly what was written and never depends on re-serialization.
 * Record lines (audit file) carry `seq`, `ts`, `event`, the event's fields, then `prev`;
 * checkpoint lines (checkpoint file) carry exactly `seq`, `head`, `count`, `ts`. The disjoint
 * key sets keep one kind of line from being passed off as the other.
 * @module
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** `prev` of the first record: there is no previous mac. */
export const GENESIS = '0'.repeat(64);

/** Event name of the chained checkpoint records the writer puts in the audit file itself. */
export const CHECKPOINT_EVENT = 'audit.checkpoint';

/** Event name of the record that says how many records were refused because the queue was full. */
export const OVERFLOW_EVENT = 'audit.overflow';

/** Longest line either side accepts; the writer keeps records far below it. */
export const MAX_LINE_BYTES = 1024 * 1024;

const SUFFIX_LEN = ',"mac":"'.length + 64 + '"}'.length;
const SUFFIX_RE = /^,"mac":"([0-9a-f]{64})"\}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;
const CLOSE_BRACE = Buffer.from('}');

/** Hex HMAC-SHA256 of `body` under `key`. */
export function macOf(key: Buffer, body: string | Buffer): string {
  return createHmac('sha256', key).update(body).digest('hex');
}

/** Serializes `obj` (which must not hold `mac`) as one line, newline included; returns it with its mac. */
export function encodeLine(key: Buffer, obj: object): { line: string; mac: string } {
  const body = JSON.stringify(obj);
  const mac = macOf(key, body);
  return { line: `${body.slice(0, -1)},"mac":"${mac}"}\n`, mac };
}

/** The outcome of checking one stored line (without its newline). */
export type DecodedLine = { ok: true; obj: Record<string, unknown>; mac: string } | { ok: false; reason: string };

/** Checks the mac over the stored bytes of `line`, then parses it. */
export function decodeLine(key: Buffer, line: Buffer): DecodedLine {
  if (line.length === 0) return { ok: false, reason: 'empty line' };
  if (line.length <= SUFFIX_LEN + 1) return { ok: false, reason: 'not an audit line (too short for a mac)' };
  const suffix = SUFFIX_RE.exec(line.subarray(line.length - SUFFIX_LEN).toString('latin1'));
  if (!suffix?.[1]) return { ok: false, reason: 'not an audit line (no trailing mac)' };
  const mac = suffix[1];
  const body = Buffer.concat([line.subarray(0, line.length - SUFFIX_LEN), CLOSE_BRACE]);
  const expected = Buffer.from(macOf(key, body), 'hex');
  // Constant time, although a verifier comparing its own output leaks little: cheap habit.
  if (!timingSafeEqual(expected, Buffer.from(mac, 'hex'))) return { ok: false, reason: 'mac does not verify (line altered, or another key)' };
  let obj: unknown;
  try {
    obj = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, reason: 'mac verifies but the line is not JSON' };
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return { ok: false, reason: 'not a JSON object' };
  return { ok: true, obj: obj as Record<string, unknown>, mac };
}

/** A record line's chain fields, once its mac verified. */
export interface RecordFields {
  seq: number;
  ts: number;
  event: string;
  prev: string;
  /** `count` of a checkpoint record: event records before it. */
  count?: number;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks the shape of a verified record object; returns its chain fields or why not. */
export function recordFields(obj: Record<string, unknown>): RecordFields | string {
  const { seq, ts, event, prev } = obj;
  if (!isCount(seq) || seq < 1) return 'seq missing or not a positive integer';
  if (!isCount(ts)) return 'ts missing or not a Unix time in ms';
  if (typeof event !== 'string') return 'event missing';
  if (typeof prev !== 'string' || !HEX64_RE.test(prev)) return 'prev missing or not 64 hex digits';
  if ('mac' in obj) return 'mac inside the signed body';
  if (event === CHECKPOINT_EVENT) {
    if (!isCount(obj.count)) return 'checkpoint record without a count';
    return { seq, ts, event, prev, count: obj.count };
  }
  return { seq, ts, event, prev };
}

/** A checkpoint: the mac (`head`) of record `seq`, which is a chained checkpoint record; `count` event records precede it. */
export interface Checkpoint {
  seq: number;
  head: string;
  count: number;
  ts: number;
}

const CHECKPOINT_KEYS = ['count', 'head', 'seq', 'ts'];

/** Checks the shape of a verified checkpoint-file object. */
export function checkpointFields(obj: Record<string, unknown>): Checkpoint | string {
  const keys = Object.keys(obj).sort();
  if (keys.length !== CHECKPOINT_KEYS.length || keys.some((k, i) => k !== CHECKPOINT_KEYS[i])) return 'not a checkpoint line (fields differ)';
  const { seq, head, count, ts } = obj;
  if (!isCount(seq) || seq < 1 || !isCount(count) || !isCount(ts) || typeof head !== 'string' || !HEX64_RE.test(head)) return 'checkpoint fields malformed';
  return { seq, head, count, ts };
}

/** The checkpoint-file line for `cp` (newline included). */
export function encodeCheckpoint(key: Buffer, cp: Checkpoint): string {
  return encodeLine(key, { seq: cp.seq, head: cp.head, count: cp.count, ts: cp.ts }).line;
}
