/**
 * The agent-side client of agent-gate: mutual TLS with the agent's certificate, the
 * challenge → proof → token flow (PROTOCOL.md sections 3 and 4) with token caching and
 * proactive refresh, and gated requests with `Authorization: Bearer` (section 5).
 *
 * One undici `Pool` per client keeps connections alive and resumes TLS sessions with the newest
 * session it was sent (./connector.ts), because a new mTLS handshake costs the gate more CPU
 * than a whole token flow (load/RESULTS.md, row 2c).
 *
 * Hardening: https only; redirects never followed; optional public-key pinning of the gate
 * (./pin.ts); retries with jitter on 429/503 only where they are safe (./retry.ts).
 * @module
 */
import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import { Pool } from 'undici';
import { checkCaBundle } from '../lib/pem.js';
import { GateClientError } from './client-error.js';
import { sessionKeepingConnector } from './connector.js';
import { parsePins, pinnedServerIdentity } from './pin.js';
import { solvePowAsync } from './pow.js';
import { createProof, proofAlgFor, type ProofAlg, type ProofOverrides } from './proof.js';
import {
  GATE_MAX_RESPONSE_BYTES,
  headerValue,
  isGateProblem,
  ownRefusalCode,
  parseProblem,
  rawResponse,
  readBounded,
  REQUEST_MAX_RESPONSE_BYTES,
  retryAfterSeconds,
  type RawResponse,
} from './response.js';
import {
  CONNECTION_RETRY_MAX_MS,
  DEFAULT_MAX_RETRIES,
  isConnectionError,
  isGateRetryableRefusal,
  refusalDelayMs,
  SAFE_METHODS,
} from './retry.js';
import { parseChallenge, parseToken, type Challenge, type GateRequestInit, type TokenResponse } from './wire.js';

export type { Challenge, GateRequestInit, TokenResponse } from './wire.js';

/** Options of a {@link GateClient}. */
export interface GateClientOptions {
  /** Gate base URL, https://host:port (the gate's path prefix is appended for gate endpoints). */
  baseUrl: string;
  /** Agent certificate chain, PEM (leaf first). */
  cert: string | Buffer;
  /** Agent private key, PEM (PKCS#8 or traditional), unencrypted. */
  key: string | Buffer;
  /** CA bundle (PEM) to verify the gate's server certificate; the system roots when absent. One without a certificate is refused. */
  ca?: string | Buffer;
  /** The gate's path prefix, default `/.agent-gate`. */
  pathPrefix?: string;
  /**
   * Start refreshing a cached token this many seconds before it expires. Default 30, or 10%
   * of the token's lifetime when that is shorter; an explicit value is capped at half the
   * lifetime. The refresh runs in the background: callers keep getting the cached token until
   * it is about to expire (the last min(5 s, half this margin) of its life), and only then wait.
   */
  refreshBeforeExpiryS?: number;
  /**
   * Called with the error of a failed background refresh (the token is still valid; the next
   * call after a short pause tries again). Never called for foreground failures, which reject.
   */
  onRefreshError?: (err: unknown) => void;
  /** Timeout of one HTTP exchange (headers and body), default 30000. */
  requestTimeoutMs?: number;
  /**
   * Longest `Retry-After` (seconds) that is waited out before a retry, default 10. A longer
   * one is not waited for: the 429/503 is returned (request) or thrown (token flow).
   */
  maxRetryAfterS?: number;
  /**
   * Retries per call after a 429/503 (Retry-After plus jitter, or backoff for a 503 without
   * Retry-After); default 2, 0 disables them. See the README section on retries for which
   * requests are retried.
   */
  maxRetries?: number;
  /**
   * Public-key pins of the gate, `sha256/<base64 of SHA-256 over the DER SubjectPublicKeyInfo>`
   * (HPKP format, see {@link spkiPin}). Checked on every new TLS connection in addition to
   * normal verification; the leaf or any certificate of its verified chain may match. List a
   * backup pin (e.g. the next key, or the issuing CA) so that a key rotation does not lock
   * agents out. A mismatch fails with {@link GateClientError} `pin_mismatch` and is not retried.
   */
  pins?: string[];
  /** SNI and the name the gate's certificate must match; default the host of `baseUrl`. */
  servername?: string;
  /**
   * Supplies an attestation JWT for a challenge (PROTOCOL.md section 8): bound to the
   * challenge `nonce` and to this certificate's thumbprint (`cnf.x5t#S256`).
   */
  attestation?: (challenge: Challenge, thumbprint: string) => string | Promise<string>;
}

