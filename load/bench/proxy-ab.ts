/**
 * `npx tsx load/bench/proxy-ab.ts --dist=before:DIR --dist=after:DIR [--runs=5] [--dur=2500]`:
 * the gated keep-alive row only (32 connections, closed loop, `GET /api/items/42?view=full` with
 * a Bearer token) for several builds of the gate side by side with nginx plain mTLS
 * `proxy_pass` (one worker), same Redis, same upstream, same load generator, rounds interleaved
 * (the order rotates each round). Each DIR holds a built `dist/` (plus `package.json` and a
 * `node_modules` link), so a change is measured against the code before it on the same machine
 * state. Prints per build the medians of req/s, p99, gate CPU per request (µs, /proc utime+stime
 * of the gate process over the window / requests) and the per-round ratios to nginx, plus the
 * machine's load average. `--flow` / `--flow-ka` run full flows (new connections / one kept-alive
 * connection per agent) instead. Short by design: the machine is shared.
 * @module
 */
import { closeSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import type { Job } from './jobs.js';
import { analyzeProfile, type CpuProfile } from './profile.js';
import { freePort, killAll, spawnTracked, statusKb, stopChild, waitFor } from './procs.js';
import { fmt, metricsOf, type RunRecord } from './report.js';
import { median } from './stats.js';
import { gateEnv, startBase, startBaselineNginx, type Started, startLoadgen } from './setup.js';

const PREFIX = '/.agent-gate';
const GATED_PATH = '/api/items/42?view=full';

async function startGateFrom(name: string, root: string, work: string, env: Record<string, string>, nodeArgs: string[] = []): Promise<Started> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const fd = openSync(join(work, `${name}.log`), 'a');
  const child = spawnTracked(process.execPath, [...nodeArgs, join(root, 'dist', 'cli', 'main.js'), 'serve'], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '', ...env, GATE_LISTEN: `127.0.0.1:${port}`, GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}` },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited: ${readFileSync(join(work, `${name}.log`), 'utf8').slice(-2000)}`);
      return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200;
    },
    30_000,
    `gate ${name} ready`,
    100,
  );
  return { name, child, pid: child.pid ?? 0, pids: [child.pid ?? 0], port, stop: async () => void (await stopChild(child)) };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const dists = args.filter((a) => a.startsWith('--dist=')).map((a) => {
    const [name, dir] = a.slice('--dist='.length).split(':');
    return { name: name!, dir: dir! };
  });
  if (dists.length === 0) throw new Error('give at least one --dist=name:DIR');
  const runs = Number(args.find((a) => a.startsWith('--runs='))?.slice(7) ?? 5);
  const dur = Number(args.find((a) => a.startsWith('--dur='))?.slice(6) ?? 2500);
  const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('proxy-ab');
  const env = gateEnv(pki, redisUrl, upstreamUrl);
  const gates: Record<string, Started> = {};
  // --prof: every gate runs under --cpu-prof; the top self-time rows are printed at the end.
  const prof = args.includes('--prof');
  for (const d of dists) gates[d.name] = await startGateFrom(`gate-${d.name}`, d.dir, work, env, prof ? ['--cpu-prof', `--cpu-prof-dir=${join(work, `prof-${d.name}`)}`, '--cpu-prof-interval=500'] : []);
  const nginx = await startBaselineNginx('nginx-1', work, pki, upstream.port, '1', availableParallelism());
  const lg = await startLoadgen(pki.clientTls);
  const base = { upstream: upstream.pids, loadgen: [lg.pid] };
  const ka = (port: number, token: boolean): Job => ({
    kind: 'keepalive',
    origin: `https://127.0.0.1:${port}`,
    path: GATED_PATH,
    connections: 32,
    warmupMs: 700,
    durationMs: dur,
    ...(token ? { tokenPrefix: PREFIX } : {}),
  });
  // --flow: full flows over new mTLS connections (challenge -> proof -> token, 16 in flight)
  // instead, gates only: the per-connection identity work shows there.
  // --flow-ka: the same flows on one kept-alive connection per agent (the store's share shows).
  const flowKa = args.includes('--flow-ka');
  const flowMode = flowKa || args.includes('--flow');
  const flow = (port: number): Job => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${port}`, prefix: PREFIX, concurrency: 16, warmupMs: 700, durationMs: dur, ...(flowKa ? { keepAlive: true } : {}) });
  const all: Record<string, RunRecord[]> = {};
  const loads: number[] = [];
  const names = [...dists.map((d) => d.name), ...(flowMode ? [] : ['nginx'])];
  // One discarded round each first: a cold gate spends its first seconds in the JIT.
  for (const n of names) await lg.run(flowMode ? { ...flow(gates[n]!.port), durationMs: 1500 } : { ...ka(n === 'nginx' ? nginx.port : gates[n]!.port, n !== 'nginx'), durationMs: 1500 }, {});
  for (let i = 0; i < runs; i++) {
    const order = names.map((_, j) => names[(i + j) % names.length]!);
    for (const n of order) {
      loads.push(loadavg()[0]!);
      const r = n === 'nginx' ? await lg.run(ka(nginx.port, false), { nginx: nginx.pids, ...base }) : await lg.run(flowMode ? flow(gates[n]!.port) : ka(gates[n]!.port, true), { gate: gates[n]!.pids, redis: redis.pids, ...base });
      (all[`${n}#${i}`] ??= []).push(r);
      const res = r.result;
      if (res.kind === 'flow') {
        process.stdout.write(`round ${i} ${n.padEnd(8)} ${fmt(res.rate, 1)} flows/s, ${fmt(((r.cpuSeconds.gate ?? 0) / res.completed) * 1e6)} µs gate CPU/flow, token p99 ${res.token.p99} ms, errors ${res.errors}, load ${loadavg()[0]!.toFixed(1)}\n`);
        continue;
      }
      if (res.kind !== 'keepalive') continue;
      const own = (r.cpuSeconds[n === 'nginx' ? 'nginx' : 'gate'] ?? 0) / res.completed;
      process.stdout.write(`round ${i} ${n.padEnd(8)} ${fmt(res.rps)} rps p99 ${res.latency.p99} ms, ${fmt(own * 1e6)} µs CPU/req, errors ${res.errors}, load ${loadavg()[0]!.toFixed(1)}\n`);
    }
  }
  const per = (n: string, i: number) => {
    const r = all[`${n}#${i}`]![0]!;
    const res = r.result as { completed: number };
    const m = metricsOf(r);
    return { rps: m.rps!, p99: m.p99!, cpuUs: ((r.cpuSeconds[n === 'nginx' ? 'nginx' : 'gate'] ?? 0) / res.completed) * 1e6, errors: m.errors! };
  };
  const rounds = [...Array(runs).keys()];
  if (flowMode) {
    process.stdout.write(`\nload average during the run: median ${median(loads).toFixed(1)}; ${runs} rounds of ${dur} ms\n| build | flows/s | gate CPU µs/flow | errors |\n|---|---:|---:|---:|\n`);
    for (const n of names) {
      const xs = rounds.map((i) => all[`${n}#${i}`]![0]!);
      const rate = xs.map((r) => (r.result.kind === 'flow' ? r.result.rate : NaN));
      const cpu = xs.map((r) => (r.result.kind === 'flow' ? ((r.cpuSeconds.gate ?? 0) / r.result.completed) * 1e6 : NaN));
      const errors = xs.reduce((a, r) => a + (r.result.kind === 'flow' ? r.result.errors : 0), 0);
      process.stdout.write(`| ${n} | ${fmt(median(rate), 1)} | ${fmt(median(cpu))} | ${errors} |\n`);
    }
  } else {
  process.stdout.write(`\nload average during the run: median ${median(loads).toFixed(1)} (min ${Math.min(...loads).toFixed(1)}, max ${Math.max(...loads).toFixed(1)}); ${runs} rounds of ${dur} ms\n`);
  process.stdout.write('| build | req/s | p99 ms | CPU µs/req (own process) | req/s ÷ nginx (per round) | p99 ÷ nginx (per round) | errors |\n|---|---:|---:|---:|---:|---:|---:|\n');
  for (const n of names) {
    const xs = rounds.map((i) => per(n, i));
    const ng = rounds.map((i) => per('nginx', i));
    const row = [
      fmt(median(xs.map((x) => x.rps))),
      fmt(median(xs.map((x) => x.p99)), 2),
      fmt(median(xs.map((x) => x.cpuUs))),
      n === 'nginx' ? '1' : fmt(median(xs.map((x, i) => x.rps / ng[i]!.rps)), 2),
      n === 'nginx' ? '1' : fmt(median(xs.map((x, i) => x.p99 / ng[i]!.p99)), 2),
      String(xs.reduce((a, x) => a + x.errors, 0)),
    ];
    process.stdout.write(`| ${n} | ${row.join(' | ')} |\n`);
  }
  }
  // Peak RSS of each build's gate over the whole run (VmHWM), for changes that move memory.
  process.stdout.write(`\npeak RSS (VmHWM): ${Object.entries(gates).map(([n, g]) => `${n} ${(statusKb(g.pid, 'VmHWM') / 1024).toFixed(1)} MB`).join(', ')}\n`);
  await lg.stop();
  for (const p of [nginx, ...Object.values(gates), upstream, redis]) await p.stop();
  if (prof) {
    for (const d of dists) {
      const dir = join(work, `prof-${d.name}`);
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
      if (!file) continue;
      const summary = analyzeProfile(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile, 40);
      if (process.env.PROXY_AB_FOLDED) writeFileSync(join(process.env.PROXY_AB_FOLDED, `${d.name}.folded`), summary.folded.join('\n') + '\n');
      process.stdout.write(`\n== ${d.name}: busy ${fmt(summary.busyMs)} of ${fmt(summary.totalMs)} ms\n`);
      for (const row of summary.topSelf.slice(0, 40)) process.stdout.write(`${fmt(row.pct, 1).padStart(5)}%  ${row.name}\n`);
      for (const row of summary.inclusive) process.stdout.write(`incl ${fmt(row.pct, 1).padStart(5)}%  ${row.name}\n`);
    }
  }
  rmSync(work, { recursive: true, force: true });
}

main().then(
  () => {
    killAll();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`proxy-ab failed: ${(err as Error)?.stack ?? String(err)}\n`);
    killAll();
    process.exit(1);
  },
);
