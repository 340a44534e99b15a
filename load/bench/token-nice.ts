/**
 * `npx tsx load/bench/token-nice.ts [ROUNDS] [NICE]`: how much of row 3-70 (`/v1/token` p99 at
 * 70 % of the maximum flow rate, as the probe sees it) is the gate waiting for a CPU that the
 * load generators, Redis and the upstream hold on this 2-core machine, rather than its own
 * work. One gate (direct mode, Redis, rate limits off); its maximum flow rate from 3 closed-loop
 * rounds (16 in flight); then ROUNDS (default 4) pairs of 5 s open-loop windows at 70 % of it,
 * the gate at nice 0 and at NICE (default -10, needs root) in turns (`renice`), the order
 * alternating. Prints each window's probe and load-generator token p99 and the gate's CPU, and
 * the median probe p99 per priority.
 * @module
 */
import { execFileSync } from 'node:child_process';
import type { Job } from './jobs.js';
import { gateEnv, openFlowJob, probeSplit, startBase, startGate, startLoadgen } from './setup.js';
import { median } from './stats.js';

const rounds = Number(process.argv[2] ?? 4);
const raised = process.argv[3] ?? '-10';
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('token-nice');
const gate = await startGate('gate', work, gateEnv(pki, redisUrl, upstreamUrl));
const lg = await startLoadgen(pki.clientTls);
const probe = await startLoadgen(pki.clientTls);
const origin = `https://127.0.0.1:${gate.port}`;
const renice = (n: string) => execFileSync('renice', ['-n', n, '-p', String(gate.pid)], { stdio: 'ignore' });
try {
  renice(raised);
  renice('0');
} catch {
  process.stderr.write(`renice -n ${raised} is not permitted here (run as root)\n`);
  process.exit(2);
}
const maxes: number[] = [];
for (let i = 0; i < 3; i++) {
  const r = await lg.run({ kind: 'flow', mode: 'gate', origin, prefix: '/.agent-gate', concurrency: 16, warmupMs: 500, durationMs: 3000 }, { gate: [gate.pid] });
  if (r.result.kind === 'flow') maxes.push(r.result.rate);
}
const rate = Math.max(2, Math.round(median(maxes) * 0.7));
const split = probeSplit(rate);
process.stdout.write(`max flow rate ${maxes.map((m) => m.toFixed(0)).join(', ')} flows/s; 70 %: ${rate} flows/s (${split.probe} from the probe)\n`);
const open = (n: number): Job => openFlowJob(origin, n, { warmupMs: 1000, durationMs: 5000 });
const p99s: Record<string, number[]> = {};
for (let i = 0; i < rounds; i++) {
  for (const nice of i % 2 ? [raised, '0'] : ['0', raised]) {
    renice(nice);
    const [m, p] = await Promise.all([lg.run(open(split.main), { gate: [gate.pid] }), probe.run(open(split.probe), {})]);
    const probeP99 = p.result.kind === 'flow-open' ? p.result.token.p99 : NaN;
    const mainP99 = m.result.kind === 'flow-open' ? m.result.token.p99 : NaN;
    (p99s[nice] ??= []).push(probeP99);
    process.stdout.write(`round ${i} nice ${nice.padStart(3)}: token p99 probe ${probeP99} ms (load generator ${mainP99} ms), gate CPU ${(m.cpuSeconds.gate ?? 0).toFixed(2)} s\n`);
  }
}
renice('0');
for (const [nice, v] of Object.entries(p99s)) process.stdout.write(`gate at nice ${nice}: median probe token p99 ${median(v).toFixed(2)} ms over ${v.length} windows\n`);
await lg.stop();
await probe.stop();
for (const p of [gate, upstream, redis]) await p.stop();
