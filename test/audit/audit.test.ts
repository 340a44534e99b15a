/**
 * The audit trail on real files: a scripted run verifies; altering, deleting, reordering or
 * cutting lines is detected; reopening continues the chain or refuses a damaged one; SIGTERM
 * during load loses no acknowledged record.
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, AuditSetupError, generateAuditKey, loadAuditKey, verifyAudit, type AuditOptions } from '../../src/audit/index.js';
import { waitFor } from '../helpers/ports.js';
import { createMetrics } from '../../src/metrics/index.js';

let tmp: string;
let keyFile: string;
let key: Buffer;
let base: string;
let fileNo = 0;

const T0 = Date.UTC(2026, 0, 1);

/** A fresh trail path in the temp dir. */
function trailPath(): string {
  return join(tmp, `trail-${++fileNo}.jsonl`);
}

async function openLog(file: string, extra: Partial<AuditOptions> = {}): Promise<AuditLog> {
  let t = T0;
  return AuditLog.open({ file, keyFile, now: () => t++, ...extra });
}

/** Writes `n` events the way the gate does (refusals with their instance id, issued tokens), then closes. */
async function scripted(file: string, n: number, from = 1): Promise<void> {
  const log = await openLog(file);
  for (let i = from; i < from + n; i++) {
    if (i % 3 === 0) log.record({ event: 'refusal', refusal_id: `R${i}`, code: 'proof_invalid', status: 403, agent_id: `urn:agent:bot-${i % 5}`, thumbprint: 'x'.repeat(43) });
    else log.record({ event: 'token_issued', jti: `J${i}`, agent_id: `urn:agent:bot-${i % 5}`, thumbprint: 'y'.repeat(43) });
  }
  await log.close();
}

/** The trail's lines as stored bytes (the final newline's empty tail dropped). */
async function lines(file: string): Promise<Buffer[]> {
  const buf = await readFile(file);
  const out: Buffer[] = [];
  let start = 0;
  for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, start)) {
    out.push(buf.subarray(start, nl));
    start = nl + 1;
  }
  return out;
}

async function writeLines(file: string, ls: Buffer[]): Promise<void> {
  await writeFile(file, Buffer.concat(ls.flatMap((l) => [l, Buffer.from('\n')])));
}

/** A copy of the base trail (and its checkpoint file) to damage. */
async function copyOfBase(): Promise<string> {
  const file = trailPath();
  await copyFile(base, file);
  await copyFile(`${base}.checkpoint`, `${file}.checkpoint`);
  return file;
}

function parsed(ls: Buffer[]): Record<string, unknown>[] {
  return ls.map((l) => JSON.parse(l.toString('utf8')) as Record<string, unknown>);
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'agent-gate-audit-'));
  keyFile = join(tmp, 'audit.key');
  await writeFile(keyFile, generateAuditKey() + '\n', { mode: 0o600 });
  key = loadAuditKey(keyFile);
  base = trailPath();
  await scripted(base, 1000);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('a scripted run', () => {
  it('verifies: 1000 records, all confirmed by the final checkpoint', async () => {
    const r = await verifyAudit(base, key);
    expect(r).toMatchObject({ ok: true, records: 1000, lines: 1001, unconfirmed: 0, checkpoint: { seq: 1001, count: 1000 } });
    expect(r.firstBroken).toBeUndefined();
    expect(r.truncated).toBeUndefined();
    expect((await stat(base)).mode & 0o777).toBe(0o600);
    expect((await stat(`${base}.checkpoint`)).mode & 0o777).toBe(0o600);
  });

  it('stores one chained line per record, and every refusal id is findable', async () => {
    const recs = parsed(await lines(base));
    expect(recs[0]).toMatchObject({ seq: 1, ts: T0, event: 'token_issued', jti: 'J1', prev: '0'.repeat(64) });
    expect(Object.keys(recs[0] ?? {})).toEqual(['seq', 'ts', 'event', 'jti', 'agent_id', 'thumbprint', 'prev', 'mac']);
    for (let i = 1; i < recs.length; i++) expect(recs[i]?.prev).toBe(recs[i - 1]?.mac);
    expect(recs.at(-1)).toMatchObject({ seq: 1001, event: 'audit.checkpoint', count: 1000 });
    const text = await readFile(base, 'utf8');
    for (let i = 3; i <= 1000; i += 3) expect(text).toContain(`"refusal_id":"R${i}"`);
  });
});

