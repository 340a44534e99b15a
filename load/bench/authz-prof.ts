/**
 * `npm run build && npx tsx load/bench/authz-prof.ts [--dist=name:DIR ...] [--runs=4] [--prof]`:
 * the authorizer's decision route alone. For each build (default: this checkout; each DIR holds a
 * built `dist/`) a gate in authorizer mode behind its own nginx with the decision cache off, so
 * every gated request is decided by `GET P/v1/authorize`; 32 kept-alive agent connections,
 * rounds interleaved; prints req/s and CPU per decision of the gate, nginx and Redis (medians).
 * `--prof` runs the gates under `--cpu-prof` and prints each one's top self-time functions.
 * For working on rows 1k/1l between full `npm run bench` runs.
 * @module
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { analyzeProfile, type CpuProfile } from './profile.js';
import { median } from './stats.js';
import { ROOT, startAuthorizer, startAuthorizerGate, startBase, type Started, type StartedGate, startLoadgen } from './setup.js';

const args = process.argv.slice(2);
const RUNS = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 4);
const PROF = args.includes('--prof');
const dists = args.filter((a) => a.startsWith('--dist=')).map((a) => a.slice('--dist='.length).split(':') as [string, string]);
if (dists.length === 0) dists.push(['this', ROOT]);

const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('authz-prof');
const setups: { name: string; gate: StartedGate; nginx: Started; prof: string }[] = [];
for (const [name, dir] of dists) {
  const prof = join(work, `prof-${name}`);
  mkdirSync(prof);
  const gate = await startAuthorizerGate(work, pki, redisUrl, upstreamUrl, 0, `gate-${name}`, PROF ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : [], dir);
  const { nginx } = await startAuthorizer(work, `nginx-${name}`, pki, redisUrl, upstreamUrl, 0, gate);
  setups.push({ name, gate, nginx, prof });
}
const lg = await startLoadgen(pki.clientTls);
const out: Record<string, { rps: number[]; gate: number[]; nginx: number[]; redis: number[] }> = {};
for (let i = 0; i < RUNS; i++) {
  for (const s of i % 2 === 0 ? setups : [...setups].reverse()) {
    const r = await lg.run({ kind: 'keepalive', origin: `https://127.0.0.1:${s.nginx.port}`, path: '/api/items/42?view=full', connections: 32, warmupMs: 1000, durationMs: 4000, tokenPrefix: '/.agent-gate' }, { gate: s.gate.pids, nginx: s.nginx.pids, redis: redis.pids });
    if (r.result.kind !== 'keepalive') throw new Error('unexpected result');
    const n = Math.max(1, r.result.completed);
    const per = (k: string) => ((r.cpuSeconds[k] ?? 0) * 1e6) / n;
    const o = (out[s.name] ??= { rps: [], gate: [], nginx: [], redis: [] });
    o.rps.push(r.result.rps);
    o.gate.push(per('gate'));
    o.nginx.push(per('nginx'));
    o.redis.push(per('redis'));
    console.log(`round ${i + 1} ${s.name}: ${r.result.rps.toFixed(0)} req/s, errors ${r.result.errors}, gate ${per('gate').toFixed(0)} µs, nginx ${per('nginx').toFixed(0)} µs, redis ${per('redis').toFixed(0)} µs per decision`);
  }
}
console.log('| build | req/s | gate µs/decision | nginx µs | redis µs |\n|---|---:|---:|---:|---:|');
for (const [name, o] of Object.entries(out)) console.log(`| ${name} | ${median(o.rps).toFixed(0)} | ${median(o.gate).toFixed(0)} | ${median(o.nginx).toFixed(0)} | ${median(o.redis).toFixed(0)} |`);
await lg.stop();
for (const s of setups) {
  await s.nginx.stop();
  await s.gate.stop();
}
await upstream.stop();
await redis.stop();
if (PROF) {
  for (const s of setups) {
    const file = readdirSync(s.prof).find((f) => f.endsWith('.cpuprofile'));
    if (!file) continue;
    const p = analyzeProfile(JSON.parse(readFileSync(join(s.prof, file), 'utf8')) as CpuProfile, 30);
    console.log(`\n== ${s.name}: busy ${p.busyMs.toFixed(0)} of ${p.totalMs.toFixed(0)} ms`);
    for (const row of p.topSelf) console.log(`${row.pct.toFixed(1).padStart(5)} %  ${row.name}`);
  }
}
process.exit(0);
