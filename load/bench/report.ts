/**
 * Benchmark output: per-run metrics and their medians, the target table, the results JSON
 * (`load/results/<date>.json`) and the generated section of `load/RESULTS.md`, which sits
 * between `<!-- bench:<date>:begin -->` / `end` markers so a re-run on the same day replaces
 * it while the hand-written text around it stays.
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { JobResult } from './jobs.js';
import { MACHINE, type CpuReading } from './procs.js';
import { median } from './stats.js';

/** One run of one job with the CPU seconds each process group used in its window. */
export interface RunRecord {
  result: JobResult;
  cpuSeconds: CpuReading;
  windowS: number;
  /** The measurement window on CLOCK_MONOTONIC (µs). */
  monotonicUs?: [number, number];
}

/** Flat numbers of a run, for medians and tables. */
export type Metrics = Record<string, number>;

function serverCpu(r: RunRecord): number {
  return Object.entries(r.cpuSeconds)
    .filter(([k]) => k !== 'loadgen' && k !== MACHINE)
    .reduce((s, [, v]) => s + v, 0);
}

/** CPU seconds of processes outside the benchmark (other users of the machine) in the window. */
function otherCpu(r: RunRecord): number {
  const ours = Object.entries(r.cpuSeconds)
    .filter(([k]) => k !== MACHINE)
    .reduce((s, [, v]) => s + v, 0);
  return Math.max(0, (r.cpuSeconds[MACHINE] ?? 0) - ours);
}

/** The numbers of one run. CPU per op is the servers' CPU (everything but the load generator). */
/**
 * Adds the probe's open-loop run to the main one of the same window: the gate served both, so
 * counts (and with them CPU per flow, ok and on time) are the sum; latencies stay each one's own.
 */
export function addProbeCounts(main: RunRecord, probe: RunRecord | undefined): void {
  const m = main.result;
  const p = probe?.result;
  if (m.kind !== 'flow-open' || p?.kind !== 'flow-open') return;
  for (const f of ['targetRate', 'scheduled', 'ok', 'onTime', 'expired', 'failed', 'dropped', 'achievedRate'] as const) m[f] += p[f];
  for (const [status, n] of Object.entries(p.statuses)) m.statuses[status] = (m.statuses[status] ?? 0) + n;
  m.examples.push(...p.examples.slice(0, 3).map((e) => `probe: ${e}`));
}

export function metricsOf(r: RunRecord): Metrics {
  const res = r.result;
  const server = serverCpu(r);
  const lg = r.cpuSeconds.loadgen ?? 0;
  const perOp = (ops: number, cpu: number) => (ops > 0 ? Math.round((cpu / ops) * 1e6) : 0);
  const util = (cpu: number) => (r.windowS > 0 ? Math.round((cpu / r.windowS) * 100) / 100 : 0);
  const groupCpu: Metrics = {};
  for (const [k, v] of Object.entries(r.cpuSeconds)) if (k !== MACHINE) groupCpu[`cpu_${k}_cores`] = util(v);
  // A probe's record reads no process CPU (the main load generator's record of the window does).
  const readCpu = Object.keys(groupCpu).length > 0;
  if (readCpu && r.cpuSeconds[MACHINE] !== undefined) groupCpu.cpu_other_cores = util(otherCpu(r));
  // The gate's (or nginx's) own processes alone, for targets on "gate CPU" (upstream and redis excluded).
  const own = (ops: number): Metrics => ({
    ...(r.cpuSeconds.gate !== undefined ? { gateCpuUsPerOp: perOp(ops, r.cpuSeconds.gate) } : {}),
    ...(r.cpuSeconds.nginx !== undefined ? { nginxCpuUsPerOp: perOp(ops, r.cpuSeconds.nginx) } : {}),
    ...(r.cpuSeconds.redis !== undefined ? { redisCpuUsPerOp: perOp(ops, r.cpuSeconds.redis) } : {}),
  });
  switch (res.kind) {
    case 'keepalive':
      return {
        rps: res.rps,
        p50: res.latency.p50,
        p90: res.latency.p90,
        p99: res.latency.p99,
        errors: res.errors,
        ...(res.offered !== undefined ? { offered: res.offered, schedLagP99: res.schedLagMs?.p99 ?? 0 } : {}),
        serverCpuUsPerOp: perOp(res.completed, server),
        loadgenCpuUsPerOp: perOp(res.completed, lg),
        ...own(res.completed),
        ...groupCpu,
      };
    case 'flow':
      return {
        rate: res.rate,
        flowP50: res.flow.p50,
        flowP99: res.flow.p99,
        firstP50: res.first.p50,
        tokenP50: res.token.p50,
        tokenP99: res.token.p99,
        errors: res.errors,
        serverCpuUsPerOp: perOp(res.completed, server),
        loadgenCpuUsPerOp: perOp(res.completed, lg),
        ...own(res.completed),
        ...groupCpu,
      };
    case 'flow-open':
      return {
        targetRate: res.targetRate,
        achievedRate: res.achievedRate,
        scheduled: res.scheduled,
        okPct: res.scheduled > 0 ? Math.round((res.ok / res.scheduled) * 10000) / 100 : 0,
        onTimePct: res.scheduled > 0 ? Math.round((res.onTime / res.scheduled) * 10000) / 100 : 0,
        expired: res.expired,
        failed: res.failed,
        tokenP50: res.token.p50,
        tokenP99: res.token.p99,
        flowP50: res.flow.p50,
        flowP99: res.flow.p99,
        schedLagP99: res.schedLagMs.p99,
        ...(readCpu ? { serverCpuUsPerOp: perOp(res.ok, server), ...own(res.ok) } : {}),
        ...groupCpu,
      };
  }
}

