/**
 * The audit trail writer: {@link AuditLog.record} only queues; a timer (and `flush`, `close`)
 * serializes, chains, appends and fsyncs in batches, so the request path pays for a small copy
 * of the event and nothing else.
 * @module
 */
import { open, type FileHandle } from 'node:fs/promises';
import { AuditSetupError } from './errors.js';
import { CHECKPOINT_EVENT, MAX_LINE_BYTES, OVERFLOW_EVENT, encodeCheckpoint, encodeLine, type Checkpoint } from './format.js';
import { syncDir, writeAll, type Carry } from './io.js';
import { loadAuditKey } from './key.js';
import { checkOptions, type AuditEvent, type AuditOptions } from './options.js';
import { auditTransport, RemoteAuditLog } from './remote.js';
import { resumeState } from './resume.js';
import { sanitizeEvent } from './sanitize.js';

/** What a caller needs to record events: lets the gate hold an AuditLog or nothing. */
export type AuditSink = Pick<AuditLog, 'record'>;

interface Pending {
  seq: number;
  ts: number;
  event: string;
  fields?: Record<string, unknown>;
  /** Checkpoint records only: event records before it, and (once serialized) its mac. */
  count?: number;
  mac?: string;
}

// Serializing a batch is synchronous: keep each slice short so request handlers interleave.
const BATCH = 256;
// Past this many queued records a write starts at once instead of waiting for the timer.
const HIGH_WATER = 8192;

/** An append-only, HMAC-chained audit trail with periodic checkpoints. */
export class AuditLog {
  private readonly queue: Pending[] = [];
  private carry: Carry | undefined;
  private cpCarry: Carry | undefined;
  private cpItem: Pending | undefined;
  /** Records written but not yet fsynced. */
  private unsynced = 0;
  private chain: Promise<void> = Promise.resolve();
  private steps = 0;
  private cpStepQueued = false;
  private nextSeq: number;
  private lastMac: string;
  private events: number;
  private lastCheckpointSeq: number;
  private droppedTotal = 0;
  private lateReported = false;
  private episode: { dropped: number; firstTs: number; lastTs: number } | undefined;
  // closing: final checkpoint, events still accepted; sealed: events refused, last drain; closed: files closed.
  private state: 'open' | 'closing' | 'sealed' | 'closed' = 'open';
  private closing: Promise<void> | undefined;
  private readonly flushTimer: NodeJS.Timeout;
  private readonly cpTimer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly maxQueue: number;

  private constructor(
    private readonly key: Buffer,
    private readonly fh: FileHandle,
    private readonly cpFh: FileHandle,
    private readonly opts: AuditOptions,
    resume: { lastSeq: number; lastMac: string; events: number; checkpointSeq: number },
  ) {
    this.nextSeq = resume.lastSeq + 1;
    this.lastMac = resume.lastMac;
    this.events = resume.events;
    this.lastCheckpointSeq = resume.checkpointSeq;
    const clock = opts.now ?? Date.now;
    // `ts` must be an integer (the verifier insists) and reading it must not throw mid-record:
    // a seq taken without its record would leave a gap that reads as a deleted line.
    this.now = () => {
      try {
        const t = clock();
        if (Number.isFinite(t) && t >= 0) return Math.floor(t);
      } catch {
        // fall through to the system clock
      }
      return Date.now();
    };
    const o = checkOptions(opts);
    this.maxQueue = o.maxQueue;
    // unref: an idle trail must not keep the process alive; close() is what drains.
    this.flushTimer = setInterval(() => this.tick(), o.flushIntervalMs).unref();
    this.cpTimer = setInterval(() => this.scheduleCheckpoint(), o.checkpointIntervalMs).unref();
  }

