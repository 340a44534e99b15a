/**
 * `npm run build && npx tsx load/bench/tickets-ab.ts [--runs=N]`: full agent flows over a new
 * mTLS connection each (16 in flight, ES256, Redis, rate limits on), one gate with OpenSSL's
 * default of two TLS 1.3 session tickets per full handshake beside one with the image's
 * `deploy/node-openssl.cnf` (one ticket), rounds interleaved with the order alternating; prints
 * gate CPU per flow for each and the median of the paired ratios. About a minute per 3 rounds.
 * @module
 */
import type { FlowJob } from './jobs.js';
import { pairedFlowRounds } from './paired.js';
import { gateEnv, startBase, type StartedGate, startGate, startLoadgen } from './setup.js';

const RUNS = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 5);
const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('tickets-ab');
const env = { ...gateEnv(pki, redisUrl, upstreamUrl), GATE_RATE_LIMITS: 'on' };
// An empty configuration: OpenSSL's defaults, as a gate run outside the image has them.
const two = await startGate('gate-two-tickets', work, { ...env, OPENSSL_CONF: '/dev/null' });
const one = await startGate('gate-one-ticket', work, env);
const lg = await startLoadgen(pki.clientTls);
const job = (g: StartedGate): FlowJob => ({ kind: 'flow', mode: 'gate', origin: `https://127.0.0.1:${g.port}`, prefix: '/.agent-gate', concurrency: 16, warmupMs: 1000, durationMs: 4000, keepAlive: false });
await pairedFlowRounds(lg, RUNS, { label: 'two tickets', job: job(two), pids: two.pids }, { label: 'one ticket', job: job(one), pids: one.pids });
await lg.stop();
await one.stop();
await two.stop();
await upstream.stop();
await redis.stop();
