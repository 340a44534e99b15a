/* global console */
/**
 * The whole agent flow over mTLS, at a constant arrival rate of flows:
 * `POST P/v1/challenge` -> ES256 proof signed here with crypto.subtle -> `POST P/v1/token`
 * -> K6_CALLS gated calls with the token.
 *
 * Verdicts: no 5xx at all; the share of complete flows (K6_FLOW_OK_MIN); the share of proofs
 * the gate received before the challenge's `expires_at` (K6_ON_TIME_MIN); and, for real load
 * runs, p99 latency per step (K6_P99_*_MS) and no dropped iterations.
 *
 * A challenge that demands proof-of-work (`pow` non-null) fails the flow and counts in
 * `pow_demanded`: run against gates with GATE_POW=off (see load/README.md).
 */
import { Counter, Rate, Trend } from 'k6/metrics';
import { bool, duration, int, num, perf, perSecond, str, TREND_STATS, vusFor } from './lib/env.js';
import { gatedCall, gateTarget, isServerFailure, loadAgent, note, problemCode, requestChallenge, requestToken, signingKey, tlsAuthFor } from './lib/gate.js';
import { signProof } from './lib/proof.js';

const AGENT = loadAgent('K6_AGENT_CERT', 'K6_AGENT_KEY');
const GATE = gateTarget(str('K6_GATE_URL', 'https://127.0.0.1:8443'));
const RATE = num('K6_RATE', 5, 0.001);
const CALLS = int('K6_CALLS', 5);

const serverErrors = new Counter('server_errors');
const rateLimited = new Counter('rate_limited');
const powDemanded = new Counter('pow_demanded');
const scriptErrors = new Counter('script_errors');
const flowOk = new Rate('flow_ok');
const proofOnTime = new Rate('proof_on_time');
const proofMargin = new Trend('proof_margin_ms', true);
const signTime = new Trend('proof_sign_ms', true);
const tokensIssued = new Counter('tokens_issued');

const thresholds = {
  server_errors: ['count==0'],
  script_errors: ['count==0'],
  flow_ok: [`rate>=${num('K6_FLOW_OK_MIN', 0.99)}`],
  proof_on_time: [`rate>=${num('K6_ON_TIME_MIN', 0.99)}`],
};
perf(thresholds, 'http_req_duration{step:challenge}', [`p(99)<${num('K6_P99_CHALLENGE_MS', 200)}`]);
perf(thresholds, 'http_req_duration{step:token}', [`p(99)<${num('K6_P99_TOKEN_MS', 300)}`]);
perf(thresholds, 'http_req_duration{step:gated}', [`p(99)<${num('K6_P99_GATED_MS', 200)}`]);
perf(thresholds, 'dropped_iterations', ['count==0']);

export const options = {
  tlsAuth: tlsAuthFor(AGENT),
  // K6_NEW_CONNECTIONS=true: a new TLS handshake per flow, like agents that do not keep connections.
  noVUConnectionReuse: bool('K6_NEW_CONNECTIONS', false),
  summaryTrendStats: TREND_STATS,
  scenarios: {
    flows: {
      executor: 'constant-arrival-rate',
      ...perSecond(RATE),
      duration: duration('K6_RUN_DURATION', '1m'),
      preAllocatedVUs: int('K6_PRE_VUS', vusFor(RATE, 500), 1),
      maxVUs: int('K6_MAX_VUS', vusFor(RATE, 4000), 1),
      exec: 'flow',
    },
  },
  thresholds,
};

/** Counts 5xx / no answer and 429s of one response of `step`. */
function tally(res, step) {
  if (isServerFailure(res)) serverErrors.add(1, { step, code: problemCode(res) });
  if (res.status === 429) rateLimited.add(1, { step });
}

/** One agent flow. */
export async function flow() {
  let ok = false;
  try {
    const started = Date.now();
    const { res: cres, challenge } = requestChallenge(GATE);
    tally(cres, 'challenge');
    if (!challenge) return note('challenge refused', cres);
    if (challenge.pow) {
      powDemanded.add(1);
      return note(`challenge demands proof-of-work (difficulty ${challenge.pow.difficulty}); run against GATE_POW=off`);
    }
    const key = await signingKey(AGENT);
    const t = Date.now();
    const proof = await signProof(key, challenge);
    signTime.add(Date.now() - t);
    // Skew-free, conservative margin: the TTL minus the time since the challenge was requested.
    proofMargin.add(challenge.expires_at - challenge.issued_at - (Date.now() - started));
    const { res: tres, token } = requestToken(GATE, challenge.challenge_id, proof);
    tally(tres, 'token');
    // The gate's verdict on time: 200 means received by expires_at, 408 challenge_expired late.
    if (tres.status === 200 || tres.status === 408) proofOnTime.add(tres.status === 200);
    if (!token) return note('token refused', tres);
    tokensIssued.add(1);
    for (let i = 0; i < CALLS; i++) {
      const g = gatedCall(GATE, token);
      tally(g, 'gated');
      if (g.status !== 200) return note('gated call refused', g);
    }
    ok = true;
  } catch (err) {
    scriptErrors.add(1);
    console.error(`flow: ${err}`);
  } finally {
    flowOk.add(ok);
  }
}
