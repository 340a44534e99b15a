/**
 * `npm run build && npx tsx load/bench/flow-ab.ts [--runs=N] [--profile]`: rows 2e/2f of the
 * full bench on their own (about a minute): complete flows (challenge → proof → token) on
 * kept-alive mTLS connections, 16 agents, ES256, Redis store, one gate with rate limits on
 * (ceilings out of reach) beside one with limits off, rounds interleaved; prints gate CPU per
 * flow (median) and the limiter's paired cost. `--profile` also writes a V8 CPU profile of the
 * limits-on gate (`--cpu-prof`) and prints its top self-time functions; `--new-conns` runs the
 * flows over a new mTLS connection each instead. For working on the flow's hot path between full
 * `npm run bench` runs.
 * @module
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from './jobs.js';
import { analyzeProfile, type CpuProfile } from './profile.js';
import { median } from './stats.js';
import { gateEnv, startBase, type StartedGate, startGate, startLoadgen } from './setup.js';

const args = process.argv.slice(2);
const RUNS = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 3);
const PROFILE = args.includes('--profile');
/** Full flows over a new mTLS connection each (rows 2a/2b) instead of kept-alive connections. */
const NEW_CONNS = args.includes('--new-conns');

const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('flow-ab');
const profDir = join(work, 'prof');
const env = gateEnv(pki, redisUrl, upstreamUrl);
const on = await startGate('gate-limits', work, { ...env, GATE_RATE_LIMITS: 'on' }, PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []);
const off = await startGate('gate-nolimits', work, env);
const lg = await startLoadgen(pki.clientTls);
const job = (g: StartedGate): Job => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${g.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 1000, durationMs: 4000, keepAlive: !NEW_CONNS });
const per: Record<'on' | 'off', number[]> = { on: [], off: [] };
const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
for (let i = 0; i < RUNS; i++) {
  for (const [k, g] of [['on', on], ['off', off]] as const) {
    const r = await lg.run(job(g), { gate: g.pids, redis: redis.pids });
    if (r.result.kind !== 'flow') throw new Error('unexpected result');
    const flows = r.result.rate * r.windowS;
    per[k].push(((r.cpuSeconds.gate ?? 0) * 1e6) / flows);
    rates[k].push(r.result.rate);
    console.log(`round ${i + 1} limits ${k.padEnd(3)}: ${r.result.rate.toFixed(0)} flows/s, gate ${(((r.cpuSeconds.gate ?? 0) * 1e6) / flows).toFixed(0)} µs/flow, errors ${r.result.errors}`);
  }
}
const diffs = per.on.map((v, i) => v - per.off[i]!);
console.log(`gate CPU per kept-alive flow, median of ${RUNS}: limits on ${median(per.on).toFixed(0)} µs (${median(rates.on).toFixed(0)}/s), off ${median(per.off).toFixed(0)} µs (${median(rates.off).toFixed(0)}/s); limiter ${median(diffs).toFixed(0)} µs (paired)`);
await lg.stop();
await on.stop();
await off.stop();
await upstream.stop();
await redis.stop();
if (PROFILE) {
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
  if (file) {
    const summary = analyzeProfile(JSON.parse(readFileSync(join(profDir, file), 'utf8')) as CpuProfile);
    console.log(`profile ${join(profDir, file)}`);
    console.log(`busy ${summary.busyMs.toFixed(0)} ms of ${summary.totalMs.toFixed(0)} ms`);
    for (const [title, rows] of [['self', summary.topSelf], ['package', summary.byPackage], ['inclusive', summary.inclusive]] as const) {
      console.log(`-- ${title}`);
      for (const row of rows.slice(0, 30)) console.log(`${row.pct.toFixed(1).padStart(5)} %  ${row.name}`);
    }
  }
}
process.exit(0);
