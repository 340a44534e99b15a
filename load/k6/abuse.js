/* global console */
/**
 * Abuse: floods that must end in 429 `rate_limited` / 503 `overloaded`, and a well-behaved
 * agent beside them that must not notice. k6 presents one client certificate per process, so
 * the two sides are two k6 processes running this script at the same time:
 *
 *   K6_ABUSE_ROLE=flood  (flood agent's certificate)  scenarios flood_challenge, flood_gated, flood_proofs
 *   K6_ABUSE_ROLE=good   (another agent's certificate) scenario good_agent
 *
 * flood_challenge: `POST P/v1/challenge` at K6_FLOOD_RATE (trips the per-identity challenge limit);
 * flood_gated: gated calls with a valid token at K6_FLOOD_GATED_RATE (the per-identity proxy limit);
 * flood_proofs: challenge + a proof with a bad signature at K6_FLOOD_PROOF_RATE (the failed-proof
 * cooldown). Each flood's requests after K6_FLOOD_GRACE count in `flood_refused`, per scenario.
 * K6_FLOODS picks some of them (default all). Floods of one process share its certificate, so
 * whichever per-identity limit trips first refuses the others too; to see each limiter fire,
 * run flood_proofs as a third process with a third certificate (as the smoke does).
 * good_agent: complete flows at K6_GOOD_RATE, starting K6_GOOD_START after launch.
 */
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import { duration, durationMs, int, list, num, perf, perSecond, str, TREND_STATS, vusFor } from './lib/env.js';
import { gatedCall, gateTarget, LIMITERS, limiterOf, loadAgent, note, problemCode, requestChallenge, requestToken, signingKey, tlsAuthFor } from './lib/gate.js';
import { b64urlString, signProof } from './lib/proof.js';

const ROLE = str('K6_ABUSE_ROLE', undefined);
if (ROLE !== 'flood' && ROLE !== 'good') {
  throw new Error(
    'K6_ABUSE_ROLE must be flood or good: k6 presents one client certificate per process, so run the flood and the well-behaved agent as two k6 processes side by side, each with its own K6_AGENT_CERT/K6_AGENT_KEY',
  );
}
const AGENT = loadAgent('K6_AGENT_CERT', 'K6_AGENT_KEY');
const GATE = gateTarget(str('K6_GATE_URL', 'https://127.0.0.1:8443'));
const DURATION = duration('K6_RUN_DURATION', '1m');
const GRACE_MS = durationMs(duration('K6_FLOOD_GRACE', '5s'));

const serverErrors = new Counter('server_errors');
const scriptErrors = new Counter('script_errors');
const floodRefused = new Rate('flood_refused');
const floodUnexpected = new Counter('flood_unexpected');
const floodLimited = new Counter('flood_limited');
const goodFlowOk = new Rate('good_flow_ok');
const goodRefused = new Counter('good_refused');

const scenarios = {};
const thresholds = { server_errors: ['count==0'], script_errors: ['count==0'] };
const flood = (name, rate, execName) => {
  scenarios[name] = {
    executor: 'constant-arrival-rate',
    ...perSecond(rate),
    duration: DURATION,
    preAllocatedVUs: int('K6_PRE_VUS', vusFor(rate, 200), 1),
    maxVUs: int('K6_MAX_VUS', vusFor(rate, 2000), 1),
    exec: execName,
  };
  thresholds[`flood_refused{scenario:${name}}`] = [`rate>=${num('K6_FLOOD_REFUSED_MIN', 0.5)}`];
};
const FLOODS = list('K6_FLOODS', ['challenge', 'gated', 'proofs']);
for (const f of FLOODS) if (!['challenge', 'gated', 'proofs'].includes(f)) throw new Error(`K6_FLOODS: unknown flood ${JSON.stringify(f)} (challenge, gated, proofs)`);
if (ROLE === 'flood') {
  if (FLOODS.includes('challenge')) flood('flood_challenge', num('K6_FLOOD_RATE', 50, 0.001), 'floodChallenge');
  if (FLOODS.includes('gated')) flood('flood_gated', num('K6_FLOOD_GATED_RATE', 200, 0.001), 'floodGated');
  if (FLOODS.includes('proofs')) flood('flood_proofs', num('K6_FLOOD_PROOF_RATE', 10, 0.001), 'floodProofs');
  thresholds.flood_unexpected = ['count==0'];
  // Always true: these only make k6 report which limiter answered the 429s (a sub-metric
  // shows in the summary only when it has a threshold).
  for (const limiter of LIMITERS) thresholds[`flood_limited{limiter:${limiter}}`] = ['count>=0'];
} else {
  const rate = num('K6_GOOD_RATE', 1, 0.001);
  scenarios.good_agent = {
    executor: 'constant-arrival-rate',
    ...perSecond(rate),
    duration: DURATION,
    startTime: duration('K6_GOOD_START', '0s'),
    preAllocatedVUs: int('K6_PRE_VUS', vusFor(rate, 1000), 1),
    maxVUs: int('K6_MAX_VUS', vusFor(rate, 5000), 1),
    exec: 'goodAgent',
  };
  thresholds.good_flow_ok = [`rate>=${num('K6_GOOD_OK_MIN', 0.99)}`];
  thresholds.good_refused = ['count==0'];
  perf(thresholds, 'http_req_duration{scenario:good_agent}', [`p(99)<${num('K6_GOOD_P99_MS', 500)}`]);
}