  /**
   * Opens (or creates, mode 0600) the trail and continues its chain. An existing trail whose tail
   * or last checkpoint does not verify is refused with an {@link AuditSetupError} naming
   * GATE_AUDIT_FILE; a bad key, one naming GATE_AUDIT_KEY_FILE.
   * @example const audit = await AuditLog.open({ file: 'audit.jsonl', keyFile: 'audit.key', onError: (e) => log.error(e) });
   */
  static async open(opts: AuditOptions): Promise<AuditLog> {
    checkOptions(opts);
    // In a cluster worker the primary owns the chain (remote.ts); RemoteAuditLog has this class's used surface.
    const remote = auditTransport();
    if (remote) return new RemoteAuditLog(remote, opts.onError) as unknown as AuditLog;
    const key = loadAuditKey(opts.keyFile);
    const cpFile = opts.checkpointFile ?? `${opts.file}.checkpoint`;
    const resume = await resumeState(opts.file, cpFile, key);
    let fh: FileHandle | undefined;
    let cpFh: FileHandle | undefined;
    try {
      // 'a' is O_APPEND: every write lands at the end, whatever else holds the file open.
      fh = await open(opts.file, 'a', 0o600);
      cpFh = await open(cpFile, 'a', 0o600);
      if (!resume.exists) await syncDir(opts.file);
    } catch (err) {
      await fh?.close();
      await cpFh?.close();
      throw new AuditSetupError('GATE_AUDIT_FILE', `cannot open ${opts.file}: ${(err as Error).message}`, { cause: err });
    }
    const log = new AuditLog(key, fh, cpFh, opts, { ...resume, checkpointSeq: resume.repair?.seq ?? resume.checkpoint?.seq ?? 0 });
    if (resume.repair) {
      try {
        await log.appendCheckpoint(resume.repair);
      } catch (err) {
        await log.abandon();
        throw new AuditSetupError('GATE_AUDIT_FILE', `cannot write checkpoint file ${cpFile}: ${(err as Error).message}`, { cause: err });
      }
    }
    return log;
  }

  /** Records not yet durable (queued, being written, or written and not yet fsynced). */
  get pending(): number {
    return this.queue.length + (this.carry?.records ?? 0) + this.unsynced;
  }