const DEFAULT_PREFIX = '/.agent-gate';
const DEFAULT_REFRESH_BEFORE_S = 30;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RETRY_AFTER_S = 10;
/** A cached token is handed out until at most this close to its expiry (then callers wait). */
const EXPIRY_SAFETY_S = 5;
/** Pause after a failed background refresh before the next one (unless Retry-After says more). */
const BACKGROUND_RETRY_MS = 2000;
const USER_AGENT = 'agent-gate-client/1';
/** 401 codes a fresh token can cure; any other gate 401 is returned as is. */
const TOKEN_CODES = new Set(['token_missing', 'token_invalid', 'token_expired']);

interface CachedToken {
  token: TokenResponse;
  /** Local time (ms) from which a background refresh is started. */
  refreshAt: number;
  /** Local time (ms) from which the token is no longer handed out. */
  staleAt: number;
}

function fail(what: string): never {
  throw new TypeError(`GateClient: ${what}`);
}

function toPem(v: string | Buffer): string {
  return typeof v === 'string' ? v : v.toString('utf8');
}

/**
 * A client of one gate, authenticating with one agent certificate. Safe for concurrent
 * use; call {@link GateClient.close} when done so keep-alive sockets are released.
 */
export class GateClient {
  /** The gate origin, `https://host:port`. */
  readonly origin: string;
  /** The gate's path prefix, without a trailing slash. */
  readonly pathPrefix: string;
  /** The proof algorithm of the agent key. */
  readonly proofAlg: ProofAlg;
  /** base64url SHA-256 of the leaf certificate's DER (the token's `cnf.x5t#S256`). */
  readonly thumbprint: string;

  readonly #key: KeyObject;
  readonly #pool: Pool;
  readonly #timeoutMs: number;
  readonly #maxRetryAfterS: number;
  readonly #maxRetries: number;
  readonly #refreshBeforeS: number;
  readonly #refreshExplicit: boolean;
  /** Aborts Retry-After waits and proof-of-work on close(). */
  readonly #closing = new AbortController();
  #closed = false;
  #cached: CachedToken | undefined;
  #inflight: Promise<string> | undefined;
  /** No background refresh starts before this local time (ms), after one failed. */
  #backgroundNotBefore = 0;
  readonly #attestation: GateClientOptions['attestation'];
  readonly #onRefreshError: GateClientOptions['onRefreshError'];

