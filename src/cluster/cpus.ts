/**
 * How many CPUs `GATE_WORKERS=auto` may use: Node's `os.availableParallelism()` (the CPUs this
 * process may run on), capped by a cgroup CPU quota when one is set, because in a container
 * with a CPU limit the host's CPU count would start far more workers than the quota can run.
 * @module
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** CPUs a cgroup quota allows (rounded up, at least 1), or undefined when none is set or readable. */
export function cgroupCpuLimit(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number | undefined {
  // cgroup v2: "<quota> <period>" or "max <period>".
  try {
    const [quota, period] = read('/sys/fs/cgroup/cpu.max').trim().split(/\s+/);
    if (quota && quota !== 'max' && Number(period) > 0) return Math.max(1, Math.ceil(Number(quota) / Number(period)));
    if (quota === 'max') return undefined;
  } catch {
    // not cgroup v2, or not readable: try v1
  }
  try {
    const quota = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us').trim());
    const period = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us').trim());
    if (quota > 0 && period > 0) return Math.max(1, Math.ceil(quota / period));
  } catch {
    // no quota visible
  }
  return undefined;
}

/** The worker count `auto` stands for: usable CPUs, capped by the cgroup quota. */
export function autoWorkers(): number {
  const cpus = availableParallelism();
  const quota = cgroupCpuLimit();
  return Math.max(1, quota === undefined ? cpus : Math.min(cpus, quota));
}
