/**
 * `npm run bench -- --workers`: one gate process (`GATE_WORKERS=1`) beside a gate of two worker
 * processes (`GATE_WORKERS=2`, same Redis, same upstream), rounds interleaved, short enough for a
 * shared 2-core machine (about 2 minutes after both gates have been warmed): gated keep-alive requests (req/s, p99, gate CPU per
 * request summed over primary and workers, and the voluntary context switches of the gate
 * processes' main threads per request at one open-loop rate, and the one-worker gate at half that
 * rate, each of the two workers' share), full flows/s over new mTLS connections, and the
 * open-loop window (`/v1/token` p99 seen by the probe, and on-time share) at 70 % of the one-worker gate's maximum
 * flow rate for both gates, plus peak RSS per process. Prints the rows and writes
 * `load/results/<date>-workers.json`. `--runs=N` rounds (2), `--warm=S` seconds of unmeasured
 * requests per worker first (4).
 * @module
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningJwk } from '../../src/tokens/index.js';
import type { Job } from './jobs.js';
import { childPids, statusKb, voluntarySwitches } from './procs.js';
import { addProbeCounts, fmt, medianMetrics, type RunRecord } from './report.js';
import { median } from './stats.js';
import { type CpuGroups, gateEnv, openFlowJob, probeSplit, PROBE_TEXT, ROOT, startBase, type StartedGate, startGate, startLoadgen } from './setup.js';

const PREFIX = '/.agent-gate';
const GATED_PATH = '/api/items/42?view=full';

/** Operations a window completed (flows on time for the open loop), at least 1: the divisor of every per-operation row. */
function opsOf(r: RunRecord): number {
  return Math.max(1, r.result.kind === 'flow-open' ? r.result.ok : r.result.completed);
}

