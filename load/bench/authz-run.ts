/**
 * `npm run bench -- --authorizer`: the authorizer-mode rows alone (the full `npm run bench` has
 * the main ones too, rows 1i-1l and 2d), short enough for a shared machine (about 2 minutes):
 * nginx plain mTLS proxy_pass (1 worker) vs nginx in authorizer mode (1 worker) with the
 * decision cache warm and with it off, plus two warm variants that price parts of the warm
 * path (without the njs header screen; also without the access-log buffer and open_file_cache),
 * gated keep-alive requests, rounds interleaved; nginx CPU per request of each; and full
 * flows/s through the authorizer nginx. Prints the rows and writes
 * `load/results/<date>-authorizer.json`.
 * @module
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from './jobs.js';
import { fmt, medianMetrics, metricsOf, type RunRecord } from './report.js';
import { median } from './stats.js';
import { AUTHORIZER_EDITS, type CpuGroups, ROOT, startAuthorizer, startBase, startBaselineNginx, type Started, startLoadgen } from './setup.js';

const PREFIX = '/.agent-gate';
const GATED_PATH = '/api/items/42?view=full';

export async function authorizerMain(args: string[]): Promise<void> {
  const runs = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 3);
  const ka = { warm: 1000, dur: 3000 };
  const t0 = performance.now();
  const log = (s: string) => process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${s}\n`);
  const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('bench-authz');
  const cores = 2;
  const nginx1 = await startBaselineNginx('nginx-baseline-1', work, pki, upstream.port, '1', cores);
  const warm = await startAuthorizer(work, 'nginx-authz-cache', pki, redisUrl, upstreamUrl, 2);
  const off = await startAuthorizer(work, 'nginx-authz-nocache', pki, redisUrl, upstreamUrl, 0, warm.gate);
  // The same warm cache without the njs header screen, and also without the warm-path tuning:
  // nginx CPU per request of each prices the screen and the tuning on this machine.
  const noScreen = await startAuthorizer(work, 'nginx-authz-noscreen', pki, redisUrl, upstreamUrl, 2, warm.gate, 'no-screen');
  const first = await startAuthorizer(work, 'nginx-authz-unbuffered', pki, redisUrl, upstreamUrl, 2, warm.gate, 'unbuffered');
  const lg = await startLoadgen(pki.clientTls);
  const origin = (p: Started) => `https://127.0.0.1:${p.port}`;
  const base = { upstream: upstream.pids, loadgen: [lg.pid] };
  const groups: Record<string, CpuGroups> = {
    nginx: { nginx: nginx1.pids, ...base },
    warm: { nginx: warm.nginx.pids, gate: warm.gate.pids, redis: redis.pids, ...base },
    off: { nginx: off.nginx.pids, gate: warm.gate.pids, redis: redis.pids, ...base },
    noScreen: { nginx: noScreen.nginx.pids, gate: warm.gate.pids, redis: redis.pids, ...base },
    first: { nginx: first.nginx.pids, gate: warm.gate.pids, redis: redis.pids, ...base },
  };
  const all: Record<string, RunRecord[]> = {};
  const record = async (key: string, job: Job, g: CpuGroups) => {
    const r = await lg.run(job, g);
    (all[key] ??= []).push(r);
    const res = r.result;
    log(`${key.padEnd(12)} ${res.kind === 'keepalive' ? `${fmt(res.rps)} rps p50 ${res.latency.p50} p99 ${res.latency.p99} ms, errors ${res.errors}` : res.kind === 'flow' ? `${fmt(res.rate, 1)} flows/s, errors ${res.errors}` : ''}${res.examples.length ? ` (e.g. ${res.examples[0]})` : ''}`);
  };
  const kaJob = (o: string, token: boolean): Job => ({ kind: 'keepalive', origin: o, path: GATED_PATH, connections: 64, warmupMs: ka.warm, durationMs: ka.dur, ...(token ? { tokenPrefix: PREFIX } : {}) });
  for (let i = 0; i < runs; i++) {
    await record('ka.nginx', kaJob(origin(nginx1), false), groups.nginx!);
    await record('ka.authz', kaJob(origin(warm.nginx), true), groups.warm!);
    await record('ka.authz-off', kaJob(origin(off.nginx), true), groups.off!);
    await record('ka.authz-noscreen', kaJob(origin(noScreen.nginx), true), groups.noScreen!);
    await record('ka.authz-first', kaJob(origin(first.nginx), true), groups.first!);
  }
  for (let i = 0; i < Math.min(runs, 2); i++) {
    await record('flow.authz', { kind: 'flow', mode: 'gate', origin: origin(warm.nginx), prefix: PREFIX, concurrency: 16, warmupMs: 500, durationMs: 3000 }, groups.warm!);
  }
  const m = (k: string) => medianMetrics(all[k] ?? []);
  const paired = (a: string, b: string, field: string) => {
    const ra = (all[a] ?? []).map((r) => metricsOf(r)[field]!);
    const rb = (all[b] ?? []).map((r) => metricsOf(r)[field]!);
    return Math.round(median(ra.map((v, i) => v / rb[i]!)) * 100) / 100;
  };
  /** Median over rounds of nginx's CPU µs per request: steadier than req/s on a shared machine. */
  const nginxUs = (k: string) => median((all[k] ?? []).map((r) => ((r.cpuSeconds.nginx ?? 0) / Math.max(1, r.result.kind === 'keepalive' ? r.result.completed : 1)) * 1e6));
  const rows = [
    ['authorizer, cache warm: req/s vs nginx', fmt(m('ka.authz').rps), fmt(m('ka.nginx').rps), paired('ka.authz', 'ka.nginx', 'rps'), '≥ 0.9'],
    ['authorizer, cache warm: p99 vs nginx', `${fmt(m('ka.authz').p99, 2)} ms`, `${fmt(m('ka.nginx').p99, 2)} ms`, paired('ka.authz', 'ka.nginx', 'p99'), '≤ 1.5'],
    ['authorizer, cache off: req/s vs nginx', fmt(m('ka.authz-off').rps), fmt(m('ka.nginx').rps), paired('ka.authz-off', 'ka.nginx', 'rps'), '≥ 0.6'],
    ['authorizer, cache off: p99 vs nginx', `${fmt(m('ka.authz-off').p99, 2)} ms`, `${fmt(m('ka.nginx').p99, 2)} ms`, paired('ka.authz-off', 'ka.nginx', 'p99'), '≤ 2'],
    ['full flows/s through the authorizer nginx', fmt(m('flow.authz').rate, 1), '–', '–', '–'],
    ['authorizer, cache warm, without the njs header screen: req/s vs nginx', fmt(m('ka.authz-noscreen').rps), fmt(m('ka.nginx').rps), paired('ka.authz-noscreen', 'ka.nginx', 'rps'), '–'],
    ['authorizer, cache warm, as first built (no screen, log per request, no open_file_cache, no pcre_jit): req/s vs nginx', fmt(m('ka.authz-first').rps), fmt(m('ka.nginx').rps), paired('ka.authz-first', 'ka.nginx', 'rps'), '–'],
    ...(['ka.nginx', 'ka.authz', 'ka.authz-noscreen', 'ka.authz-first', 'ka.authz-off'] as const).map((k) => [`nginx CPU per request (µs): ${k}`, fmt(nginxUs(k)), fmt(nginxUs('ka.nginx')), Math.round((nginxUs(k) / nginxUs('ka.nginx')) * 100) / 100, '–']),
  ];
  const table = ['| measurement | authorizer | nginx proxy_pass | ratio (median of per-round ratios) | goal |', '|---|---|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  process.stdout.write(`\n${table}\n\nsetup: ${AUTHORIZER_EDITS}; 64 keep-alive connections, ${runs} interleaved rounds of ${ka.dur / 1000} s (${ka.warm / 1000} s warm-up)\n`);
  const dir = join(ROOT, 'load', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${new Date().toISOString().slice(0, 10)}-authorizer.json`), JSON.stringify({ args, runs: all, table }, null, 2) + '\n');
  await lg.stop();
  for (const p of [first.nginx, noScreen.nginx, off.nginx, warm.nginx, warm.gate, nginx1, upstream, redis]) await p.stop();
  rmSync(work, { recursive: true, force: true });
}
