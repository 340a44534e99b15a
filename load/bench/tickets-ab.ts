/**
 * `npm run build && npx tsx load/bench/tickets-ab.ts [--runs=N]`: full agent flows over a new
 * mTLS connection each (16 in flight, ES256, Redis, rate limits on), one gate with OpenSSL's
 * default of two TLS 1.3 session tickets per full handshake beside one with the image's
 * `deploy/node-openssl.cnf` (one ticket), rounds interleaved with the order alternating; prints
 * gate CPU per flow for each and the median of the paired ratios. About a minute per 3 rounds.
 * @module
 */
import type { Job } from './jobs.js';
import { median } from './stats.js';
import { gateEnv, startBase, type StartedGate, startGate, startLoadgen } from './setup.js';

const RUNS = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 5);
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('tickets-ab');
const env = { ...gateEnv(pki, redisUrl, upstreamUrl), GATE_RATE_LIMITS: 'on' };
// An empty configuration: OpenSSL's defaults, as a gate run outside the image has them.
const two = await startGate('gate-two-tickets', work, { ...env, OPENSSL_CONF: '/dev/null' });
const one = await startGate('gate-one-ticket', work, env);
const lg = await startLoadgen(pki.clientTls);
const job = (g: StartedGate): Job => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${g.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 1000, durationMs: 4000, keepAlive: false });
const per = { two: [] as number[], one: [] as number[] };
const rates = { two: [] as number[], one: [] as number[] };
for (let i = 0; i < RUNS; i++) {
  const order = i % 2 === 0 ? ([['two', two], ['one', one]] as const) : ([['one', one], ['two', two]] as const);
  for (const [k, g] of order) {
    const r = await lg.run(job(g), { gate: g.pids, redis: redis.pids });
    if (r.result.kind !== 'flow') throw new Error('unexpected result');
    const cpu = ((r.cpuSeconds.gate ?? 0) * 1e6) / (r.result.rate * r.windowS);
    per[k].push(cpu);
    rates[k].push(r.result.rate);
    console.log(`round ${i + 1} ${k === 'two' ? 'two tickets' : 'one ticket '}: ${r.result.rate.toFixed(0)} flows/s, gate ${cpu.toFixed(0)} µs/flow, errors ${r.result.errors}`);
  }
}
const ratios = per.one.map((v, i) => v / per.two[i]!);
console.log(
  `gate CPU per new-connection flow, median of ${RUNS}: two tickets ${median(per.two).toFixed(0)} µs (${median(rates.two).toFixed(0)}/s), ` +
    `one ticket ${median(per.one).toFixed(0)} µs (${median(rates.one).toFixed(0)}/s); one/two paired ${median(ratios).toFixed(3)}`,
);
await lg.stop();
await one.stop();
await two.stop();
await upstream.stop();
await redis.stop();
