/* global console */
/**
 * Replay storm (PROTOCOL.md section 4, step 8): each iteration takes one challenge, signs one
 * proof, and submits that same `{challenge_id, proof}` K6_REPLAYS times at once (`http.batch`,
 * one connection each), spread round-robin over K6_REPLAY_URLS (several gate instances sharing
 * one store), then K6_LATE_REPLAYS more times after the storm settled.
 *
 * Verdict, per challenge: exactly one 200 with a token, every other submission 409
 * `challenge_replayed`. `extra_tokens` (a second token for one challenge) is the security
 * failure; `unexpected_status` is anything else (429, 404, 5xx, a 408 winner...).
 */
import http from 'k6/http';
import { Counter, Rate } from 'k6/metrics';
import { duration, int, list, num, perf, perSecond, str, TREND_STATS, vusFor } from './lib/env.js';
import { gateTarget, isServerFailure, loadAgent, note, parseJson, problemCode, requestChallenge, signingKey, tlsAuthFor, tokenRequest } from './lib/gate.js';
import { signProof } from './lib/proof.js';

const AGENT = loadAgent('K6_AGENT_CERT', 'K6_AGENT_KEY');
const GATE = gateTarget(str('K6_GATE_URL', 'https://127.0.0.1:8443'));
const TARGETS = list('K6_REPLAY_URLS', [GATE.base]).map(gateTarget);
const RATE = num('K6_RATE', 2, 0.001);
const REPLAYS = int('K6_REPLAYS', 20, 2);
const LATE = int('K6_LATE_REPLAYS', 1, 0);

const serverErrors = new Counter('server_errors');
const scriptErrors = new Counter('script_errors');
const tokensIssued = new Counter('tokens_issued');
const replaysRefused = new Counter('replays_refused');
const extraTokens = new Counter('extra_tokens');
const unexpected = new Counter('unexpected_status');
const onePerChallenge = new Rate('one_token_per_challenge');

const thresholds = {
  one_token_per_challenge: ['rate==1'],
  extra_tokens: ['count==0'],
  unexpected_status: ['count==0'],
  server_errors: ['count==0'],
  script_errors: ['count==0'],
};
perf(thresholds, 'http_req_duration{step:token}', [`p(99)<${num('K6_P99_TOKEN_MS', 500)}`]);
perf(thresholds, 'dropped_iterations', ['count==0']);

export const options = {
  tlsAuth: tlsAuthFor(AGENT),
  // Every submission of a storm in flight at once, each on its own connection.
  batch: REPLAYS,
  batchPerHost: REPLAYS,
  summaryTrendStats: TREND_STATS,
  scenarios: {
    storms: {
      executor: 'constant-arrival-rate',
      ...perSecond(RATE),
      duration: duration('K6_RUN_DURATION', '1m'),
      preAllocatedVUs: int('K6_PRE_VUS', vusFor(RATE, 1000), 1),
      maxVUs: int('K6_MAX_VUS', vusFor(RATE, 5000), 1),
      exec: 'storm',
    },
  },
  thresholds,
};

function tally(res, step) {
  if (isServerFailure(res)) serverErrors.add(1, { step, code: problemCode(res) });
}

/** One challenge, one proof, many submissions. */
export async function storm() {
  try {
    const target = TARGETS[Math.floor(Math.random() * TARGETS.length)];
    const { res: cres, challenge } = requestChallenge(target);
    tally(cres, 'challenge');
    if (!challenge || challenge.pow) {
      unexpected.add(1, { step: 'challenge', code: challenge ? 'pow_demanded' : problemCode(cres) });
      return note(challenge ? 'challenge demands proof-of-work; run against GATE_POW=off' : 'challenge refused', challenge ? undefined : cres);
    }
    const proof = await signProof(await signingKey(AGENT), challenge);
    const requests = [];
    for (let i = 0; i < REPLAYS; i++) requests.push(tokenRequest(TARGETS[i % TARGETS.length], challenge.challenge_id, proof, { phase: 'storm' }));
    const answers = http.batch(requests);
    for (let i = 0; i < LATE; i++) {
      const late = tokenRequest(TARGETS[i % TARGETS.length], challenge.challenge_id, proof, { phase: 'late' });
      answers.push(http.request(late.method, late.url, late.body, late.params));
    }
    let tokens = 0;
    let others = 0;
    for (const res of answers) {
      tally(res, 'token');
      if (res.status === 200) {
        const body = parseJson(res);
        if (body && typeof body.access_token === 'string') tokens++;
        else others++;
      } else if (res.status === 409 && problemCode(res) === 'challenge_replayed') {
        replaysRefused.add(1);
      } else {
        others++;
        unexpected.add(1, { step: 'token', code: problemCode(res) });
        note('unexpected answer to a replayed proof', res);
      }
    }
    tokensIssued.add(tokens);
    if (tokens > 1) {
      extraTokens.add(tokens - 1);
      console.error(`challenge ${challenge.challenge_id}: ${tokens} tokens for one proof`);
    }
    onePerChallenge.add(tokens === 1 && others === 0);
  } catch (err) {
    scriptErrors.add(1);
    console.error(`storm: ${err}`);
  }
}