describe('tampering', () => {
  it('flipping one byte anywhere in a record line breaks that line', async () => {
    const orig = await lines(base);
    const line = 500;
    const len = orig[line - 1]?.length ?? 0;
    // Field values, keys, seq, prev, the mac itself, and the newline ending the line.
    for (const pos of [1, 9, 40, Math.floor(len / 2), len - 80, len - 10, len]) {
      const file = await copyOfBase();
      const buf = await readFile(file);
      const offset = orig.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0) + pos;
      buf[offset] = (buf[offset] ?? 0) ^ 0x01;
      await writeFile(file, buf);
      const r = await verifyAudit(file, key);
      expect(r.ok, `byte ${pos}`).toBe(false);
      expect(r.firstBroken?.line, `byte ${pos}`).toBe(line);
    }
  });

  it('deleting a middle line breaks the link at the line that follows it', async () => {
    const file = await copyOfBase();
    const ls = await lines(file);
    ls.splice(499, 1);
    await writeLines(file, ls);
    const r = await verifyAudit(file, key);
    expect(r.ok).toBe(false);
    expect(r.firstBroken?.line).toBe(500);
    expect(r.firstBroken?.reason).toMatch(/seq 501 where 500 was expected and prev is not the mac of line 499/);
    expect(r.records).toBe(499);
  });

  it('deleting the first line is detected', async () => {
    const file = await copyOfBase();
    await writeLines(file, (await lines(file)).slice(1));
    const r = await verifyAudit(file, key);
    expect(r.firstBroken).toEqual({ line: 1, reason: expect.stringMatching(/first record is missing/) as unknown });
  });

  it('reordering two lines is detected, adjacent or not', async () => {
    for (const [a, b] of [
      [300, 301],
      [200, 700],
    ] as const) {
      const file = await copyOfBase();
      const ls = await lines(file);
      [ls[a - 1], ls[b - 1]] = [ls[b - 1] ?? Buffer.alloc(0), ls[a - 1] ?? Buffer.alloc(0)];
      await writeLines(file, ls);
      const r = await verifyAudit(file, key);
      expect(r.ok).toBe(false);
      expect(r.firstBroken?.line).toBe(a);
    }
  });

  it('deleting the last N lines is detected through the checkpoint', async () => {
    for (const n of [1, 2, 50]) {
      const file = await copyOfBase();
      const ls = await lines(file);
      await writeLines(file, ls.slice(0, -n));
      const r = await verifyAudit(file, key);
      expect(r).toMatchObject({ ok: false, truncated: true, lines: 1001 - n });
      expect(r.firstBroken).toBeUndefined();
    }
  });

  it('a cut through the last line is detected', async () => {
    const file = await copyOfBase();
    const buf = await readFile(file);
    await writeFile(file, buf.subarray(0, buf.length - 30));
    const r = await verifyAudit(file, key);
    expect(r.firstBroken).toEqual({ line: 1001, reason: expect.stringMatching(/incomplete last line/) as unknown });
  });

  it('a forged or edited checkpoint is detected', async () => {
    // Edited: the count raised by one, the mac left as it was.
    const edited = await copyOfBase();
    const cp = await readFile(`${edited}.checkpoint`, 'utf8');
    await writeFile(`${edited}.checkpoint`, cp.replace('"count":1000', '"count":1001'));
    const r1 = await verifyAudit(edited, key);
    expect(r1.ok).toBe(false);
    expect(r1.checkpointProblem).toMatch(/line 1: mac does not verify/);

    // Forged to hide a truncation: a checkpoint for the shortened trail, made with another key.
    const forged = await copyOfBase();
    const ls = await lines(forged);
    await writeLines(forged, ls.slice(0, 900));
    const last = JSON.parse(ls[899]?.toString() ?? '{}') as { seq: number; mac: string; ts: number };
    const body = JSON.stringify({ seq: last.seq, head: last.mac, count: 900, ts: last.ts });
    const mac = createHmac('sha256', Buffer.alloc(32, 7)).update(body).digest('hex');
    await writeFile(`${forged}.checkpoint`, `${body.slice(0, -1)},"mac":"${mac}"}\n`);
    const r2 = await verifyAudit(forged, key);
    expect(r2.ok).toBe(false);
    expect(r2.checkpointProblem).toMatch(/mac does not verify/);
  });

  it('a checkpoint file that lacks earlier checkpoints of the trail is detected', async () => {
    const file = trailPath();
    await scripted(file, 5);
    await scripted(file, 5, 6);
    const cpLines = (await readFile(`${file}.checkpoint`, 'utf8')).split('\n');
    expect(cpLines).toHaveLength(3);
    await writeFile(`${file}.checkpoint`, cpLines[1] + '\n');
    const r = await verifyAudit(file, key);
    expect(r.ok).toBe(false);
    expect(r.checkpointProblem).toMatch(/checkpoint record at line 6 \(seq 6\) is missing from the checkpoint file/);
  });

  it('another key fails at the first line', async () => {
    const r = await verifyAudit(base, Buffer.alloc(32, 1));
    expect(r.firstBroken).toEqual({ line: 1, reason: expect.stringMatching(/mac does not verify/) as unknown });
  });
});

