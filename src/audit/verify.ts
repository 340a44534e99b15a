/**
 * Verifies an audit trail against its key and checkpoint file, streaming both in step (memory
 * stays flat however long the trail). Reports the first broken link, truncation below the last
 * checkpoint, and the records after it, which no checkpoint confirms yet.
 * @module
 */
import { open } from 'node:fs/promises';
import { CHECKPOINT_EVENT, GENESIS, MAX_LINE_BYTES, checkpointFields, decodeLine, recordFields, type Checkpoint } from './format.js';

/** The outcome of {@link verifyAudit}. */
export interface AuditReport {
  /** No broken link, no truncation, no checkpoint problem. */
  ok: boolean;
  /** Event records verified (the writer's checkpoint records not counted), up to the first broken link. */
  records: number;
  /** Lines in the file. */
  lines: number;
  /** The first line that does not verify or does not link to the one before it (1-based). */
  firstBroken?: { line: number; reason: string };
  /** The last checkpoint of the checkpoint file: `seq` of its checkpoint record, `count` event records before it. */
  checkpoint?: { seq: number; count: number; ts: number };
  /** Event records after the last checkpoint that matched the trail: nothing proves none were cut after them. */
  unconfirmed: number;
  /** Seq range of those records. */
  unconfirmedSeqs?: { first: number; last: number };
  /** The checkpoint file confirms more records than the trail holds. */
  truncated?: boolean;
  /** The checkpoint file is forged, corrupt, out of order, disagrees with the trail, or lacks a checkpoint the trail holds. */
  checkpointProblem?: string;
  /** The checkpoint file read, if any. */
  checkpointFile?: string;
}

interface Line {
  n: number;
  line: Buffer;
  /** False for a last line without a newline, or one over {@link MAX_LINE_BYTES}. */
  complete: boolean;
}

/** The lines of an open file, and a way to close it whether or not they were read. */
interface LineSource {
  lines: AsyncGenerator<Line>;
  close(): Promise<void>;
}

/** Lines of `path` as stored bytes; throws (ENOENT...) at once if it cannot be opened. */
async function openLines(path: string): Promise<LineSource> {
  const fh = await open(path, 'r');
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await fh.close();
  };
  async function* gen(): AsyncGenerator<Line> {
    let n = 0;
    let rest: Buffer = Buffer.alloc(0);
    try {
      for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false }) as AsyncIterable<Buffer>) {
        const data = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
        let start = 0;
        for (let nl = data.indexOf(0x0a); nl >= 0; nl = data.indexOf(0x0a, start)) {
          yield { n: ++n, line: data.subarray(start, nl), complete: true };
          start = nl + 1;
        }
        rest = data.subarray(start);
        if (rest.length > MAX_LINE_BYTES) {
          yield { n: ++n, line: rest, complete: false };
          return;
        }
      }
      if (rest.length > 0) yield { n: ++n, line: rest, complete: false };
    } finally {
      await close();
    }
  }
  return { lines: gen(), close };
}

/** Checks each checkpoint line's mac and order; stops at the first problem. */
class CheckpointReader {
  problem?: string;
  last?: Checkpoint;
  private prevSeq = 0;

  constructor(
    private readonly key: Buffer,
    private readonly lines: AsyncGenerator<Line> | undefined,
  ) {}

  async next(): Promise<{ cp: Checkpoint; n: number } | undefined> {
    if (!this.lines || this.problem) return undefined;
    const it = await this.lines.next();
    if (it.done) return undefined;
    const { n, line, complete } = it.value;
    const decoded = complete ? decodeLine(this.key, line) : { ok: false as const, reason: 'incomplete line' };
    const cp = decoded.ok ? checkpointFields(decoded.obj) : decoded.reason;
    if (typeof cp === 'string') return this.fail(`checkpoint file line ${n}: ${cp}`);
    if (cp.seq <= this.prevSeq) return this.fail(`checkpoint file line ${n}: seq ${cp.seq} does not follow ${this.prevSeq} (lines reordered or replayed)`);
    this.prevSeq = cp.seq;
    this.last = cp;
    return { cp, n };
  }

  private fail(problem: string): undefined {
    this.problem = problem;
    void this.lines?.return(undefined);
    return undefined;
  }
}

/** Why record `seq` at line `n` does not follow the one before it, if it does not. */
function brokenLink(n: number, seq: number, expected: number, prevMatches: boolean): string | undefined {
  if (prevMatches && seq === expected) return undefined;
  if (n === 1) return `the first record is missing (seq ${seq}${prevMatches ? '' : ', prev is not the chain start'})`;
  if (prevMatches) return `seq ${seq} where ${expected} was expected`;
  const where = seq === expected ? '' : `seq ${seq} where ${expected} was expected and `;
  return `${where}prev is not the mac of line ${n - 1}: a record was deleted, inserted or moved here`;
}