export async function workersMain(args: string[]): Promise<void> {
  const runs = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 2);
  const win = { warm: 500, ka: 2000, flow: 2000, open: 3000 };
  const warmMs = Number(args.find((a) => a.startsWith('--warm='))?.slice('--warm='.length) ?? 4) * 1000;
  const t0 = performance.now();
  const log = (s: string) => process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${s}\n`);
  const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('bench-workers');
  const env = gateEnv(pki, redisUrl, upstreamUrl, { GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()) });
  const w1 = await startGate('gate-w1', work, { ...env, GATE_WORKERS: '1' });
  const w2 = await startGate('gate-w2', work, { ...env, GATE_WORKERS: '2' });
  const w2pids = () => [w2.pid, ...childPids(w2.pid)];
  const lg = await startLoadgen(pki.clientTls);
  const probe = await startLoadgen(pki.clientTls);
  const origin = (g: StartedGate) => `https://127.0.0.1:${g.port}`;
  const base = { upstream: upstream.pids, redis: redis.pids, loadgen: [lg.pid, probe.pid] };
  const groups: Record<string, CpuGroups> = { w1: { gate: [w1.pid], ...base }, w2: { gate: w2pids(), ...base } };
  const all: Record<string, RunRecord[]> = {};
  /** Per key, the gate processes' voluntary sleeps per completed operation in each window. */
  const sleeps: Record<string, number[]> = {};
  /** One measurement; `probeJob`, if any, runs on the probe in the same window (its record under `key.probe`). */
  const record = async (key: string, job: Job, g: CpuGroups, probeJob?: Job) => {
    const gatePids = g.gate ?? [];
    const switches = () => gatePids.reduce((s, pid) => s + voluntarySwitches(pid), 0);
    let atStart = Number.NaN;
    let atEnd = Number.NaN;
    const onMark = (phase: 'start' | 'end') => {
      if (phase === 'start') atStart = switches();
      else atEnd = switches();
    };
    const [r, p] = await Promise.all([lg.run(job, g, onMark), probeJob ? probe.run(probeJob, {}) : undefined]);
    (sleeps[key] ??= []).push((atEnd - atStart) / opsOf(r));
    (all[key] ??= []).push(r);
    if (p) (all[`${key}.probe`] ??= []).push(p);
    addProbeCounts(r, p);
    const res = r.result;
    const summary =
      res.kind === 'keepalive'
        ? `${fmt(res.rps)} rps p99 ${res.latency.p99} ms`
        : res.kind === 'flow'
          ? `${fmt(res.rate, 1)} flows/s token p99 ${res.token.p99} ms`
          : `target ${res.targetRate}/s, on time ${res.onTime}/${res.scheduled}, token p99 ${res.token.p99} ms`;
    log(`${key.padEnd(10)} ${summary}, gate CPU ${fmt(r.cpuSeconds.gate ?? 0, 2)} s, errors ${'errors' in res ? res.errors : res.failed}`);
  };
  const ka = (g: StartedGate, rate?: number): Job => ({ kind: 'keepalive', origin: origin(g), path: GATED_PATH, connections: 32, warmupMs: win.warm, durationMs: win.ka, tokenPrefix: PREFIX, ...(rate ? { rate } : {}) });
  const flow = (g: StartedGate): Job => ({ kind: 'flow', mode: 'gate', origin: origin(g), prefix: PREFIX, concurrency: 16, warmupMs: win.warm, durationMs: win.flow });
  const open = (g: StartedGate, rate: number): Job => openFlowJob(origin(g), rate, { warmupMs: win.warm, durationMs: win.open });
  // Both gates first carry the same closed-loop traffic per worker, unmeasured: two workers each
  // see half the requests of a window, so without this their first rounds would still include
  // V8 optimising the hot path, which a long-running gate does not pay. (It was not what makes two
  // workers cost more per request at one rate: load/RESULTS.md, 2026-12-08.)
  for (const [g, n] of [[w1, 1], [w2, 2]] as const) {
    await lg.run({ ...ka(g), warmupMs: 0, durationMs: warmMs * n }, {});
    await lg.run({ ...flow(g), warmupMs: 0, durationMs: (warmMs / 2) * n }, {});
  }
  log(`warmed both gates (${warmMs / 1000} s of requests and ${warmMs / 2000} s of flows per worker)`);
  for (let i = 0; i < runs; i++) {
    await record('ka.w1', ka(w1), groups.w1!);
    await record('ka.w2', ka(w2), groups.w2!);
    await record('flow.w1', flow(w1), groups.w1!);
    await record('flow.w2', flow(w2), groups.w2!);
  }
  const rate70 = Math.max(2, Math.round((medianMetrics(all['flow.w1'] ?? []).rate ?? 0) * 0.7));
  const split70 = probeSplit(rate70);
  // The same gated requests at one offered rate both gates carry (half the 1-worker maximum):
  // CPU per request without the oversubscription of a closed loop, where 2 workers, the
  // primary, the upstream and the load generator fight for 2 cores and every context switch
  // counts as gate CPU.
  const kaRate = Math.max(100, Math.round((medianMetrics(all['ka.w1'] ?? []).rps ?? 0) * 0.5));
  // Each of the two workers' share of kaRate.
  const half = Math.round(kaRate / 2);
  for (let i = 0; i < runs; i++) {
    await record('open.w1', open(w1, split70.main), groups.w1!, open(w1, split70.probe));
    await record('open.w2', open(w2, split70.main), groups.w2!, open(w2, split70.probe));
    await record('kaopen.w1', ka(w1, kaRate), groups.w1!);
    await record('kaopen.w2', ka(w2, kaRate), groups.w2!);
    await record('kaquarter.w1', ka(w1, half), groups.w1!);
  }
  const m = (k: string) => medianMetrics(all[k] ?? []);
  // Gate CPU (the gate group alone: primary + workers) per completed operation, µs, median over rounds.
  const cpuPer = (k: string, group = 'gate') => Math.round(median((all[k] ?? []).map((r) => ((r.cpuSeconds[group] ?? 0) / opsOf(r)) * 1e6)));
  const sleepsPer = (k: string) => median(sleeps[k] ?? []);
  const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : NaN);
  const mb = (kb: number) => Math.round(kb / 102.4) / 10;
  const rss = { w1: mb(statusKb(w1.pid, 'VmHWM')), w2Primary: mb(statusKb(w2.pid, 'VmHWM')), w2Workers: childPids(w2.pid).map((p) => mb(statusKb(p, 'VmHWM'))) };
  const rows = [
    ['gated keep-alive req/s (32 conns)', fmt(m('ka.w1').rps), fmt(m('ka.w2').rps), ratio(m('ka.w2').rps!, m('ka.w1').rps!), 'as measured'],
    ['gated keep-alive p99', `${m('ka.w1').p99} ms`, `${m('ka.w2').p99} ms`, ratio(m('ka.w2').p99!, m('ka.w1').p99!), '–'],
    ['gate CPU per gated request (primary + workers), closed loop', `${cpuPer('ka.w1')} µs`, `${cpuPer('ka.w2')} µs`, ratio(cpuPer('ka.w2'), cpuPer('ka.w1')), '(≤ 1.1)'],
    [`gate CPU per gated request (primary + workers), open loop at ${kaRate} req/s each`, `${cpuPer('kaopen.w1')} µs`, `${cpuPer('kaopen.w2')} µs`, ratio(cpuPer('kaopen.w2'), cpuPer('kaopen.w1')), '≤ 1.1'],
    // What goes with two workers' extra CPU per request at the same rate: each has half the
    // work, so its loop runs dry and sleeps in epoll more often (load/RESULTS.md, workers).
    [`the gate's sleeps (voluntary context switches of its processes' main threads) per gated request, same open loop`, sleepsPer('kaopen.w1').toFixed(2), sleepsPer('kaopen.w2').toFixed(2), ratio(sleepsPer('kaopen.w2'), sleepsPer('kaopen.w1')), '–'],
    // One worker at half that rate sees what each of the two workers sees above: if it pays what
    // they pay, the extra is the cost of a less busy event loop, not of running two processes.
    [`gate CPU per gated request, one worker at ${half} req/s (each of the 2 workers' share above) vs 2 workers at ${kaRate} req/s`, `${cpuPer('kaquarter.w1')} µs`, `${cpuPer('kaopen.w2')} µs`, ratio(cpuPer('kaopen.w2'), cpuPer('kaquarter.w1')), '–'],
    [`the gate's sleeps per gated request, the same two`, sleepsPer('kaquarter.w1').toFixed(2), sleepsPer('kaopen.w2').toFixed(2), ratio(sleepsPer('kaopen.w2'), sleepsPer('kaquarter.w1')), '–'],
    ['full flows/s, new mTLS conns (16 in flight)', fmt(m('flow.w1').rate, 1), fmt(m('flow.w2').rate, 1), ratio(m('flow.w2').rate!, m('flow.w1').rate!), 'as measured'],
    ['gate CPU per full flow', `${cpuPer('flow.w1')} µs`, `${cpuPer('flow.w2')} µs`, ratio(cpuPer('flow.w2'), cpuPer('flow.w1')), '–'],
    [
      `/v1/token p99, open loop at ${rate70} flows/s (70 % of 1-worker max), as the probe sees it (${split70.probe} of them); the main load generator's in brackets`,
      `${m('open.w1.probe').tokenP99} ms (${m('open.w1').tokenP99} ms)`,
      `${m('open.w2.probe').tokenP99} ms (${m('open.w2').tokenP99} ms)`,
      ratio(m('open.w2.probe').tokenP99!, m('open.w1.probe').tokenP99!),
      '< 10 ms',
    ],
    ['flows on time (3 s) at that rate', `${m('open.w1').onTimePct} %`, `${m('open.w2').onTimePct} %`, '–', '100 %'],
    ['peak RSS per process (VmHWM)', `${rss.w1} MB`, `workers ${rss.w2Workers.join(', ')} MB; primary ${rss.w2Primary} MB`, '–', '< 200 MB'],
  ];
  const table = ['| measurement | GATE_WORKERS=1 | GATE_WORKERS=2 | 2 / 1 (medians) | goal |', '|---|---|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  // The same effect without the gate in it: the upstream is one plain node:http process, and it
  // carries every request of both windows.
  const density = [
    '| one-worker gate, open loop | gate CPU per request | upstream CPU per request (one plain node:http process) | gate sleeps per request |',
    '|---|---:|---:|---:|',
    `| at ${kaRate} req/s | ${cpuPer('kaopen.w1')} µs | ${cpuPer('kaopen.w1', 'upstream')} µs | ${sleepsPer('kaopen.w1').toFixed(2)} |`,
    `| at ${half} req/s | ${cpuPer('kaquarter.w1')} µs | ${cpuPer('kaquarter.w1', 'upstream')} µs | ${sleepsPer('kaquarter.w1').toFixed(2)} |`,
    `| ${half} / ${kaRate} | ${ratio(cpuPer('kaquarter.w1'), cpuPer('kaopen.w1'))} | ${ratio(cpuPer('kaquarter.w1', 'upstream'), cpuPer('kaopen.w1', 'upstream'))} | ${ratio(sleepsPer('kaquarter.w1'), sleepsPer('kaopen.w1'))} |`,
  ].join('\n');
  process.stdout.write(`\n${table}\n\n${density}\n\nsetup: direct mode, Redis, rate limits off, log level warn; ${runs} interleaved rounds after ${warmMs / 1000} s of unmeasured requests and ${warmMs / 2000} s of flows per worker on each gate; windows ${win.ka / 1000} s keep-alive, ${win.flow / 1000} s flows, ${win.open / 1000} s open loop (${win.warm / 1000} s warm-up each); open loop: ${PROBE_TEXT}\n`);
  const dir = join(ROOT, 'load', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${new Date().toISOString().slice(0, 10)}-workers.json`), JSON.stringify({ args, runs: all, sleeps, rss, table, density }, null, 2) + '\n');
  await lg.stop();
  await probe.stop();
  for (const p of [w2, w1, upstream, redis]) await p.stop();
  rmSync(work, { recursive: true, force: true });
}
