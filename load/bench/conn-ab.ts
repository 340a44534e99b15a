/**
 * `npm run build && npx tsx load/bench/conn-ab.ts [--runs=N] [--perf]`: what a new mTLS
 * connection costs the gate against Node's bare mTLS server, apart from the flow's own work.
 * Closed loop, 16 in flight, a new connection each, rounds interleaved (3 s windows): one GET of
 * `/.agent-gate/healthz` on the gate and on the Node baseline (which answers any path), and the
 * gate's full flow (challenge → ES256 proof → token; rate limits off, as in row 2). The health
 * endpoint does not resolve the client's identity, so the per-connection identity work
 * (`getPeerCertificate`, a hash, a cache lookup) counts in the flow, not in the gate's GET.
 * Prints each server's CPU per connection and the medians. `--perf` adds `perf record` of the
 * server in every window (Node's too, so that both pay the sampling) and prints the gate's CPU
 * per connection by category and top symbols (load/bench/perf.ts); take CPU figures from a run
 * without it.
 * @module
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningJwk } from '../../src/tokens/index.js';
import type { FlowJob } from './jobs.js';
import { perfAvailable, perfRecord, perfSummary, removePerfMap } from './perf.js';
import { median } from './stats.js';
import { gateEnv, startBase, startGate, startLoadgen, startServer } from './setup.js';

const args = process.argv.slice(2);
const RUNS = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 4);
const PERF = args.includes('--perf');
if (PERF && !perfAvailable()) throw new Error('--perf needs perf on PATH (Debian: linux-perf)');
const GET_PATH = '/.agent-gate/healthz';

const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('conn-ab');
const node = await startServer('tls-baseline', pki);
const env = gateEnv(pki, redisUrl, upstreamUrl, { GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()) });
const gate = await startGate('gate', work, env, PERF ? ['--perf-basic-prof-only-functions'] : []);
const lg = await startLoadgen(pki.clientTls);
const job = (port: number, mode: 'gate' | 'tls'): FlowJob => ({ kind: 'flow', mode, origin: `https://127.0.0.1:${port}`, prefix: '/.agent-gate', getPath: GET_PATH, concurrency: 16, warmupMs: 500, durationMs: 3000 });

type Key = 'node GET' | 'gate GET' | 'gate flow';
const setups: [Key, FlowJob, number][] = [
  ['node GET', job(node.port, 'tls'), node.pid],
  ['gate GET', job(gate.port, 'tls'), gate.pid],
  ['gate flow', job(gate.port, 'gate'), gate.pid],
];
for (const [, j] of setups) await lg.run(j, {});
const perConn: Record<Key, number[]> = { 'node GET': [], 'gate GET': [], 'gate flow': [] };
const perfFiles: Record<Key, string[]> = { 'node GET': [], 'gate GET': [], 'gate flow': [] };
for (let i = 0; i < RUNS; i++) {
  for (const [key, j, pid] of setups) {
    const out = PERF ? join(work, `perf-${perfFiles[key].length}-${key.replace(' ', '-')}.data`) : undefined;
    // perf starts after the load generator's warm-up and stops before the window ends.
    const [r] = await Promise.all([lg.run(j, { server: [pid] }), out ? new Promise((s) => setTimeout(s, 700)).then(() => perfRecord(pid, 2, out)) : undefined]);
    if (r.result.kind !== 'flow') throw new Error('unexpected result');
    const conns = r.result.completed;
    if (r.result.errors > 0 || conns === 0) throw new Error(`${key}: ${r.result.errors} errors, ${conns} completed`);
    const us = ((r.cpuSeconds.server ?? 0) / conns) * 1e6;
    perConn[key].push(us);
    if (out) perfFiles[key].push(out);
    process.stdout.write(`round ${i + 1} ${key.padEnd(9)} ${r.result.rate.toFixed(0)} conns/s, ${us.toFixed(0)} µs CPU per connection\n`);
  }
}
const m = (k: Key) => median(perConn[k]);
process.stdout.write(
  `\nmedians of ${RUNS}: node GET ${m('node GET').toFixed(0)} µs, gate GET ${m('gate GET').toFixed(0)} µs (${(m('gate GET') / m('node GET')).toFixed(2)}x), gate flow ${m('gate flow').toFixed(0)} µs (${(m('gate flow') / m('node GET')).toFixed(2)}x)\n`,
);
if (PERF) {
  for (const key of ['gate GET', 'gate flow'] as const) {
    const cats: Record<string, number[]> = {};
    const syms: Record<string, number[]> = {};
    perfFiles[key].forEach((file, i) => {
      const s = perfSummary(file, 300);
      const us = perConn[key][i] ?? 0;
      for (const c of s.categories) (cats[c.name] ??= []).push((c.pct / 100) * us);
      for (const c of s.topSymbols) (syms[c.name] ??= []).push((c.pct / 100) * us);
    });
    const top = (rows: Record<string, number[]>, n: number) => Object.entries(rows).map(([k, v]) => [k, median(v)] as const).sort((a, b) => b[1] - a[1]).slice(0, n);
    process.stdout.write(`\n${key}: µs per connection by category (perf, medians)\n`);
    for (const [k, v] of top(cats, 14)) process.stdout.write(`${v.toFixed(0).padStart(6)}  ${k}\n`);
    process.stdout.write(`${key}: top symbols\n`);
    for (const [k, v] of top(syms, 30)) process.stdout.write(`${v.toFixed(1).padStart(6)}  ${k.slice(0, 120)}\n`);
  }
  removePerfMap(gate.pid);
}
await lg.stop();
for (const p of [gate, node, upstream, redis]) await p.stop();
rmSync(work, { recursive: true, force: true });