export const options = { tlsAuth: tlsAuthFor(AGENT), summaryTrendStats: TREND_STATS, scenarios, thresholds };

/** 429 rate_limited or 503 overloaded: the answers a flood must end in. */
function refusal(res) {
  return res.status === 429 || (res.status === 503 && problemCode(res) === 'overloaded');
}

/** Counts one flood answer; `expected` lists the other statuses that are fine for this step. */
function floodAnswer(res, step, expected) {
  const refused = refusal(res);
  if (res.status === 429) floodLimited.add(1, { limiter: limiterOf(res), step });
  if (!refused && (res.status === 0 || res.status >= 500)) serverErrors.add(1, { step, code: problemCode(res) });
  if (!refused && !expected.includes(res.status)) {
    floodUnexpected.add(1, { step, code: problemCode(res) });
    note(`flood ${step}: unexpected answer`, res);
  }
  return refused;
}

/** Only answers after the warm-up count: a flood is let through until it exceeds the limit. */
function recordFlood(refused) {
  if (Date.now() - exec.scenario.startTime >= GRACE_MS) floodRefused.add(refused);
}

export async function setup() {
  if (ROLE !== 'flood' || !FLOODS.includes('gated')) return {};
  // flood_gated needs a valid token: the proxy limit applies after the token check.
  const { res: cres, challenge } = requestChallenge(GATE);
  if (!challenge || challenge.pow) {
    note('setup: no challenge for the flood token (is the flood certificate still cooling down from an earlier run?)', challenge ? undefined : cres);
    return { token: null };
  }
  const { res, token } = requestToken(GATE, challenge.challenge_id, await signProof(await signingKey(AGENT), challenge));
  if (!token) note('setup: no flood token', res);
  return { token: token || null };
}

export function floodChallenge() {
  const { res } = requestChallenge(GATE, { flood: 'challenge' });
  recordFlood(floodAnswer(res, 'challenge', [201]));
}

export function floodGated(data) {
  if (!data.token) {
    floodUnexpected.add(1, { step: 'gated', code: 'no_token' });
    return;
  }
  const res = gatedCall(GATE, data.token, { flood: 'gated' });
  recordFlood(floodAnswer(res, 'gated', [200]));
}

/** A well-formed proof with a wrong signature: refused at step 10, counted by the cooldown. */
const BAD_SIGNATURE = b64urlString('x'.repeat(64));
export async function floodProofs() {
  try {
    const { res: cres, challenge } = requestChallenge(GATE, { flood: 'proofs' });
    if (!challenge) return recordFlood(floodAnswer(cres, 'challenge', [201]));
    floodAnswer(cres, 'challenge', [201]);
    const good = await signProof(await signingKey(AGENT), challenge);
    const forged = `${good.slice(0, good.lastIndexOf('.'))}.${BAD_SIGNATURE}`;
    const { res } = requestToken(GATE, challenge.challenge_id, forged, { flood: 'proofs' });
    recordFlood(floodAnswer(res, 'token', [403]));
  } catch (err) {
    scriptErrors.add(1);
    console.error(`flood_proofs: ${err}`);
  }
}

/** The well-behaved agent: one complete flow, any refusal counts against the gate. */
const CALLS = int('K6_GOOD_CALLS', 3);
function goodAnswer(res, step, want) {
  if (res.status === 0 || res.status >= 500) serverErrors.add(1, { step, code: problemCode(res) });
  if (res.status === 429 || res.status === 503) goodRefused.add(1, { step, code: problemCode(res) });
  if (res.status !== want) note(`good agent ${step} refused`, res);
  return res.status === want;
}
export async function goodAgent() {
  let ok = false;
  try {
    const { res: cres, challenge } = requestChallenge(GATE);
    if (!goodAnswer(cres, 'challenge', 201) || !challenge) return;
    if (challenge.pow) return note(`good agent: challenge demands proof-of-work (difficulty ${challenge.pow.difficulty}); run against GATE_POW=off`);
    const { res, token } = requestToken(GATE, challenge.challenge_id, await signProof(await signingKey(AGENT), challenge));
    if (!goodAnswer(res, 'token', 200) || !token) return;
    for (let i = 0; i < CALLS; i++) if (!goodAnswer(gatedCall(GATE, token), 'gated', 200)) return;
    ok = true;
  } catch (err) {
    scriptErrors.add(1);
    console.error(`good_agent: ${err}`);
  } finally {
    goodFlowOk.add(ok);
  }
}
