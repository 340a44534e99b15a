/**
 * Where an existing audit trail left off: the chain state a new writer continues from, after
 * checking the tail and the last checkpoint. A trail that does not check out is refused, since
 * appending to it would bury the evidence under fresh, valid records.
 * @module
 */
import { AuditSetupError } from './errors.js';
import { CHECKPOINT_EVENT, GENESIS, MAX_LINE_BYTES, checkpointFields, decodeLine, recordFields, type Checkpoint } from './format.js';
import { readTail, type Tail } from './tail.js';

/** How far back reopening may read to find the last checkpoint record (about a checkpoint interval of writes). */
export const MAX_RESUME_BYTES = 256 * 1024 * 1024;

/** The chain state a writer continues from. */
export interface ResumeState {
  /** Seq of the last record (0 for a new trail). */
  lastSeq: number;
  /** Mac of the last record ({@link GENESIS} for a new trail). */
  lastMac: string;
  /** Event records so far (checkpoint records excluded). */
  events: number;
  /** Whether the audit file exists yet. */
  exists: boolean;
  /** The last checkpoint in the checkpoint file. */
  checkpoint?: Checkpoint;
  /** A checkpoint record the log holds but the checkpoint file lacks (a crash between the two writes): to append. */
  repair?: Checkpoint;
}

function refuse(why: string): never {
  throw new AuditSetupError('GATE_AUDIT_FILE', why);
}

async function tailOrNone(path: string, stop: (line: Buffer) => boolean, maxBytes: number): Promise<Tail | undefined> {
  try {
    return await readTail(path, stop, maxBytes);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    refuse(`cannot read ${path}: ${(err as Error).message}`);
  }
}

async function lastCheckpoint(cpFile: string, key: Buffer): Promise<Checkpoint | undefined> {
  const tail = await tailOrNone(cpFile, () => true, MAX_LINE_BYTES);
  if (!tail || tail.size === 0) return undefined;
  const advice = `run \`agent-gate audit verify\` on the trail`;
  if (!tail.endsWithNewline) refuse(`checkpoint file ${cpFile} ends with an incomplete line; ${advice}`);
  const line = tail.lines[tail.lines.length - 1] ?? Buffer.alloc(0);
  const decoded = decodeLine(key, line);
  const cp = decoded.ok ? checkpointFields(decoded.obj) : decoded.reason;
  if (typeof cp === 'string') refuse(`last line of checkpoint file ${cpFile} does not verify: ${cp}; ${advice}`);
  return cp;
}

/** Reads the tail of `file` and the last line of `cpFile`; throws {@link AuditSetupError} when they do not check out. */
export async function resumeState(file: string, cpFile: string, key: Buffer): Promise<ResumeState> {
  const advice = `run \`agent-gate audit verify ${file}\`, then move the trail and its checkpoint file aside to start a new one`;
  const checkpoint = await lastCheckpoint(cpFile, key);
  // Stop at the last checkpoint record, or at a line that does not verify (it is reported below).
  const isStop = (line: Buffer): boolean => {
    const d = decodeLine(key, line);
    return !d.ok || d.obj.event === CHECKPOINT_EVENT;
  };
  const tail = await tailOrNone(file, isStop, MAX_RESUME_BYTES);
  if (!tail || tail.size === 0) {
    if (checkpoint) refuse(`${file} is ${tail ? 'empty' : 'missing'} but its checkpoint file ${cpFile} confirms ${checkpoint.seq} records: the trail was truncated or removed; ${advice}`);
    return { lastSeq: 0, lastMac: GENESIS, events: 0, exists: tail !== undefined };
  }
  if (!tail.endsWithNewline) refuse(`${file} ends with an incomplete line (a crash mid-write, or tampering); ${advice}`);

  let lastSeq = 0;
  let lastMac = GENESIS;
  let events = 0;
  let logCheckpoint: Checkpoint | undefined;
  tail.lines.forEach((line, i) => {
    const where = `line ${tail.lines.length - i} from the end of ${file}`;
    const decoded = decodeLine(key, line);
    if (!decoded.ok) refuse(`${where} does not verify: ${decoded.reason}; ${advice}`);
    const r = recordFields(decoded.obj);
    if (typeof r === 'string') refuse(`${where}: ${r}; ${advice}`);
    if (i === 0 && !tail.reachedStart) {
      // The last checkpoint record: it carries the count of everything before it.
      events = r.count ?? 0;
    } else {
      const expectSeq = i === 0 ? 1 : lastSeq + 1;
      if (r.seq !== expectSeq) refuse(`${where}: seq ${r.seq}, expected ${expectSeq}; ${advice}`);
      if (r.prev !== lastMac) refuse(`${where}: prev does not match the previous record's mac; ${advice}`);
      if (r.count === undefined) events++;
    }
    if (r.count !== undefined) logCheckpoint = { seq: r.seq, head: decoded.mac, count: r.count, ts: r.ts };
    lastSeq = r.seq;
    lastMac = decoded.mac;
  });

  const state: ResumeState = { lastSeq, lastMac, events, exists: true, checkpoint };
  if (checkpoint) {
    if (checkpoint.seq > lastSeq) refuse(`${file} ends at record ${lastSeq} but its checkpoint file confirms ${checkpoint.seq}: the trail was truncated; ${advice}`);
    const logSeq = logCheckpoint?.seq ?? 0;
    if (checkpoint.seq > logSeq) refuse(`record ${checkpoint.seq} of ${file} should be the checkpoint record named by ${cpFile}, but is not; ${advice}`);
    if (checkpoint.seq === logSeq && (checkpoint.head !== logCheckpoint?.head || checkpoint.count !== logCheckpoint.count || checkpoint.ts !== logCheckpoint.ts)) {
      refuse(`checkpoint file ${cpFile} does not match record ${logSeq} of ${file}; ${advice}`);
    }
  }
  if (logCheckpoint && logCheckpoint.seq > (checkpoint?.seq ?? 0)) state.repair = logCheckpoint;
  return state;
}