describe('reopening', () => {
  it('continues the chain across a restart', async () => {
    const file = trailPath();
    await scripted(file, 10);
    await scripted(file, 10, 11);
    const ls = parsed(await lines(file));
    expect(ls).toHaveLength(22);
    expect(ls[11]).toMatchObject({ seq: 12, jti: 'J11', prev: ls[10]?.mac });
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 20, unconfirmed: 0, checkpoint: { seq: 22, count: 20 } });
  });

  it('reports records after the last checkpoint as unconfirmed until the next one', async () => {
    const file = trailPath();
    await scripted(file, 5);
    const log = await openLog(file);
    for (let i = 0; i < 4; i++) log.record({ event: 'token_issued', jti: `late-${i}` });
    await log.flush();
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 9, unconfirmed: 4, unconfirmedSeqs: { first: 7, last: 10 } });
    await log.close();
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 9, unconfirmed: 0 });
  });

  it('after a crash between the two checkpoint writes, reopening completes the checkpoint file', async () => {
    const file = trailPath();
    await scripted(file, 5);
    await scripted(file, 5, 6);
    const cp = (await readFile(`${file}.checkpoint`, 'utf8')).split('\n');
    await writeFile(`${file}.checkpoint`, cp[0] + '\n');
    // Tolerated: only the last checkpoint record may be missing from the checkpoint file.
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, unconfirmed: 5 });
    await (await openLog(file)).close();
    expect(await readFile(`${file}.checkpoint`, 'utf8')).toBe(cp.join('\n'));
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 10, unconfirmed: 0 });
  });

  it('after a crash (no close), the next writer continues from the records past the last checkpoint', async () => {
    const file = trailPath();
    await scripted(file, 5);
    // The crashed writer: flushed, never closed, its timers too slow to fire during the test.
    const crashed = await openLog(file, { flushIntervalMs: 2 ** 31 - 1, checkpointIntervalMs: 2 ** 31 - 1 });
    for (let i = 0; i < 4; i++) crashed.record({ event: 'token_issued', jti: `before-crash-${i}` });
    await crashed.flush();
    // A real clock with a fractional part: stored as whole milliseconds.
    const log = await openLog(file, { now: () => performance.timeOrigin + performance.now() });
    log.record({ event: 'token_issued', jti: 'after-restart' });
    await log.close();
    const recs = parsed(await lines(file));
    expect(recs.slice(-2)).toMatchObject([
      { seq: 11, jti: 'after-restart', prev: recs[9]?.mac },
      { seq: 12, event: 'audit.checkpoint', count: 10 },
    ]);
    expect(Number.isInteger(recs[10]?.ts)).toBe(true);
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 10, unconfirmed: 0 });
  });

  it('rejects options out of range before touching any file', async () => {
    const file = trailPath();
    await expect(openLog(file, { flushIntervalMs: 0 })).rejects.toThrow(TypeError);
    await expect(openLog(file, { checkpointIntervalMs: 2 ** 31 })).rejects.toThrow(/checkpointIntervalMs must be an integer from 1 to 2147483647/);
    await expect(openLog(file, { maxQueue: 1.5 })).rejects.toThrow(/maxQueue/);
    expect(existsSync(file)).toBe(false);
  });

  it('refuses a trail whose tail does not verify, naming GATE_AUDIT_FILE', async () => {
    const cases: Record<string, (file: string) => Promise<void>> = {
      'a flipped byte in the last record': async (file) => {
        const ls = await lines(file);
        const last = Buffer.from(ls[999] ?? '');
        last[20] = (last[20] ?? 0) ^ 0x01;
        ls[999] = last;
        await writeLines(file, ls.slice(0, 1000));
      },
      'a cut through the last line': async (file) => {
        const buf = await readFile(file);
        await writeFile(file, buf.subarray(0, buf.length - 10));
      },
      'lines removed below the checkpoint': async (file) => writeLines(file, (await lines(file)).slice(0, 990)),
      'the trail removed, its checkpoint file left': async (file) => rm(file),
    };
    for (const [what, damage] of Object.entries(cases)) {
      const file = await copyOfBase();
      await damage(file);
      const err = await openLog(file).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(AuditSetupError);
      expect((err as AuditSetupError).variable).toBe('GATE_AUDIT_FILE');
      expect((err as Error).message, what).toMatch(/^GATE_AUDIT_FILE: /);
    }
  });

  it('refuses a trail written with another key', async () => {
    const otherKey = join(tmp, 'other.key');
    await writeFile(otherKey, generateAuditKey());
    await expect(AuditLog.open({ file: base, keyFile: otherKey })).rejects.toThrow(/^GATE_AUDIT_FILE: .*mac does not verify/);
  });
});

