/**
 * `npm run build && npx tsx load/bench/resume-ab.ts [--runs=N]`: what a returning agent's TLS
 * resumption saves the gate. Full flows (challenge → proof → token) over a new mTLS connection
 * each, 16 in flight, ES256, Redis, rate limits on, against one gate: every connection a full
 * handshake, beside every connection resuming the newest session as the SDK's connector does
 * (src/client/connector.ts); rounds interleaved with the order alternating. Prints gate CPU per
 * flow and flows/s for each, and the median of the paired ratios.
 * @module
 */
import type { FlowJob, FlowResult } from './jobs.js';
import { pairedFlowRounds } from './paired.js';
import { gateEnv, startBase, startGate, startLoadgen } from './setup.js';

const RUNS = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 5);
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('resume-ab');
const gate = await startGate('gate', work, { ...gateEnv(pki, redisUrl, upstreamUrl), GATE_RATE_LIMITS: 'on' });
const lg = await startLoadgen(pki.clientTls);
const job = (resume: boolean): FlowJob => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${gate.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 1000, durationMs: 4000, resume });
const resumed = (r: FlowResult): string => {
  const tls = r.tls;
  if (!tls) return '';
  // Only the 16 agents' first connections may be full handshakes (no session yet, or a ticket
  // past its lifetime): otherwise the 'resumed' figures would not be what they say.
  if (tls.resumed < tls.connections - 16) throw new Error(`only ${tls.resumed} of ${tls.connections} connections resumed`);
  return `, ${tls.resumed} of ${tls.connections} connections resumed`;
};
await pairedFlowRounds(lg, RUNS, { label: 'full', job: job(false), pids: gate.pids }, { label: 'resumed', job: job(true), pids: gate.pids }, resumed);
await lg.stop();
await gate.stop();
await upstream.stop();
await redis.stop();