/** Field-wise median over runs. */
export function medianMetrics(runs: RunRecord[]): Metrics {
  const all = runs.map(metricsOf);
  const keys = new Set(all.flatMap((m) => Object.keys(m)));
  const out: Metrics = {};
  for (const k of keys) out[k] = Math.round(median(all.map((m) => m[k] ?? Number.NaN).filter((v) => !Number.isNaN(v))) * 1000) / 1000;
  return out;
}

/** A row of the target table. */
export interface TargetRow {
  id: string;
  measurement: string;
  gate: string;
  baseline: string;
  ratio: string;
  target: string;
  /** true pass, false miss, null informational. */
  pass: boolean | null;
  /** Raw numbers, for the JSON. */
  values?: Record<string, number>;
}

/** Everything a run produced. */
export interface BenchData {
  date: string;
  startedAt: string;
  finishedAt: string;
  durationS: number;
  command: string;
  quick: boolean;
  machine: Record<string, string | number>;
  versions: Record<string, string>;
  tls: Record<string, string>;
  settings: Record<string, string | number | boolean>;
  runs: Record<string, RunRecord[]>;
  /** CPU cores used by processes outside the benchmark just before each run. */
  foreignCoresBeforeRun: Record<string, number[]>;
  medians: Record<string, Metrics>;
  memory: Record<string, number>;
  targets: TargetRow[];
  notes: string[];
}

