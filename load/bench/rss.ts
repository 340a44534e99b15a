/**
 * `npx tsx load/bench/rss.ts [ROUNDS] [NODE_FLAG...]`: the gate's memory under sustained
 * new-connection flows. Rounds of 4 s of full flows over new mTLS connections (16 in flight;
 * ROUNDS, default 10), against a gate on node's defaults and, when NODE_FLAGs are given (for
 * example `--max-old-space-size=384`), a second gate started with them, rounds interleaved.
 * After each round: RSS, its peak (VmHWM), V8's heap (admin `/metrics`) and the gate's CPU per
 * flow. Shows when V8's first full GC comes, which sets the peak RSS.
 * @module
 */
import { readFileSync } from 'node:fs';
import { gateEnv, startBase, startGate, startLoadgen, type StartedGate } from './setup.js';

const rounds = Number(process.argv[2] ?? 10);
const flags = process.argv.slice(3);
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('rss');
const gates: [string, StartedGate][] = [['defaults', await startGate('gate-defaults', work, gateEnv(pki, redisUrl, upstreamUrl))]];
if (flags.length) gates.push([flags.join(' '), await startGate('gate-flags', work, gateEnv(pki, redisUrl, upstreamUrl), flags)]);
const lg = await startLoadgen(pki.clientTls);
const mb = (bytes: number) => (bytes / 1048576).toFixed(1);
const show = async (label: string, gate: StartedGate, cpuUsPerFlow?: number) => {
  const text = await (await fetch(`http://127.0.0.1:${gate.adminPort}/metrics`)).text();
  const metric = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN);
  const hwmKb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${gate.pid}/status`, 'utf8'))?.[1] ?? NaN);
  process.stdout.write(
    `${label}: RSS ${mb(metric('process_resident_memory_bytes'))} MB (peak ${mb(hwmKb * 1024)}), V8 heap used ${mb(metric('nodejs_heap_size_used_bytes'))} of ${mb(metric('nodejs_heap_size_total_bytes'))} MB, external ${mb(metric('nodejs_external_memory_bytes'))} MB${cpuUsPerFlow === undefined ? '' : `, gate CPU ${Math.round(cpuUsPerFlow)} µs/flow`}\n`,
  );
};
for (const [name, gate] of gates) await show(`idle, ${name}`, gate);
for (let i = 1; i <= rounds; i++) {
  for (const [name, gate] of gates) {
    const r = await lg.run({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${gate.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 500, durationMs: 4000 }, { gate: [gate.pid] });
    const done = r.result.kind === 'flow' ? r.result.completed : 0;
    await show(`round ${i}, ${name} (${r.result.kind === 'flow' ? Math.round(r.result.rate) : '?'} flows/s)`, gate, ((r.cpuSeconds.gate ?? 0) / Math.max(1, done)) * 1e6);
  }
}
await lg.stop();
for (const p of [...gates.map(([, g]) => g), upstream, redis]) await p.stop();
