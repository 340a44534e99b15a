/**
 * `npm run build && npx tsx load/bench/resume-ab.ts [--runs=N]`: what a returning agent's TLS
 * resumption saves the gate. Full flows (challenge → proof → token) over a new mTLS connection
 * each, 16 in flight, ES256, Redis, rate limits on, against one gate: every connection a full
 * handshake, beside every connection resuming the newest session as the SDK's connector does
 * (src/client/connector.ts); rounds interleaved with the order alternating. Prints gate CPU per
 * flow and flows/s for each, and the median of the paired ratios.
 * @module
 */
import type { Job } from './jobs.js';
import { median } from './stats.js';
import { gateEnv, startBase, startGate, startLoadgen } from './setup.js';

const RUNS = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 5);
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('resume-ab');
const gate = await startGate('gate', work, { ...gateEnv(pki, redisUrl, upstreamUrl), GATE_RATE_LIMITS: 'on' });
const lg = await startLoadgen(pki.clientTls);
const job = (resume: boolean): Job => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${gate.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 1000, durationMs: 4000, resume });
const per = { full: [] as number[], resumed: [] as number[] };
const rates = { full: [] as number[], resumed: [] as number[] };
for (let i = 0; i < RUNS; i++) {
  for (const k of i % 2 === 0 ? (['full', 'resumed'] as const) : (['resumed', 'full'] as const)) {
    const r = await lg.run(job(k === 'resumed'), { gate: gate.pids, redis: redis.pids });
    if (r.result.kind !== 'flow') throw new Error('unexpected result');
    const cpu = ((r.cpuSeconds.gate ?? 0) * 1e6) / (r.result.rate * r.windowS);
    per[k].push(cpu);
    rates[k].push(r.result.rate);
    const tls = r.result.tls;
    console.log(`round ${i + 1} ${k.padEnd(7)}: ${r.result.rate.toFixed(0)} flows/s, gate ${cpu.toFixed(0)} µs/flow, errors ${r.result.errors}${tls ? `, ${tls.resumed} of ${tls.connections} connections resumed` : ''}`);
    // Only the 16 agents' first connections may be full handshakes (no session yet, or a ticket
    // past its lifetime): otherwise the 'resumed' figures would not be what they say.
    if (tls && tls.resumed < tls.connections - 16) throw new Error(`only ${tls.resumed} of ${tls.connections} connections resumed`);
  }
}
const ratios = per.resumed.map((v, i) => v / per.full[i]!);
console.log(
  `gate CPU per new-connection flow, median of ${RUNS}: full handshakes ${median(per.full).toFixed(0)} µs (${median(rates.full).toFixed(0)}/s), ` +
    `resumed ${median(per.resumed).toFixed(0)} µs (${median(rates.resumed).toFixed(0)}/s); resumed/full paired ${median(ratios).toFixed(3)}`,
);
await lg.stop();
await gate.stop();
await upstream.stop();
await redis.stop();
