/**
 * `npm run bench -- --profile`: CPU profiles of the gate (direct mode, Redis store, warn logs)
 * under (a) gated keep-alive load and (b) the full new-connection flow, each in a fresh gate
 * process started with `node --cpu-prof`. Only samples inside the measurement window count
 * (start-up and shutdown stay out). Writes `load/results/<date>-profile.json` (top self-time
 * functions, time per package, inclusive time of the interesting layers, and the load
 * figures under profiling), one flame graph SVG per scenario next to it, and the generated
 * profile section of `load/RESULTS.md`.
 *
 * When Linux `perf` works (and `--no-perf` is not given), each scenario also runs against a
 * fresh gate started with `--perf-basic-prof-only-functions` under `perf record`: V8's
 * sampler marks the thread idle while libuv runs native callbacks, so OpenSSL handshakes and
 * record decryption are invisible to `--cpu-prof`; perf sees every thread, native and kernel.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job, JobResult } from './jobs.js';
import { analyzeProfile, flameSvg, type CpuProfile, type ProfileRow, type ProfileSummary } from './profile.js';
import { fmt, upsertBlock } from './report.js';
import { MACHINE, QUIET_CORES, waitQuiet } from './procs.js';
import { perfAvailable, perfRecord, perfSummary, removePerfMap, type PerfSummary } from './perf.js';
import { type BenchPki, gateEnv, type LoadGen, ROOT, startBase, startGate, startLoadgen } from './setup.js';

const PREFIX = '/.agent-gate';

function rowsTable(rows: ProfileRow[], head: string): string {
  return [`| ${head} | ms | % of busy |`, '|---|---:|---:|', ...rows.map((r) => `| \`${r.name.replace(/\|/g, '\\|')}\` | ${fmt(r.ms, 1)} | ${fmt(r.pct, 1)} |`)].join('\n');
}

function pctTable(rows: ProfileRow[], head: string): string {
  return [`| ${head} | % of gate CPU |`, '|---|---:|', ...rows.map((r) => `| \`${r.name.replace(/\|/g, '\\|')}\` | ${fmt(r.pct, 1)} |`)].join('\n');
}

interface PerfResult extends PerfSummary {
  rate: string;
}

/** Runs `sc` against a fresh gate (no --cpu-prof) and records it with perf during the window. */
async function perfScenario(
  sc: Scenario,
  work: string,
  ctx: { pki: BenchPki; redisUrl: string; upstreamUrl: string; lg: LoadGen; quietPids: number[] },
): Promise<PerfResult> {
  const gate = await startGate(`gate-perf-${sc.name}`, work, gateEnv(ctx.pki, ctx.redisUrl, ctx.upstreamUrl), ['--perf-basic-prof-only-functions']);
  const file = join(work, `perf-${sc.name}.data`);
  try {
    await waitQuiet(() => [...ctx.quietPids, gate.pid], 20_000);
    const job = sc.job(`https://127.0.0.1:${gate.port}`);
    let recording: Promise<void> | undefined;
    const r = await ctx.lg.run(job, { gate: gate.pids }, (phase) => {
      if (phase === 'start') recording = perfRecord(gate.pid, Math.max(1, (job.durationMs - 300) / 1000), file);
    });
    await recording;
    const res = r.result;
    const rate = res.kind === 'keepalive' ? `${fmt(res.rps)} requests/s` : res.kind === 'flow' ? `${fmt(res.rate, 1)} flows/s` : '';
    return { ...perfSummary(file, 25), rate };
  } finally {
    await gate.stop();
    removePerfMap(gate.pid);
  }
}

interface Scenario {
  name: 'keepalive' | 'flow';
  title: string;
  job: (origin: string) => Job;
}