export function fmt(v: number | undefined, digits = 0): string {
  if (v === undefined || Number.isNaN(v)) return 'n/a';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function verdict(p: boolean | null): string {
  return p === null ? 'info' : p ? '**pass**' : '**MISS**';
}

/** The markdown target table. */
export function targetTable(rows: TargetRow[]): string {
  const head = '| # | measurement | gate | baseline | ratio | target | result |\n|---|---|---:|---:|---:|---|---|';
  return [head, ...rows.map((r) => `| ${r.id} | ${r.measurement} | ${r.gate} | ${r.baseline} | ${r.ratio} | ${r.target} | ${verdict(r.pass)} |`)].join('\n');
}

const SETUP_LABELS: Record<string, string> = {
  'ka.gate': 'keep-alive, gate direct (warn logs)',
  'ka.gate-info': 'keep-alive, gate direct (info logs)',
  'ka.nginx': 'keep-alive, nginx proxy_pass (1 worker)',
  'ka.nginx-auto': 'keep-alive, nginx proxy_pass (workers auto)',
  'ka.fwd': 'keep-alive, nginx + gate forwarded',
  'ka.authz': 'keep-alive, nginx authorizer mode, decision cache warm',
  'ka.authz-off': 'keep-alive, nginx authorizer mode, cache off (gate decides each)',
  'kaopen.gate': 'keep-alive open loop, gate direct',
  'kaopen.nginx': 'keep-alive open loop, nginx proxy_pass',
  'flow.gate': 'new conn + challenge + token, gate direct',
  'flow.tls': 'new conn + GET, Node https requestCert',
  'flow.fwd': 'new conn + challenge + token, nginx + gate forwarded',
  'flow.authz': 'new conn + challenge + token, nginx authorizer mode',
  'flowka.limits': 'kept-alive conn per agent: challenge + token, gate direct, rate limits on (ceilings out of reach)',
  'flowka.nolimits': 'kept-alive conn per agent: challenge + token, gate direct, GATE_RATE_LIMITS=off',
  'open.50': 'open-loop flows at 50% of max, gate direct',
  'open.70': 'open-loop flows at 70% of max, gate direct',
  'open.80': 'open-loop flows at 80% of max, gate direct',
  'openfwd.70': 'open-loop flows at 70% of forwarded max, nginx + gate',
  'open.50.probe': 'the probe\'s flows within the 50% load (rows 3-50)',
  'open.70.probe': 'the probe\'s flows within the 70% load (row 3-70)',
  'open.80.probe': 'the probe\'s flows within the 80% load (row 3-80)',
  'openfwd.70.probe': 'the probe\'s flows within the forwarded 70% load (row 3-70f)',
};

/** The gate's own CPU per op, else nginx's (authorizer and forwarded setups show both). */
function ownCpu(m: Metrics): string {
  const parts = [m.gateCpuUsPerOp === undefined ? '' : `gate ${fmt(m.gateCpuUsPerOp)}`, m.nginxCpuUsPerOp === undefined ? '' : `nginx ${fmt(m.nginxCpuUsPerOp)}`].filter(Boolean);
  return parts.length ? parts.join(', ') : '–';
}

/** Per-setup medians with CPU, for the details table. */
export function detailTable(data: BenchData): string {
  const lines = [
    '| setup | runs | rate (/s) | latency of | p50 ms | p99 ms | failed | server CPU µs/op | gate (or nginx) CPU µs/op | load gen CPU µs/op | CPU cores used in the window (other = processes outside the benchmark) |',
    '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const [key, runs] of Object.entries(data.runs)) {
    const m = data.medians[key] ?? {};
    const kind = runs[0]?.result.kind;
    const [rate, what, p50, p99, failed] =
      kind === 'keepalive'
        ? [m.rps, 'request', m.p50, m.p99, m.errors]
        : kind === 'flow'
          ? [m.rate, key === 'flow.tls' ? 'connect + GET' : 'whole flow', m.flowP50, m.flowP99, m.errors]
          : [m.achievedRate, '/v1/token', m.tokenP50, m.tokenP99, m.failed];
    const cores = Object.entries(m)
      .filter(([k]) => k.startsWith('cpu_'))
      .map(([k, v]) => `${k.slice(4, -6)} ${fmt(v, 2)}`)
      .join(', ');
    lines.push(
      `| ${SETUP_LABELS[key] ?? key} | ${runs.length} | ${fmt(rate)} | ${what} | ${fmt(p50, 2)} | ${fmt(p99, 2)} | ${fmt(failed)} | ${fmt(m.serverCpuUsPerOp)} | ${ownCpu(m)} | ${m.loadgenCpuUsPerOp === undefined ? '–' : fmt(m.loadgenCpuUsPerOp)} | ${cores} |`,
    );
  }
  return lines.join('\n');
}

/** The generated markdown section for one run date. */
export function markdownSection(data: BenchData): string {
  const kv = (o: Record<string, string | number | boolean>) =>
    Object.entries(o)
      .map(([k, v]) => `- ${k}: ${String(v).includes('\n') ? '\n\n```\n' + String(v).replace(/^\n+|\s+$/g, '') + '\n```\n' : '`' + String(v) + '`'}`)
      .join('\n');
  const mem = Object.entries(data.memory)
    .map(([k, v]) => `- ${k}: ${fmt(v, 1)} MB`)
    .join('\n');
  return [
    `## ${data.date}${data.quick ? ' (quick run: short windows, one run each; not comparable)' : ''}`,
    '',
    `Command: \`${data.command}\` (started ${data.startedAt}, took ${Math.round(data.durationS)} s).`,
    '',
    '### Machine',
    kv(data.machine),
    '',
    '### Versions',
    kv(data.versions),
    '',
    '### Negotiated TLS',
    kv(data.tls),
    '',
    '### Settings',
    kv(data.settings),
    '',
    `### Results (medians of ${data.settings.runs} runs)`,
    '',
    targetTable(data.targets),
    '',
    '### Details (medians; CPU read from /proc over each measurement window)',
    '',
    detailTable(data),
    '',
    '### Memory (after all runs)',
    mem,
    '',
    ...(data.notes.length ? ['### Notes', ...data.notes.map((n) => `- ${n}`), ''] : []),
    `Raw numbers (every run, medians): \`load/results/${data.date}${data.quick ? '-quick' : ''}.json\`.`,
  ].join('\n');
}

const HEADER = `# agent-gate load benchmark results

\`npm run bench\` (\`load/bench.ts\`) builds the gate and starts, on loopback: an upstream (tiny
node:http JSON server), redis-server, the gate in direct mode (\`node dist/cli/main.js serve\`,
Redis store), nginx with a plain mTLS \`proxy_pass\` to the same upstream as the baseline, nginx
(config from \`renderNginxConfig\`) in front of a second gate in forwarded mode, and a Node
mTLS server that answers at once (the new-connection baseline). A separate load-generator
process (undici) drives them one at a time; each measurement is the median of 3 runs,
interleaved across setups. \`npm run bench -- --profile\` records CPU profiles of the gate
instead. Each section below is generated between its markers and replaced when the benchmark
runs again on the same day; the text outside the markers is written by hand.
`;

/** Replaces (or adds) the block between `<!-- <tag>:begin -->` and `<!-- <tag>:end -->`. */
export function upsertBlock(file: string, tag: string, body: string): void {
  let text = existsSync(file) ? readFileSync(file, 'utf8') : HEADER;
  const begin = `<!-- ${tag}:begin -->`;
  const end = `<!-- ${tag}:end -->`;
  const block = `${begin}\n${body.trim()}\n${end}`;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + block + text.slice(j + end.length);
  else text = text.trimEnd() + '\n\n' + block + '\n';
  writeFileSync(file, text.endsWith('\n') ? text : text + '\n');
}
