/* global open, console */
/**
 * Talking to the gate from k6: target URLs, agent certificates (read in the init context, the
 * only place k6 can read files), the three requests of an agent, and response classification.
 */
import http from 'k6/http';
import { str } from './env.js';
import { b64urlDecodeString, importAgentKey, pkcs8FromPem } from './proof.js';

/** The gate's path prefix P (PROTOCOL.md section 1). */
export const PREFIX = str('K6_GATE_PREFIX', '/.agent-gate').replace(/\/+$/, '');
/** Gated path the scripts call (anything outside P is proxied to the upstream). */
export const GATED_PATH = str('K6_GATED_PATH', '/load/probe');
if (!GATED_PATH.startsWith('/') || GATED_PATH === PREFIX || GATED_PATH.startsWith(`${PREFIX}/`)) {
  throw new Error(`K6_GATED_PATH must be a path outside ${PREFIX}, got ${JSON.stringify(GATED_PATH)}`);
}

/** Host name of an https URL (what k6 matches `tlsAuth[].domains` against). */
export function hostOf(url) {
  const m = /^https:\/\/(\[[^\]]+\]|[^/:?#]+)(:\d+)?(\/.*)?$/i.exec(url);
  if (!m) throw new Error(`gate URL must be https://host[:port], got ${JSON.stringify(url)}`);
  return m[1].replace(/^\[|\]$/g, '').toLowerCase();
}

/** The endpoints of one gate base URL (`K6_GATE_URL` and friends). */
export function gateTarget(url) {
  const base = url.replace(/\/+$/, '');
  return {
    base,
    host: hostOf(base),
    challenge: `${base}${PREFIX}/v1/challenge`,
    token: `${base}${PREFIX}/v1/token`,
    gated: `${base}${GATED_PATH}`,
  };
}

/**
 * Reads an agent's certificate and PKCS#8 key (init context only). Relative paths resolve
 * against the script's directory (k6 `open()` rules): prefer absolute paths.
 */
export function loadAgent(certVar, keyVar) {
  const certPath = str(certVar, undefined);
  const keyPath = str(keyVar, undefined);
  if (!certPath || !keyPath) throw new Error(`${certVar} and ${keyVar} are required: the agent's client certificate and its PKCS#8 P-256 key (PEM files)`);
  const cert = open(certPath);
  const key = open(keyPath);
  return { certVar, cert, key, pkcs8: pkcs8FromPem(key, keyVar) };
}

/**
 * The `tlsAuth` option for `agent`. k6 presents one client certificate per process: with
 * several entries Go's TLS client picks the first one the server's CA list accepts, whatever
 * `domains` says (checked with k6 v1.3), so scripts that need two agents run two k6 processes.
 */
export function tlsAuthFor(agent) {
  return [{ cert: agent.cert, key: agent.key }];
}

/** Per-VU cache of imported keys (each VU has its own copy of this module). */
const keys = {};
/** The agent's WebCrypto signing key, imported once per VU. */
export function signingKey(agent) {
  if (!keys[agent.certVar]) keys[agent.certVar] = importAgentKey(agent.pkcs8);
  return keys[agent.certVar];
}

/** `POST P/v1/challenge` (empty body); `challenge` is the parsed JSON on 201. */
export function requestChallenge(target, tags) {
  const res = http.post(target.challenge, null, { tags: { step: 'challenge', ...tags }, responseCallback: ANY_STATUS });
  return { res, challenge: res.status === 201 ? parseJson(res) : undefined };
}

/** `POST P/v1/token`; `token` is the access token on 200. */
export function requestToken(target, challengeId, proof, tags) {
  const res = http.post(target.token, JSON.stringify({ challenge_id: challengeId, proof }), {
    headers: { 'content-type': 'application/json' },
    tags: { step: 'token', ...tags },
    responseCallback: ANY_STATUS,
  });
  const body = res.status === 200 ? parseJson(res) : undefined;
  return { res, token: body && typeof body.access_token === 'string' ? body.access_token : undefined };
}

/** The token request body for a storm of replays (same bytes for every submission). */
export function tokenRequest(target, challengeId, proof, tags) {
  return {
    method: 'POST',
    url: target.token,
    body: JSON.stringify({ challenge_id: challengeId, proof }),
    params: { headers: { 'content-type': 'application/json' }, tags: { step: 'token', ...tags }, responseCallback: ANY_STATUS },
  };
}

/** One gated call with a bearer token. */
export function gatedCall(target, token, tags) {
  return http.get(target.gated, { headers: { authorization: `Bearer ${token}` }, tags: { step: 'gated', ...tags }, responseCallback: ANY_STATUS });
}

/**
 * Every status is an expected outcome somewhere (409 in the replay storm, 429 in floods), so
 * `http_req_failed` is not used for verdicts; the scripts classify responses themselves.
 */
export const ANY_STATUS = http.expectedStatuses({ min: 100, max: 599 });

/** The body as JSON, or undefined. */
export function parseJson(res) {
  try {
    return res.json();
  } catch {
    return undefined;
  }
}

/** The problem+json `code` of a refusal, `transport` when no HTTP answer came, else `http_<status>`. */
export function problemCode(res) {
  if (res.status === 0) return 'transport';
  const body = parseJson(res);
  return body && typeof body.code === 'string' ? body.code : `http_${res.status}`;
}

/** Expiry of an access token in Unix ms, from its `exp` claim (no verification: the gate does that). */
export function tokenExpMs(token) {
  try {
    const claims = JSON.parse(b64urlDecodeString(token.split('.')[1] || ''));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/**
 * Logs the first few unexpected answers of each VU (status, code, step), so a failing threshold
 * comes with its cause in k6's output, without flooding it.
 */
const noted = { n: 0 };
export function note(what, res) {
  if (noted.n >= 3) return;
  noted.n++;
  const body = res ? (res.status === 0 ? res.error : problemCode(res)) : '';
  const limiter = res && res.status === 429 ? ` (${limiterOf(res)})` : '';
  console.warn(`${what}${res ? `: ${res.status} ${body}${limiter}` : ''}`);
}

/**
 * k6 has no CA option: Go takes the trusted roots from `SSL_CERT_FILE`. `K6_CA_CERT` names
 * the gate's CA so a run whose environment forgot it stops here with the fix, instead of
 * failing every request with an x509 error.
 */
export function checkCa() {
  const ca = str('K6_CA_CERT', undefined);
  if (ca === undefined) return;
  const sys = str('SSL_CERT_FILE', undefined);
  if (sys !== ca) {
    throw new Error(`K6_CA_CERT=${ca} but SSL_CERT_FILE=${sys ?? '(unset)'}: k6 has no CA option, run it as SSL_CERT_FILE=${ca} k6 run ... (and keep system environment variables visible to the script)`);
  }
}
checkCa();

/** A server failure: 5xx, or no HTTP answer at all (status 0: reset, refused, timed out). */
export function isServerFailure(res) {
  return res.status === 0 || res.status >= 500;
}

/** The limiter a 429 names in its `RateLimit-Policy` header (`"challenge_identity";q=60;w=60`), or `unknown`. */
export function limiterOf(res) {
  for (const [name, value] of Object.entries(res.headers || {})) {
    if (name.toLowerCase() === 'ratelimit-policy') {
      const m = /^"([^"]+)"/.exec(String(value));
      if (m) return m[1];
    }
  }
  return 'unknown';
}

/** The limiters of PROTOCOL.md section 10 (`rate_limited_total{limiter}`). */
export const LIMITERS = ['challenge_ip', 'challenge_identity', 'token_identity', 'proxy_identity', 'failed_proof'];