describe('keys', () => {
  it('loadAuditKey names GATE_AUDIT_KEY_FILE and the problem', async () => {
    const cases: [string, string | undefined, RegExp][] = [
      ['missing', undefined, /cannot read .*ENOENT/],
      ['empty', '\n', /is empty/],
      ['not base64', 'not base64 at all!', /must hold one base64 value/],
      ['short', Buffer.alloc(16, 1).toString('base64'), /holds 16 bytes; at least 32/],
    ];
    for (const [name, content, why] of cases) {
      const path = join(tmp, `key-${name.replace(/ /g, '-')}`);
      if (content !== undefined) await writeFile(path, content);
      let err: unknown;
      try {
        loadAuditKey(path);
      } catch (e) {
        err = e;
      }
      expect(err, name).toBeInstanceOf(AuditSetupError);
      expect((err as AuditSetupError).variable).toBe('GATE_AUDIT_KEY_FILE');
      expect((err as Error).message, name).toMatch(why);
    }
    expect(loadAuditKey(keyFile)).toHaveLength(32);
  });
});

describe('recording', () => {
  it('bounds and rewrites events instead of failing, and never throws', async () => {
    const file = trailPath();
    const errors: Error[] = [];
    const log = await openLog(file, { onError: (e) => errors.push(e) });
    const circular: Record<string, unknown> = { a: 1 };
    circular.self = circular;
    const throwing = {
      event: 'odd',
      get boom(): never {
        throw new Error('getter');
      },
    };
    log.record({ event: 'refusal', refusal_id: 'R1', detail: 'z'.repeat(5000), seq: 99, mac: 'forged', n: 10n, nan: NaN, when: new Date(T0), cert: Buffer.alloc(900), circular });
    log.record({ event: 'audit.checkpoint', count: 3, ...JSON.parse('{"__proto__":{"polluted":true}}') });
    log.record({ event: 42 } as unknown as { event: string });
    expect(() => log.record(throwing)).not.toThrow();
    await log.close();
    const recs = parsed(await lines(file));
    expect(recs[0]).toMatchObject({ event: 'refusal', refusal_id: 'R1', _seq: 99, _mac: 'forged', n: '10', nan: 'NaN', when: new Date(T0).toISOString(), cert: '[binary 900 bytes]' });
    expect(recs[0]?.seq).toBe(1);
    expect(String(recs[0]?.detail)).toMatch(/^z{1024}…\(\+3976 chars\)$/);
    expect(recs[1]).toMatchObject({ event: 'invalid_event', _event: 'audit.checkpoint', count: 3 });
    expect(Object.keys(recs[1] ?? {})).toContain('__proto__');
    expect(recs[2]).toMatchObject({ event: 'invalid_event', _event: 42 });
    expect(recs[3]).toMatchObject({ event: 'invalid_event', _error: 'event could not be read' });
    expect(errors).toHaveLength(3);
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 4 });
  });

  it('a full queue drops events, counts and reports them, and says so in the chain', async () => {
    const file = trailPath();
    const errors: Error[] = [];
    const log = await openLog(file, { maxQueue: 10, onError: (e) => errors.push(e) });
    for (let i = 1; i <= 25; i++) log.record({ event: 'token_issued', jti: `J${i}` });
    expect(log.dropped).toBe(15);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toMatch(/audit queue full/);
    await log.flush();
    log.record({ event: 'token_issued', jti: 'after' });
    await log.close();
    const recs = parsed(await lines(file));
    expect(recs[10]).toMatchObject({ seq: 11, event: 'audit.overflow', dropped: 15 });
    expect(recs[11]).toMatchObject({ seq: 12, jti: 'after' });
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 12, unconfirmed: 0 });
  });

  it('flush makes queued records durable; close is idempotent; later events are counted as dropped', async () => {
    const file = trailPath();
    const errors: Error[] = [];
    const log = await openLog(file, { flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
    log.record({ event: 'token_issued', jti: 'a' });
    log.record({ event: 'token_issued', jti: 'b' });
    expect(log.pending).toBe(2);
    await log.flush();
    expect(log.pending).toBe(0);
    expect(await lines(file)).toHaveLength(2);
    await Promise.all([log.close(), log.close()]);
    await log.close();
    log.record({ event: 'token_issued', jti: 'late' });
    log.record({ event: 'token_issued', jti: 'later' });
    expect(log.dropped).toBe(2);
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/closed/)]);
    expect(await lines(file)).toHaveLength(3);
  });

  it('writes on the flush interval and checkpoints on the checkpoint interval without being asked', async () => {
    const file = trailPath();
    const cps: { seq: number; count: number }[] = [];
    const log = await openLog(file, { flushIntervalMs: 10, checkpointIntervalMs: 30, onCheckpoint: (cp) => cps.push(cp) });
    log.record({ event: 'token_issued', jti: 'a' });
    await waitFor(async () => (await lines(file)).length >= 1, 5000, 'the timed flush');
    await waitFor(() => cps.length >= 1, 5000, 'the timed checkpoint');
    expect(cps[0]).toMatchObject({ seq: 2, count: 1 });
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 1, unconfirmed: 0 });
    await log.close();
    // Nothing new since the last checkpoint: close adds none.
    expect(cps).toHaveLength(1);
  });

  it.runIf(existsSync('/dev/full'))('a failing write keeps the records queued and reports the error', async () => {
    const errors: Error[] = [];
    // /dev/full: every write fails with ENOSPC, like a full disk.
    const log = await openLog('/dev/full', { checkpointFile: trailPath(), flushIntervalMs: 10, onError: (e) => errors.push(e) });
    log.record({ event: 'token_issued', jti: 'a' });
    log.record({ event: 'token_issued', jti: 'b' });
    await expect(log.flush()).rejects.toThrow(/ENOSPC/);
    expect(log.pending).toBe(2);
    await waitFor(() => errors.length > 0, 5000, 'the timed flush to report its failure');
    expect(errors[0]?.message).toMatch(/ENOSPC/);
    await expect(log.close()).rejects.toThrow(/ENOSPC/);
    // The two records and the final checkpoint record, kept for a retried close().
    expect(log.pending).toBe(3);
  });

  it.runIf(existsSync('/dev/full'))('the gate metrics report an unwritable trail: its backlog, then every dropped event', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const scrape = async () => {
      const text = await metrics.registry.metrics();
      const value = (name: string) => Number(new RegExp(`^agent_gate_${name} (\\S+)$`, 'm').exec(text)?.[1]);
      return { pending: value('audit_pending_records'), dropped: value('audit_dropped_total') };
    };
    // Exported at 0 before any trail is watched (no trail configured).
    expect(await scrape()).toEqual({ pending: 0, dropped: 0 });
    const log = await openLog('/dev/full', { checkpointFile: trailPath(), maxQueue: 10, flushIntervalMs: 10, onError: () => {} });
    metrics.watchAudit(log);
    for (let i = 0; i < 4; i++) log.record({ event: 'token_issued', jti: `j${i}` });
    await expect(log.flush()).rejects.toThrow(/ENOSPC/);
    expect(await scrape()).toEqual({ pending: 4, dropped: 0 });
    // The queue holds 10: 6 more are taken, the next 5 dropped.
    for (let i = 4; i < 15; i++) log.record({ event: 'token_issued', jti: `j${i}` });
    expect(await scrape()).toEqual({ pending: 10, dropped: 5 });
    expect(log.dropped).toBe(5);
    await expect(log.close()).rejects.toThrow(/ENOSPC/);
  });

  it('record() of 100k events takes well under a second or two in total', async () => {
    const file = trailPath();
    const log = await openLog(file);
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) log.record({ event: 'refusal', refusal_id: `R${i}`, code: 'token_invalid', status: 401, agent_id: 'urn:agent:bot', thumbprint: 'abc' });
    const elapsed = performance.now() - t0;
    expect(elapsed).toBeLessThan(2000);
    expect(log.dropped).toBe(0);
    await log.close();
    expect(await verifyAudit(file, key)).toMatchObject({ ok: true, records: 100_000, unconfirmed: 0 });
  });
});

describe('shutdown', () => {
  it('SIGTERM during load loses no acknowledged record', async () => {
    const file = trailPath();
    const child = spawn(process.execPath, ['--import', 'tsx', join('test', 'audit', 'fixtures', 'load.ts'), file, keyFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      // Past a few timed flushes and checkpoints, so the kill lands mid-batch.
      await waitFor(() => stdout.length > 200_000, 30_000, `acknowledged records (stderr: ${stderr})`);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    const acked = stdout.slice(0, stdout.lastIndexOf('\n')).split('\n').map(Number);
    expect(acked.length).toBeGreaterThan(10_000);
    const stored = new Set(parsed(await lines(file)).flatMap((r) => (r.event === 'load' ? [r.n as number] : [])));
    const lost = acked.filter((n) => !stored.has(n));
    expect(lost).toEqual([]);
    const report = await verifyAudit(file, key);
    expect(report).toMatchObject({ ok: true, unconfirmed: 0 });
    expect(report.records).toBeGreaterThanOrEqual(acked.length);
    expect(stderr).toMatch(/closed after \d+ records, 0 dropped/);
  });
});