/**
 * Verifies `file` with `key`; the checkpoint file defaults to `${file}.checkpoint` (read if
 * present). Throws only when a file cannot be read (a named checkpoint file included).
 * @example const report = await verifyAudit('audit.jsonl', loadAuditKey('audit.key'));
 */
export async function verifyAudit(file: string, key: Buffer, opts: { checkpointFile?: string } = {}): Promise<AuditReport> {
  const log = await openLines(file);
  const cpPath = opts.checkpointFile ?? `${file}.checkpoint`;
  let cp: LineSource | undefined;
  try {
    cp = await openLines(cpPath);
  } catch (err) {
    // Only the default may be absent: a trail written without one, or verified on another host.
    if (opts.checkpointFile !== undefined || (err as NodeJS.ErrnoException).code !== 'ENOENT') {
      await log.close();
      throw err;
    }
  }
  try {
    return await scan(key, log.lines, cp?.lines, cp ? cpPath : undefined);
  } finally {
    // Whether the scan stopped early, failed or read everything.
    await log.lines.return(undefined);
    await log.close();
    await cp?.lines.return(undefined);
    await cp?.close();
  }
}

async function scan(key: Buffer, log: AsyncGenerator<Line>, cpLines: AsyncGenerator<Line> | undefined, checkpointFile: string | undefined): Promise<AuditReport> {
  const cps = new CheckpointReader(key, cpLines);
  const report: AuditReport = { ok: false, records: 0, lines: 0, unconfirmed: 0, checkpointFile };
  let nextCp = await cps.next();
  let prevMac = GENESIS;
  let lastSeq = 0;
  let confirmedSeq = 0;
  // A checkpoint record the checkpoint file lacks: tolerated only as the last one (crash between the two writes).
  let unlisted: { line: number; seq: number } | undefined;
  let problem: string | undefined;

  for await (const { n, line, complete } of log) {
    report.lines = n;
    if (report.firstBroken) continue;
    const broken = (reason: string): void => void (report.firstBroken = { line: n, reason });
    if (!complete) {
      broken(line.length > MAX_LINE_BYTES ? 'line too long' : 'incomplete last line (no newline at the end)');
      continue;
    }
    const decoded = decodeLine(key, line);
    if (!decoded.ok) {
      broken(decoded.reason);
      continue;
    }
    const r = recordFields(decoded.obj);
    if (typeof r === 'string') {
      broken(r);
      continue;
    }
    const linkProblem = brokenLink(n, r.seq, lastSeq + 1, r.prev === prevMac);
    if (linkProblem) {
      broken(linkProblem);
      continue;
    }
    if (r.count !== undefined && r.count !== report.records) {
      // Only a writer holding the key makes such a line: two trails spliced, or a resume bug.
      broken(`checkpoint record counts ${r.count} event records before it, the trail has ${report.records}`);
      continue;
    }
    prevMac = decoded.mac;
    lastSeq = r.seq;
    if (r.event === CHECKPOINT_EVENT) {
      if (unlisted) problem ??= `checkpoint record at line ${unlisted.line} (seq ${unlisted.seq}) is missing from the checkpoint file`;
      unlisted = { line: n, seq: r.seq };
    } else {
      report.records++;
    }
    if (nextCp && nextCp.cp.seq === r.seq) {
      const { cp, n: cpLine } = nextCp;
      const matches = r.event === CHECKPOINT_EVENT && cp.head === decoded.mac && cp.count === r.count && cp.count === report.records && cp.ts === r.ts;
      if (!matches) problem ??= `checkpoint file line ${cpLine} does not match line ${n} of the trail`;
      else {
        confirmedSeq = r.seq;
        report.unconfirmed = 0;
        delete report.unconfirmedSeqs;
        unlisted = undefined;
      }
      nextCp = await cps.next();
    } else if (r.event !== CHECKPOINT_EVENT && confirmedSeq < r.seq) {
      report.unconfirmed++;
      report.unconfirmedSeqs = { first: report.unconfirmedSeqs?.first ?? r.seq, last: r.seq };
    }
  }

  // Read the rest of the checkpoint file: its last line is what truncation is judged against.
  const beyond = nextCp;
  while (nextCp) nextCp = await cps.next();
  if (beyond && !report.firstBroken) report.truncated = true;
  if (cps.last) report.checkpoint = { seq: cps.last.seq, count: cps.last.count, ts: cps.last.ts };
  const cpProblem = cps.problem ?? problem;
  if (cpProblem) report.checkpointProblem = cpProblem;
  report.ok = !report.firstBroken && !report.truncated && !report.checkpointProblem;
  return report;
}