  constructor(opts: GateClientOptions) {
    this.#attestation = opts.attestation;
    this.#onRefreshError = opts.onRefreshError;
    let url: URL;
    try {
      url = new URL(opts.baseUrl);
    } catch {
      fail(`baseUrl is not a URL: ${String(opts.baseUrl)}`);
    }
    if (url.protocol !== 'https:') fail(`baseUrl must be https:// (got ${url.protocol})`);
    if (url.username || url.password) fail('baseUrl must not carry credentials');
    if (url.pathname !== '/' || url.search || url.hash) {
      fail('baseUrl must be an origin (https://host:port) without path, query or fragment');
    }
    this.origin = url.origin;

    const prefix = opts.pathPrefix ?? DEFAULT_PREFIX;
    if (!prefix.startsWith('/') || /[?#\s]/.test(prefix)) fail('pathPrefix must be an absolute path');
    this.pathPrefix = prefix.replace(/\/+$/, '');

    try {
      this.#key = createPrivateKey(opts.key);
    } catch (err) {
      throw new TypeError('GateClient: key is not a readable unencrypted private key', { cause: err });
    }
    this.proofAlg = proofAlgFor(this.#key);
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(opts.cert);
    } catch (err) {
      throw new TypeError('GateClient: cert is not a PEM certificate', { cause: err });
    }
    if (!leaf.checkPrivateKey(this.#key)) fail('key does not belong to the (first) certificate of cert');
    this.thumbprint = createHash('sha256').update(leaf.raw).digest('base64url');

    const num = (v: number | undefined, dflt: number, name: string, min: number): number => {
      if (v === undefined) return dflt;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min) fail(`${name} must be a number >= ${min}`);
      return v;
    };
    this.#timeoutMs = num(opts.requestTimeoutMs, DEFAULT_TIMEOUT_MS, 'requestTimeoutMs', 1);
    this.#maxRetryAfterS = num(opts.maxRetryAfterS, DEFAULT_MAX_RETRY_AFTER_S, 'maxRetryAfterS', 0);
    this.#maxRetries = num(opts.maxRetries, DEFAULT_MAX_RETRIES, 'maxRetries', 0);
    if (!Number.isInteger(this.#maxRetries)) fail('maxRetries must be an integer');
    const pins = opts.pins === undefined ? undefined : parsePins(opts.pins);
    this.#refreshBeforeS = num(opts.refreshBeforeExpiryS, DEFAULT_REFRESH_BEFORE_S, 'refreshBeforeExpiryS', 0);
    this.#refreshExplicit = opts.refreshBeforeExpiryS !== undefined;

    // One TLS context for every connection of this client. Given the PEMs instead, tls.connect
    // parses them into a new context per connection: ~0.9 ms of CPU each with Node 20's
    // OpenSSL 3.0, paid on every reconnect.
    let ca: string | undefined;
    if (opts.ca !== undefined) {
      ca = toPem(opts.ca);
      // Node's TLS takes an empty ca to mean the system roots (an empty --ca file would widen the
      // trust it was meant to narrow) and skips what it cannot read, failing only at connect.
      try {
        checkCaBundle(ca);
      } catch (err) {
        const { message, cause } = err as Error;
        throw new TypeError(`GateClient: ca ${message}`, cause === undefined ? undefined : { cause });
      }
    }
    let secureContext: SecureContext;
    try {
      secureContext = createSecureContext({ cert: toPem(opts.cert), key: opts.key, ...(ca !== undefined ? { ca } : {}), minVersion: 'TLSv1.2' });
    } catch (err) {
      // The leaf and key were checked above: what is left is the rest of the cert chain.
      throw new TypeError('GateClient: cert chain cannot be loaded for TLS', { cause: err });
    }
    this.#pool = new Pool(this.origin, {
      // Resumes with the newest session, held by the client (./connector.ts).
      connect: sessionKeepingConnector({
        secureContext,
        ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
        rejectUnauthorized: true,
        // Fresh handshakes only, after the chain verified: host name check, then the pins. A
        // resumed session skips it; sessions come only from connections that passed it.
        ...(pins ? { checkServerIdentity: pinnedServerIdentity(pins) } : {}),
        timeout: Math.min(this.#timeoutMs, 10_000),
        keepAlive: true,
      }),
      // Idle keep-alive when the server sends no Keep-Alive hint; a hint wins.
      keepAliveTimeout: 10_000,
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
    });
  }

  /**
   * A valid access token. The cached one is returned at once while it is valid; within the
   * refresh margin before its expiry a background flow fetches the next one meanwhile, so
   * callers do not wait. Only without a usable token (none yet, or in its last seconds) do
   * callers wait for a flow. Concurrent callers share one in-flight flow. Throws
   * {@link GateClientError} when the gate refuses.
   */
  async getToken(): Promise<string> {
    this.#assertOpen();
    const c = this.#cached;
    const now = Date.now();
    if (c && now < c.staleAt) {
      if (now >= c.refreshAt) this.#refreshInBackground(now);
      return c.token.access_token;
    }
    return this.#sharedFlow();
  }

  /** The in-flight token flow, started when there is none. */
  #sharedFlow(): Promise<string> {
    if (!this.#inflight) {
      const p = this.fetchToken().then((t) => t.access_token);
      this.#inflight = p;
      const clear = () => {
        if (this.#inflight === p) this.#inflight = undefined;
      };
      p.then(clear, clear);
    }
    return this.#inflight;
  }

  #refreshInBackground(now: number): void {
    if (this.#inflight || now < this.#backgroundNotBefore) return;
    this.#sharedFlow().catch((err: unknown) => {
      const retryAfterMs = err instanceof GateClientError && err.retryAfterS !== undefined ? err.retryAfterS * 1000 : 0;
      this.#backgroundNotBefore = Date.now() + Math.max(BACKGROUND_RETRY_MS, retryAfterMs);
      if (this.#closed) return;
      try {
        this.#onRefreshError?.(err);
      } catch {
        // A throwing callback must not become an unhandled rejection.
      }
    });
  }

  /**
   * Runs a fresh challenge → proof → token flow (never shared, never from cache), caches its
   * token and returns the full token response. Every attempt is a new challenge, so a retry
   * never replays anything: after a 429/503 from a gate endpoint the flow is run again, up to
   * `maxRetries` times, after Retry-After plus jitter (when at most `maxRetryAfterS`) or, for a
   * 503 without Retry-After, a jittered backoff; after a connection error, once, after a short
   * random pause.
   * Redirects, pin mismatches and every other refusal are thrown as they are.
   */
  async fetchToken(): Promise<TokenResponse> {
    let retries = 0;
    let connectionRetried = false;
    for (;;) {
      try {
        return await this.#flow();
      } catch (err) {
        let delay: number | undefined;
        if (err instanceof GateClientError) {
          if (retries < this.#maxRetries) delay = refusalDelayMs(err.status, err.retryAfterS, retries, this.#maxRetryAfterS);
          if (delay === undefined) throw err;
          retries++;
        } else if (!connectionRetried && !this.#closed && isConnectionError(err)) {
          connectionRetried = true;
          delay = Math.random() * CONNECTION_RETRY_MAX_MS;
        } else {
          throw err;
        }
        await this.#sleep(delay);
      }
    }
  }

  async #flow(): Promise<TokenResponse> {
    this.#assertOpen();
    const started = Date.now();
    const ch = await this.challenge();
    if (!ch.algs.includes(this.proofAlg)) {
      throw new Error(`the gate does not offer ${this.proofAlg}, the algorithm of this agent key (offers: ${ch.algs.join(', ')})`);
    }
    let work: string | undefined;
    if (ch.pow) {
      if (ch.pow.alg !== 'sha256') throw new Error(`unsupported proof-of-work alg: ${ch.pow.alg}`);
      work = await solvePowAsync(ch.nonce, ch.pow.difficulty, undefined, this.#closing.signal);
    }
    const proof = await this.signProof(ch);
    const attestation = this.#attestation ? await this.#attestation(ch, this.thumbprint) : undefined;
    const res = await this.submitProof({
      challenge_id: ch.challenge_id,
      proof,
      ...(work !== undefined ? { work } : {}),
      ...(attestation !== undefined ? { attestation } : {}),
    });
    if (res.status !== 200) throw GateClientError.fromResponse(res, 'token');
    const token = parseToken(res);
    const expiresAt = started + token.expires_in * 1000;
    const marginS = this.#marginS(token.expires_in);
    this.#cached = {
      token,
      refreshAt: expiresAt - marginS * 1000,
      staleAt: expiresAt - Math.min(EXPIRY_SAFETY_S, marginS / 2) * 1000,
    };
    this.#backgroundNotBefore = 0;
    return token;
  }

  #marginS(lifetimeS: number): number {
    return this.#refreshExplicit
      ? Math.min(this.#refreshBeforeS, lifetimeS / 2)
      : Math.min(this.#refreshBeforeS, lifetimeS / 10);
  }

  /** `POST {prefix}/v1/challenge`; the parsed 201 body. Throws {@link GateClientError} otherwise. */
  async challenge(): Promise<Challenge> {
    const res = await this.#exchange(`${this.pathPrefix}/v1/challenge`, {
      method: 'POST',
      headers: { accept: 'application/json, application/problem+json' },
    }, GATE_MAX_RESPONSE_BYTES);
    if (res.status !== 201) throw GateClientError.fromResponse(res, 'challenge');
    return parseChallenge(res);
  }

  /** The compact JWS proof for `ch` (section 4), with optional header/payload overrides for tests. */
  signProof(ch: Challenge, overrides?: ProofOverrides): Promise<string> {
    return createProof(this.#key, this.proofAlg, ch, overrides);
  }

  /** `POST {prefix}/v1/token` with `body` as JSON; the raw response, whatever its status. */
  submitProof(body: Record<string, unknown>): Promise<RawResponse> {
    return this.#exchange(`${this.pathPrefix}/v1/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, application/problem+json' },
      body: JSON.stringify(body),
    }, GATE_MAX_RESPONSE_BYTES);
  }

  /**
   * Calls `path` (absolute path with optional query, outside the gate prefix) on the protected
   * upstream through the gate, with `Authorization: Bearer <token>`, and returns the response
   * whatever its status. The body is read completely, up to {@link REQUEST_MAX_RESPONSE_BYTES}
   * (64 MiB; more is an error). A caller-supplied `Authorization` header is replaced; a `Host`
   * header is refused.
   *
   * - Redirects (3xx) are returned untouched, never followed.
   * - A 401 that a new token can cure: the token is refreshed and the request sent once more.
   * - 429/503: retried up to `maxRetries` times, after Retry-After plus jitter (only when it
   *   is at most `maxRetryAfterS`) or, for a 503 without Retry-After, a jittered backoff.
   * - Connection errors: retried once.
   *
   * Safe methods (GET, HEAD, OPTIONS) are retried in all these cases. Any other method is
   * retried only when the gate itself refused it before forwarding (problem+json of the
   * contract: a token code for 401; `rate_limited`, `overloaded`, `store_unavailable` or
   * `revocation_unavailable` for 429/503), never after a connection error or an answer that
   * may come from the upstream or a proxy, which may have acted on it.
   */
  async request(path: string, init: GateRequestInit = {}): Promise<RawResponse> {
    if (typeof path !== 'string' || !path.startsWith('/')) throw new TypeError('request path must start with "/"');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(init.headers ?? {})) {
      const n = name.toLowerCase();
      if (n === 'host') throw new TypeError('request: the Host header is set from baseUrl');
      if (n === 'authorization') continue;
      headers[n] = value;
    }
    const method = init.method ?? 'GET';
    const safe = SAFE_METHODS.has(method.toUpperCase());
    let connectionRetried = false;
    const send = async (token: string): Promise<RawResponse> => {
      for (;;) {
        try {
          return await this.#exchange(path, {
            method,
            headers: { ...headers, authorization: `Bearer ${token}` },
            ...(init.body !== undefined ? { body: init.body } : {}),
          }, REQUEST_MAX_RESPONSE_BYTES);
        } catch (err) {
          if (!safe || connectionRetried || this.#closed || !isConnectionError(err)) throw err;
          connectionRetried = true;
          await this.#sleep(Math.random() * CONNECTION_RETRY_MAX_MS);
        }
      }
    };

