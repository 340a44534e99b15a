/**
 * Child processes of the benchmark: every one is registered here and killed when the
 * orchestrator exits for any reason (normal end, exception, Ctrl-C), so a failed run never
 * leaves a gate, nginx or redis-server behind. Also: free loopback ports, readiness polling
 * and per-process CPU and peak-RSS readings from /proc.
 * @module
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';

const children = new Set<ChildProcess>();
/** Processes we did not spawn directly but started (nginx workers): killed at exit too. */
const extraPids = new Set<number>();

let installed = false;
function installExitHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`);
      process.exit(130);
    });
  }
}

/** Synchronous: SIGKILL every registered child and extra pid (safe in an 'exit' handler). */
export function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const pid of extraPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  extraPids.clear();
}

/** Registers a child so it is killed at exit. */
export function track<T extends ChildProcess>(child: T): T {
  installExitHandlers();
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Registers a pid we did not spawn ourselves (nginx workers). */
export function trackPid(pid: number): void {
  installExitHandlers();
  extraPids.add(pid);
}

/** spawn + track. */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  return track(spawn(cmd, args, opts));
}

/** Stops a child: `signal`, then SIGKILL after `graceMs`; resolves with its exit code. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill(signal);
  });
}

/** Free ports and bounded polling: the test helpers' own, so both behave the same. */
export { freePort, GiveUp, waitFor } from '../../test/helpers/ports.js';

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.setTimeout(500, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export { redisPing } from '../../test/helpers/redis.js';

// ---- /proc readings ----

/** CPU seconds of each named group of pids, and the readings to diff. */
export type CpuGroups = Record<string, number[]>;
export type CpuReading = Record<string, number>;
/** Key of the machine-wide busy time in a {@link CpuReading}. */
export const MACHINE = '__machine';

const CLK_TCK = 100; // USER_HZ on Linux (getconf CLK_TCK); /proc times are in these ticks.

/** User + system CPU seconds of a process (all its threads), or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may contain spaces: split after its closing parenthesis.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/** Busy CPU seconds of the whole machine (all cores, everything but idle and iowait) from /proc/stat. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal guest guest_nice
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
  return busy / CLK_TCK;
}

/** A numeric field of /proc/<pid>/status (its first number), NaN when unknown or the process is gone. */
function statusNumber(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** A field of /proc/<pid>/status in kB (VmHWM = peak RSS, VmRSS = current), NaN when unknown. */
export function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  return statusNumber(pid, field);
}

/**
 * Times a process went to sleep of its own accord (`voluntary_ctxt_switches` of
 * /proc/<pid>/status, main thread): for an event loop, how often it ran out of work and waited
 * in epoll. NaN when the process is gone.
 */
export function voluntarySwitches(pid: number): number {
  return statusNumber(pid, 'voluntary_ctxt_switches');
}

/** Pids whose parent is `ppid` (nginx workers of a master). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === ppid) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Foreign CPU load (cores) below which the machine counts as quiet. */
export const QUIET_CORES = 0.25;
/** At most this long waiting for quiet over a whole run. */
export const QUIET_TOTAL_MS = 45_000;
let waitedTotalMs = 0;
/** Milliseconds {@link waitQuiet} has waited so far. */
export function quietWaitedMs(): number {
  return waitedTotalMs;
}
/**
 * Waits (at most `maxMs`, and at most QUIET_TOTAL_MS over the whole run) until processes
 * outside the benchmark use less than QUIET_CORES of CPU: the machine may be shared, and a
 * compile or test run next door would skew a window. Returns the foreign load last seen.
 */
export async function waitQuiet(ourPids: () => number[], maxMs: number): Promise<number> {
  const startedAt = performance.now();
  for (;;) {
    const pids = ourPids();
    const m0 = machineBusySeconds();
    const o0 = pids.reduce((s, p) => s + (cpuSeconds(p) || 0), 0);
    await new Promise((r) => setTimeout(r, 500));
    const other = Math.max(0, (machineBusySeconds() - m0 - (pids.reduce((s, p) => s + (cpuSeconds(p) || 0), 0) - o0)) / 0.5);
    const waited = performance.now() - startedAt;
    if (other < QUIET_CORES || waited >= maxMs || waitedTotalMs + waited >= QUIET_TOTAL_MS) {
      waitedTotalMs += waited;
      return Math.round(other * 100) / 100;
    }
  }
}