  /** Events refused since open because the queue was full or the log closed. */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** Queues `ev` with the next `seq` and `ts`; synchronous, never throws. */
  record(ev: AuditEvent): void {
    try {
      if (this.state === 'sealed' || this.state === 'closed') return this.dropLate();
      // Keep one slot for the overflow record that must precede the next accepted event.
      if (this.pending + (this.episode ? 1 : 0) >= this.maxQueue) return this.drop();
      this.noteOverflow();
      let fields: Record<string, unknown>;
      let event: string;
      try {
        const s = sanitizeEvent(ev);
        ({ event, fields } = s);
        if (s.problem) this.report(new TypeError(`audit event rewritten as ${event}: ${s.problem}`));
      } catch (err) {
        // A throwing getter or Proxy: the trail still shows that something was recorded.
        event = 'invalid_event';
        fields = { _error: 'event could not be read' };
        this.report(new TypeError(`audit event could not be read: ${(err as Error)?.message ?? String(err)}`));
      }
      this.queue.push({ seq: this.nextSeq++, ts: this.now(), event, fields });
      this.events++;
      if (this.queue.length >= HIGH_WATER && this.steps === 0) this.tick();
    } catch (err) {
      this.report(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Writes every queued record and fsyncs; rejects if the write fails (records stay queued). */
  flush(): Promise<void> {
    return this.run(() => this.drain());
  }

  /** Flushes, writes a final checkpoint and closes the files; idempotent. Rejects (and may be retried) if writing fails. */
  close(): Promise<void> {
    this.closing ??= this.doClose().catch((err: unknown) => {
      this.closing = undefined;
      throw err;
    });
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.state === 'closed') return;
    if (this.state === 'open') this.state = 'closing';
    clearInterval(this.flushTimer);
    clearInterval(this.cpTimer);
    // Events may still arrive while the final checkpoint is written (a request finishing late):
    // one more round covers them, and from then on new ones are refused (counted, reported).
    await this.run(() => this.checkpoint());
    this.state = 'sealed';
    await this.run(() => this.checkpoint());
    this.state = 'closed';
    await this.fh.close();
    await this.cpFh.close();
  }

  /** Stops without writing anything (open() failing half-way). */
  private async abandon(): Promise<void> {
    this.state = 'closed';
    clearInterval(this.flushTimer);
    clearInterval(this.cpTimer);
    await this.fh.close().catch(() => {});
    await this.cpFh.close().catch(() => {});
  }

  /** After close(): a caller bug (a handler outliving shutdown); counted, reported once. */
  private dropLate(): void {
    this.droppedTotal++;
    if (this.lateReported) return;
    this.lateReported = true;
    this.report(new Error('audit log is closed: events recorded after close() are dropped'));
  }

  /** Queue full: counted, reported once per episode, and stated in the chain by noteOverflow. */
  private drop(): void {
    this.droppedTotal++;
    const ts = this.now();
    if (this.episode) {
      this.episode.dropped++;
      this.episode.lastTs = ts;
      return;
    }
    this.episode = { dropped: 1, firstTs: ts, lastTs: ts };
    this.report(new Error(`audit queue full (${this.maxQueue} records): dropping events until the writer catches up; an ${OVERFLOW_EVENT} record will count them`));
  }

  /** Puts the count of dropped events into the chain, so the gap is part of the record. */
  private noteOverflow(): void {
    if (!this.episode) return;
    const { dropped, firstTs, lastTs } = this.episode;
    this.episode = undefined;
    this.queue.push({ seq: this.nextSeq++, ts: this.now(), event: OVERFLOW_EVENT, fields: { dropped, first_ts: firstTs, last_ts: lastTs } });
    this.events++;
  }

  private report(err: Error): void {
    try {
      this.opts.onError?.(err);
    } catch {
      // The error callback failing must not reach the request path.
    }
  }

  /** Runs `step` after every earlier step: one writer, in order. */
  private run(step: () => Promise<void>): Promise<void> {
    this.steps++;
    const p = this.chain.then(step).finally(() => void this.steps--);
    this.chain = p.catch(() => {});
    return p;
  }

  private tick(): void {
    if (this.steps > 0 || this.state === 'closed') return;
    if (this.queue.length === 0 && !this.carry && this.unsynced === 0 && !this.episode) return;
    this.run(() => this.drain()).catch((err: unknown) => this.report(err as Error));
  }

  private scheduleCheckpoint(): void {
    if (this.cpStepQueued || this.state !== 'open') return;
    this.cpStepQueued = true;
    this.run(() => {
      this.cpStepQueued = false;
      return this.checkpoint();
    }).catch((err: unknown) => this.report(err as Error));
  }

  private serialize(items: Pending[]): Carry {
    const parts: string[] = [];
    for (const it of items) {
      const obj = it.event === CHECKPOINT_EVENT ? { seq: it.seq, ts: it.ts, event: it.event, count: it.count } : { seq: it.seq, ts: it.ts, event: it.event, ...it.fields };
      let enc = encodeLine(this.key, { ...obj, prev: this.lastMac });
      if (enc.line.length > MAX_LINE_BYTES / 8) {
        // Within the sanitizer's bounds but still too big: keep the fact, not the payload.
        enc = encodeLine(this.key, { seq: it.seq, ts: it.ts, event: it.event, _oversize: enc.line.length, prev: this.lastMac });
      }
      it.mac = enc.mac;
      this.lastMac = enc.mac;
      parts.push(enc.line);
    }
    return { bytes: Buffer.from(parts.join(''), 'utf8'), offset: 0, records: items.length };
  }

  /** Writes what is queued now (in slices) and fsyncs once at the end. */
  private async drain(): Promise<void> {
    if (this.state === 'closed') return;
    this.noteOverflow();
    // Only records queued before this point: under sustained load, chasing the queue would
    // postpone the fsync (and a checkpoint waiting on it) for as long as the load lasts.
    const last = this.nextSeq - 1;
    for (;;) {
      if (!this.carry) {
        const first = this.queue[0];
        if (!first || first.seq > last) break;
        let n = 1;
        while (n < BATCH && (this.queue[n]?.seq ?? Infinity) <= last) n++;
        this.carry = this.serialize(this.queue.splice(0, n));
      }
      await writeAll(this.fh, this.carry);
      this.unsynced += this.carry.records;
      this.carry = undefined;
    }
    if (this.unsynced > 0) {
      // fdatasync: appended data and the file size, which is all that reading it back needs.
      await this.fh.datasync();
      this.unsynced = 0;
    }
  }

  /** Chains a checkpoint record, makes it durable, then appends the checkpoint line. */
  private async checkpoint(): Promise<void> {
    if (this.state === 'closed') return;
    if (!this.cpItem) {
      if (this.nextSeq - 1 === this.lastCheckpointSeq && !this.episode) return this.drain();
      this.noteOverflow();
      this.cpItem = { seq: this.nextSeq++, ts: this.now(), event: CHECKPOINT_EVENT, count: this.events };
      this.queue.push(this.cpItem);
    }
    await this.drain();
    const it = this.cpItem;
    if (it.mac === undefined || it.count === undefined) throw new Error('audit checkpoint record was not written');
    const cp: Checkpoint = { seq: it.seq, head: it.mac, count: it.count, ts: it.ts };
    await this.appendCheckpoint(cp);
    this.cpItem = undefined;
    this.lastCheckpointSeq = cp.seq;
    try {
      this.opts.onCheckpoint?.(cp);
    } catch (err) {
      this.report(err as Error);
    }
  }

  private async appendCheckpoint(cp: Checkpoint): Promise<void> {
    if (this.cpCarry && this.cpCarry.seq !== cp.seq) {
      // Finish a line cut short by an earlier failure before starting the next one.
      await writeAll(this.cpFh, this.cpCarry);
      this.cpCarry = undefined;
    }
    this.cpCarry ??= { bytes: Buffer.from(encodeCheckpoint(this.key, cp)), offset: 0, records: 0, seq: cp.seq };
    await writeAll(this.cpFh, this.cpCarry);
    this.cpCarry = undefined;
    await this.cpFh.datasync();
  }
}