/** Profiles the gate; `args` may carry `--quick` (short windows). */
export async function profileMain(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const date = new Date().toISOString().slice(0, 10);
  const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('prof');
  const lg = await startLoadgen(pki.clientTls);
  const warm = quick ? 500 : 2000;
  const dur = quick ? 2000 : 8000;
  const scenarios: Scenario[] = [
    {
      name: 'keepalive',
      title: 'gated keep-alive requests (32 connections, closed loop)',
      job: (origin) => ({ kind: 'keepalive', origin, path: '/api/items/42?view=full', connections: 32, warmupMs: warm, durationMs: dur, tokenPrefix: PREFIX }),
    },
    {
      name: 'flow',
      title: 'full flows: new mTLS connection + challenge + ES256 proof + token (16 in flight)',
      job: (origin) => ({ kind: 'flow', mode: 'gate', origin, prefix: PREFIX, concurrency: 16, warmupMs: warm, durationMs: dur }),
    },
  ];
  const resultsDir = join(ROOT, 'load', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const withPerf = perfAvailable() && !args.includes('--no-perf');
  const out: Record<string, { title: string; load: JobResult; gateCpuCores: number; otherCores: number; summary: Omit<ProfileSummary, 'folded'>; flameGraph: string; perf?: PerfResult }> = {};
  const commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const md: string[] = [
    `## Profile ${date}`,
    '',
    `Command: \`npm run bench -- --profile\` at ${commit} (gate started with \`node --cpu-prof --cpu-prof-interval 500\`; only samples inside the measurement window).`,
    '',
  ];
  try {
    for (const sc of scenarios) {
      const profDir = join(work, `prof-${sc.name}`);
      mkdirSync(profDir, { recursive: true });
      const gate = await startGate(`gate-prof-${sc.name}`, work, gateEnv(pki, redisUrl, upstreamUrl), ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=500']);
      const foreign = await waitQuiet(() => [process.pid, lg.pid, redis.pid, upstream.pid, gate.pid], 20_000);
      if (foreign >= QUIET_CORES) process.stdout.write(`note: other processes use ${foreign} cores\n`);
      const r = await lg.run(sc.job(`https://127.0.0.1:${gate.port}`), { gate: gate.pids, upstream: upstream.pids, redis: redis.pids, loadgen: [lg.pid] });
      // SIGTERM: the gate drains and exits 0, and V8 writes the profile on the way out.
      await gate.stop();
      const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
      if (!file) throw new Error(`no .cpuprofile written in ${profDir}`);
      const profile = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as CpuProfile;
      const summary = analyzeProfile(profile, 30, r.monotonicUs);
      const svgName = `${date}-flame-${sc.name}.svg`;
      writeFileSync(join(resultsDir, svgName), flameSvg(summary.folded, `agent-gate ${sc.name}: ${sc.title}`));
      writeFileSync(join(work, `${sc.name}.folded`), summary.folded.join('\n') + '\n');
      const { folded: _folded, ...rest } = summary;
      const cores = (v: number) => (r.windowS > 0 ? Math.round((v / r.windowS) * 100) / 100 : 0);
      const gateCpuCores = cores(r.cpuSeconds.gate ?? 0);
      const ours = Object.entries(r.cpuSeconds).filter(([k]) => k !== MACHINE).reduce((a, [, v]) => a + v, 0);
      const otherCores = cores(Math.max(0, (r.cpuSeconds[MACHINE] ?? 0) - ours));
      out[sc.name] = { title: sc.title, load: r.result, gateCpuCores, otherCores, summary: rest, flameGraph: svgName };
      const res = r.result;
      const rate = res.kind === 'keepalive' ? `${fmt(res.rps)} requests/s` : res.kind === 'flow' ? `${fmt(res.rate, 1)} flows/s` : '';
      process.stdout.write(`\n== ${sc.name}: ${rate} under profiling, gate CPU ${gateCpuCores} cores (other processes ${otherCores}), ${summary.samples} samples, busy ${summary.busyMs} ms of ${summary.totalMs} ms\n`);
      for (const row of summary.topSelf.slice(0, 20)) process.stdout.write(`${fmt(row.pct, 1).padStart(5)}%  ${fmt(row.ms, 0).padStart(6)} ms  ${row.name}\n`);
      process.stdout.write('-- by package\n');
      for (const row of summary.byPackage.slice(0, 15)) process.stdout.write(`${fmt(row.pct, 1).padStart(5)}%  ${row.name}\n`);
      process.stdout.write('-- inclusive\n');
      for (const row of summary.inclusive) process.stdout.write(`${fmt(row.pct, 1).padStart(5)}%  ${row.name}\n`);
      md.push(
        `### ${sc.title}`,
        '',
        `${rate} under profiling; gate CPU ${gateCpuCores} cores (processes outside the benchmark: ${otherCores} cores); ${summary.samples} samples in the window, busy ${fmt(summary.busyMs)} ms of ${fmt(summary.totalMs)} ms. "Idle" is the event loop in libuv, which includes native work run straight from I/O callbacks (TLS handshakes, record decryption, HTTP parsing up to the first JS callback): see the perf view below. Flame graph: [\`load/results/${svgName}\`](results/${svgName}).`,
        '',
        rowsTable(summary.topSelf.slice(0, 20), 'top self time (function, file:line)'),
        '',
        rowsTable(summary.byPackage.slice(0, 12), 'self time by package / module'),
        '',
        rowsTable(summary.inclusive, 'inclusive time (any frame of)'),
        '',
      );
      if (withPerf) {
        const perf = await perfScenario(sc, work, { pki, redisUrl, upstreamUrl, lg, quietPids: [process.pid, lg.pid, redis.pid, upstream.pid] });
        out[sc.name]!.perf = perf;
        process.stdout.write(`-- perf (whole process, ${perf.samples} samples): by category\n`);
        for (const row of perf.categories.slice(0, 14)) process.stdout.write(`${fmt(row.pct, 1).padStart(5)}%  ${row.name}\n`);
        md.push(
          `Whole-process view of the same load (\`perf record -e cpu-clock -g\` on a fresh gate started with \`--perf-basic-prof-only-functions\`, ${perf.samples} samples over all threads, ${perf.rate} under perf): V8's profile above cannot see native work that runs straight from libuv callbacks (TLS handshakes and record decryption show as idle there), perf does.`,
          '',
          pctTable(perf.categories.filter((r) => r.pct >= 0.5), 'self time by category (perf)'),
          '',
          pctTable(perf.topSymbols.slice(0, 15), 'top symbols (perf, self)'),
          '',
        );
      }
    }
  } finally {
    await lg.stop();
    await upstream.stop();
    await redis.stop();
  }
  const jsonFile = join(resultsDir, `${date}-profile${quick ? '-quick' : ''}.json`);
  writeFileSync(jsonFile, JSON.stringify({ date, quick, commit, scenarios: out }, null, 2) + '\n');
  if (!quick) upsertBlock(join(ROOT, 'load', 'RESULTS.md'), `profile:${date}`, md.join('\n'));
  process.stdout.write(`\nwrote ${jsonFile}${quick ? '' : ', flame graphs and load/RESULTS.md'}; profiles and folded stacks kept in ${work}\n`);
}