    let token = await this.getToken();
    let res = await send(token);
    let refreshed = false;
    let retries = 0;
    for (;;) {
      if (res.status === 401 && !refreshed && this.#tokenCanCure(res, safe)) {
        refreshed = true;
        this.#invalidate(token);
        token = await this.getToken();
        res = await send(token);
        continue;
      }
      if ((res.status === 429 || res.status === 503) && retries < this.#maxRetries && (safe || isGateRetryableRefusal(res))) {
        const retryAfterS = retryAfterSeconds(headerValue(res.headers, 'retry-after'));
        const delay = refusalDelayMs(res.status, retryAfterS, retries, this.#maxRetryAfterS);
        if (delay !== undefined) {
          retries++;
          await this.#sleep(delay);
          token = await this.getToken();
          res = await send(token);
          continue;
        }
      }
      return res;
    }
  }

  /**
   * Stops the client: later calls fail, Retry-After waits and proof-of-work are abandoned,
   * in-flight HTTP exchanges finish, then the connections are closed. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cached = undefined;
    this.#closing.abort(new Error('GateClient closed'));
    await this.#pool.close();
  }

  /**
   * Whether a new token may cure a 401. A 401 from the gate with a non-token code (e.g.
   * client_cert_required) never; for a method that is not safe, only the gate's own token
   * refusal (given before forwarding), not a 401 that may come from the upstream.
   */
  #tokenCanCure(res: RawResponse, safe: boolean): boolean {
    if (!safe) {
      // Only the gate's own refusal: then nothing was forwarded and sending again cannot repeat
      // what the API did.
      const code = ownRefusalCode(res);
      return code !== undefined && TOKEN_CODES.has(code);
    }
    const problem = parseProblem(res);
    return !isGateProblem(problem) || TOKEN_CODES.has(problem.code);
  }

  #invalidate(token: string): void {
    if (this.#cached?.token.access_token === token) this.#cached = undefined;
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error('GateClient is closed');
  }

  async #sleep(ms: number): Promise<void> {
    if (ms > 0) await sleep(ms, undefined, { signal: this.#closing.signal });
    this.#assertOpen();
  }

  async #exchange(
    path: string,
    req: { method: string; headers: Record<string, string>; body?: string | Buffer },
    limit: number,
  ): Promise<RawResponse> {
    this.#assertOpen();
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    try {
      const res = await this.#pool.request({
        path,
        method: req.method,
        headers: { 'user-agent': USER_AGENT, ...req.headers },
        body: req.body ?? null,
        signal: timeout,
      });
      const body = await readBounded(res.body, limit, headerValue(res.headers, 'content-length'));
      // undici hands a keep-alive socket back to the pool only one event-loop turn after a
      // response completes (setImmediate); a request dispatched before that opens a second
      // connection, i.e. a new mTLS handshake. Yielding once keeps sequential use
      // (challenge -> token -> request -> ...) on one connection.
      await new Promise<void>((resolve) => setImmediate(resolve));
      return rawResponse(res.statusCode, res.headers, body);
    } catch (err) {
      if (timeout.aborted) {
        throw new Error(`agent-gate request ${req.method} ${path} timed out after ${this.#timeoutMs} ms`, { cause: err });
      }
      throw err;
    }
  }
}
