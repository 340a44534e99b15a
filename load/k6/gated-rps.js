/* global console */
/**
 * Sustained gated throughput: `GET K6_GATED_PATH` with a cached token at constant arrival
 * rates, to find the rate the gate sustains (zero dropped iterations, p99 under the bound).
 *
 * `K6_RATE` (requests/s) for one step, or `K6_RATES=200,400,800` for consecutive steps of
 * `K6_RUN_DURATION` each, `K6_STEP_GAP` apart; every step is its own scenario (`rps_<rate>`)
 * with its own p99 and dropped-iteration thresholds, so the summary shows which rates held.
 *
 * Tokens: setup() fetches one for the agent's certificate and every VU uses it; a VU fetches
 * its own when the cached one is within K6_TOKEN_REFRESH_S (plus jitter) of `exp` or the gate
 * says `token_expired`, so runs longer than GATE_TOKEN_TTL_S keep going. Fetches are counted in
 * `token_refreshes` and are not part of the measured gated latency.
 */
import { Counter, Rate } from 'k6/metrics';
import { duration, durationMs, int, list, num, perf, perSecond, str, TREND_STATS, vusFor } from './lib/env.js';
import { gatedCall, gateTarget, isServerFailure, loadAgent, note, problemCode, requestChallenge, requestToken, signingKey, tlsAuthFor, tokenExpMs } from './lib/gate.js';
import { signProof } from './lib/proof.js';

const AGENT = loadAgent('K6_AGENT_CERT', 'K6_AGENT_KEY');
const GATE = gateTarget(str('K6_GATE_URL', 'https://127.0.0.1:8443'));
const RATES = list('K6_RATES', [String(num('K6_RATE', 100, 0.001))]).map((r) => {
  const n = Number(r);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`K6_RATES must be positive numbers, got ${JSON.stringify(r)}`);
  return n;
});
const DURATION = duration('K6_RUN_DURATION', '2m');
const GAP = duration('K6_STEP_GAP', '5s');
const REFRESH_MS = num('K6_TOKEN_REFRESH_S', 30) * 1000;

const serverErrors = new Counter('server_errors');
const rateLimited = new Counter('rate_limited');
const scriptErrors = new Counter('script_errors');
const gatedOk = new Rate('gated_ok');
const tokenRefreshes = new Counter('token_refreshes');
const tokenFailures = new Counter('token_failures');

const scenarios = {};
const thresholds = {
  server_errors: ['count==0'],
  script_errors: ['count==0'],
  gated_ok: [`rate>=${num('K6_GATED_OK_MIN', 0.999)}`],
};
RATES.forEach((r, i) => {
  const name = `rps_${String(r).replace('.', '_')}`;
  scenarios[name] = {
    executor: 'constant-arrival-rate',
    ...perSecond(r),
    duration: DURATION,
    startTime: `${i * (durationMs(DURATION) + durationMs(GAP))}ms`,
    preAllocatedVUs: int('K6_PRE_VUS', vusFor(r, 200), 1),
    maxVUs: int('K6_MAX_VUS', vusFor(r, 2000), 1),
    exec: 'gated',
  };
  perf(thresholds, `http_req_duration{scenario:${name},step:gated}`, [`p(99)<${num('K6_P99_GATED_MS', 100)}`]);
  perf(thresholds, `dropped_iterations{scenario:${name}}`, ['count==0']);
});

export const options = {
  tlsAuth: tlsAuthFor(AGENT),
  summaryTrendStats: TREND_STATS,
  scenarios,
  thresholds,
};

/** challenge -> proof -> token; undefined (counted) when refused. */
async function fetchToken() {
  const { res: cres, challenge } = requestChallenge(GATE, { phase: 'token_fetch' });
  if (isServerFailure(cres)) serverErrors.add(1, { step: 'challenge', code: problemCode(cres) });
  if (!challenge || challenge.pow) {
    tokenFailures.add(1);
    return note(challenge ? 'challenge demands proof-of-work; run against GATE_POW=off' : 'challenge refused', challenge ? undefined : cres);
  }
  const proof = await signProof(await signingKey(AGENT), challenge);
  const { res, token } = requestToken(GATE, challenge.challenge_id, proof, { phase: 'token_fetch' });
  if (isServerFailure(res)) serverErrors.add(1, { step: 'token', code: problemCode(res) });
  if (!token) {
    tokenFailures.add(1);
    return note('token refused', res);
  }
  tokenRefreshes.add(1);
  return { token, expMs: tokenExpMs(token) };
}

export async function setup() {
  const t = await fetchToken();
  if (!t) throw new Error('setup: could not get an access token (see the warning above)');
  return t;
}

/** This VU's token when it has fetched its own; the shared one from setup() until then. */
let own;
// Refresh a little earlier on some VUs than on others, so they do not all refresh at once.
const jitterMs = Math.random() * 10_000;

export async function gated(shared) {
  try {
    let t = own || shared;
    if (t.expMs - Date.now() < REFRESH_MS + jitterMs) {
      const fresh = await fetchToken();
      // A refused refresh keeps the old token until the gate says it expired.
      if (fresh) t = own = fresh;
    }
    const res = gatedCall(GATE, t.token);
    gatedOk.add(res.status === 200);
    if (isServerFailure(res)) serverErrors.add(1, { step: 'gated', code: problemCode(res) });
    if (res.status === 429) rateLimited.add(1, { step: 'gated' });
    if (res.status !== 200) {
      note('gated call refused', res);
      if (res.status === 401) own = { token: t.token, expMs: 0 };
    }
  } catch (err) {
    scriptErrors.add(1);
    console.error(`gated: ${err}`);
  }
}
