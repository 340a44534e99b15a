/**
 * The one table of `GATE_*` variables (docs/protocol.md section 12). Each entry holds the
 * variable's parser, its default per profile, its one-line doc, whether it is a secret (masked by
 * `config check`), and the refusals of section 11 that depend on its value alone. Everything else
 * comes from here: the zod schema (schema.ts), the value types of `GateConfig` (load.ts), the
 * masking (mask.ts), those refusals, and docs/reference/configuration.md (`npm run docs:gen`).
 *
 * A NEW OPTION GOES HERE, and only here for its name, default and doc: add an entry below, map it
 * into `GateConfig` in load.ts (`resolve`), add its row to section 12 of docs/protocol.md
 * (test/config/options.test.ts fails until both agree), then run `npm run docs:gen`.
 * Refusals that involve several variables stay in load.ts (`checkPolicy`).
 * @module
 */
import { z } from 'zod';
import { DEFAULT_MAX_CONNECTIONS_PER_ADDRESS } from '../http/connections.js';
import { passHeaderProblem } from '../proxy/headers.js';

/** The deployment profiles (`GATE_ENV`), least strict first. */
export const PROFILES = ['dev', 'staging', 'prod'] as const;
/** Deployment profile. */
export type GateEnv = (typeof PROFILES)[number];

/** A default in the variable's own text form: one for every profile, or one per profile. */
export type OptionDefault = string | Readonly<Record<GateEnv, string>>;

/** A refusal of section 11 that the variable's own value decides. */
export interface OptionRefusal<T> {
  /** The profiles that refuse. */
  in: readonly GateEnv[];
  /** True for a refused value (method syntax: checked bivariantly against the table's type). */
  when(value: T): boolean;
  /** The `why` of the violation line; also printed on the reference page. */
  why: string;
}

/** How `config check` hides a secret: where it lands in `GateConfig`, and how it is masked. */
export interface OptionSecret {
  /** Dotted path into `GateConfig` (its value a string or a list of strings). */
  at: string;
  /** The printable form of one string value. */
  mask(value: string): string;
}

/** One `GATE_*` variable. */
export interface Option<S extends z.ZodType = z.ZodType, D extends OptionDefault | undefined = OptionDefault | undefined> {
  /** Parser of the variable's text (an unset or empty variable never reaches it). */
  schema: S;
  /** Text used when the variable is unset; undefined: unset stays unset. */
  default: D;
  /** One line for the reference page. */
  doc: string;
  secret?: OptionSecret;
  refuse?: readonly OptionRefusal<z.output<S>>[];
}

function option<S extends z.ZodType, D extends OptionDefault | undefined = undefined>(o: {
  schema: S;
  default?: D;
  doc: string;
  secret?: OptionSecret;
  refuse?: readonly OptionRefusal<z.output<S>>[];
}): Option<S, D> {
  return { ...o, default: o.default as D };
}

/** One default in dev, another in staging and prod. */
const devElse = (dev: string, other: string) => ({ dev, staging: other, prod: other }) as const;
const STRICT: readonly GateEnv[] = ['staging', 'prod'];
const PROD: readonly GateEnv[] = ['prod'];

// --- parsers -----------------------------------------------------------------------------------

/** `host:port`; IPv6 hosts in brackets. */
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port')
  .transform((s) => {
    const i = s.lastIndexOf(':');
    return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
  })
  // A pipe runs only when the pattern matched, so a bad value yields one message, not two.
  .pipe(z.object({ host: z.string(), port: z.number().int().max(65535, 'port must be at most 65535') }));

/** True for a URL that parses and is http: or https:. */
function isHttpUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}
const httpUrl = z.string().refine(isHttpUrl, 'must be an http(s) URL');
/** One Redis Cluster seed node: `host:port`, `[v6]:port`, or a `redis://`/`rediss://` URL. */
function isClusterNode(s: string): boolean {
  if (/^rediss?:\/\//.test(s)) {
    try {
      return new URL(s).hostname !== '';
    } catch {
      return false;
    }
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(s);
  return m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
}
const path = z.string().min(1);
const bool = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.string().regex(/^\d+$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(min).max(max));
const rate = z
  .string()
  .regex(/^\d+\/\d+$/, 'must be N/S (N requests per S seconds)')
  .transform((v) => {
    const [n, s] = v.split('/').map(Number) as [number, number];
    return { points: n, durationS: s };
  })
  .refine((r) => r.points > 0 && r.durationS > 0, 'N and S must be positive');

const maskAll = () => '***';
/** A Redis URL's user:password part. */
/**
 * A store URL or node shown without its credentials: the user-info up to the authority's last
 * `@` (where the URL parser ends it, so a password holding `@` is hidden whole) and every query
 * value (ioredis reads `?password=` as the password).
 */
const maskUserinfo = (v: string) => v.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/?#]*@/i, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`).replace(/([?&][^=&#]*=)[^&#]*/g, '$1***');
/**
 * `GATE_FWD_HMAC_KEYS` shown as its kids only. An entry without a plausible kid (no colon, or a
 * "kid" too long to be one: with kid and secret swapped it is the secret) is `***` whole.
 */
const maskHmacKeys = (v: string) =>
  v
    .split(',')
    .map((e) => {
      const i = e.indexOf(':');
      const kid = i > 0 ? e.slice(0, i).trim() : '';
      return /^[A-Za-z0-9._-]{1,32}$/.test(kid) ? `${kid}:***` : '***';
    })
    .join(',');

// --- the table -----------------------------------------------------------------------------------

/** Every `GATE_*` variable, in the order of the reference page. */
export const OPTIONS = {
  GATE_ENV: option({ schema: z.enum(PROFILES), default: 'prod', doc: 'deployment profile: `dev`, `staging` or `prod` (section 11)' }),
  GATE_MODE: option({
    schema: z.enum(['direct', 'forwarded', 'authorizer']),
    default: 'direct',
    doc: '`direct` (the gate terminates mTLS), `forwarded` (behind nginx, section 6) or `authorizer` (nginx proxies and asks the gate, section 13)',
  }),
  GATE_PATH_PREFIX: option({
    schema: z
      .string()
      .regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, 'must be /segment[/segment], no trailing slash')
      .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain . or .. segments'),
    default: '/.agent-gate',
    doc: 'the gate\'s own path prefix `P`',
  }),
  GATE_LISTEN: option({ schema: hostPort, default: '0.0.0.0:8443', doc: 'public listener `host:port` (`[v6]:port`)' }),
  GATE_ADMIN_LISTEN: option({ schema: hostPort, default: '127.0.0.1:9464', doc: 'admin listener `host:port`; off loopback it needs `GATE_ADMIN_PUBLIC=true` and admin TLS' }),
  GATE_TLS_CERT: option({ schema: path, doc: 'server certificate chain (PEM file); required in direct mode, optional (with the key) in forwarded mode' }),
  GATE_TLS_KEY: option({ schema: path, doc: 'server private key (PEM file), with `GATE_TLS_CERT`' }),
  GATE_TLS_MIN_VERSION: option({ schema: z.enum(['TLSv1.2', 'TLSv1.3']), default: { dev: 'TLSv1.2', staging: 'TLSv1.2', prod: 'TLSv1.3' }, doc: 'minimum TLS version of the public listener' }),
  GATE_CLIENT_CA: option({ schema: path, doc: 'PEM bundle of the CAs trusted to issue agent certificates (required in both modes); prod refuses the dev CA in it' }),
  GATE_ADMIN_TLS_CERT: option({ schema: path, doc: 'admin listener certificate chain (PEM file): HTTPS on the admin listener; required off loopback' }),
  GATE_ADMIN_TLS_KEY: option({ schema: path, doc: 'admin listener private key (PEM file), with `GATE_ADMIN_TLS_CERT`' }),
  GATE_ADMIN_CLIENT_CA: option({ schema: path, doc: 'with admin TLS: admin client certificates from this CA are required in the handshake and authorize the admin API; a file without a certificate is refused at start' }),
  GATE_ADMIN_PUBLIC: option({ schema: bool, default: 'false', doc: 'must be `true` for an admin listener off loopback' }),
  GATE_ADMIN_TOKEN_FILE: option({ schema: path, doc: 'file holding the admin API bearer secret (at least 16 characters)' }),
  GATE_STORE: option({
    schema: z.enum(['redis', 'memory']),
    default: devElse('memory', 'redis'),
    doc: 'where challenge, replay, limit and operator state live',
    refuse: [{ in: STRICT, when: (v) => v === 'memory', why: 'memory store is dev-only; use redis' }],
  }),
  GATE_MEMORY_STORE_MAX: option({ schema: int(100, 10_000_000), default: '100000', doc: 'memory store entry cap; when full it answers 503 rather than evict (its rate-limit counters have a cap of their own, the same number, oldest dropped first)' }),
  GATE_REDIS_URL: option({
    schema: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://'),
    doc: '`redis://` or `rediss://` URL; required with `GATE_STORE=redis` unless cluster nodes are set',
    secret: { at: 'store.redisUrl', mask: maskUserinfo },
  }),
  GATE_REDIS_CLUSTER_NODES: option({
    // Each node: host:port ([v6]:port) or a redis(s):// URL, as the store reads it.
    schema: z.string().refine((v) => v.split(',').every(isClusterNode), 'must be host:port[,host:port...] (or redis:// URLs)'),
    doc: '`host:port,…` Redis Cluster seed nodes, instead of `GATE_REDIS_URL`',
    secret: { at: 'store.clusterNodes', mask: maskUserinfo },
  }),
  GATE_REDIS_TIMEOUT_MS: option({ schema: int(10, 60_000), default: '1000', doc: 'per-command store timeout; a store that does not answer in time gives 503 `store_unavailable`' }),
  GATE_UPSTREAM_URL: option({ schema: httpUrl, doc: 'the protected service (required, except embedded); a path in it is prepended' }),
  GATE_UPSTREAM_TIMEOUT_MS: option({ schema: int(100, 600_000), default: '30000', doc: 'connect, response headers or body not in time gives 504 `upstream_timeout`' }),
  GATE_UPSTREAM_ALLOW_HTTP: option({ schema: bool, default: 'false', doc: 'allow a non-loopback `http://` upstream in prod' }),
  GATE_PROXY_MAX_BODY_BYTES: option({ schema: int(0, 1024 ** 3), default: String(10 * 1024 * 1024), doc: 'largest proxied request body, else 413' }),
  GATE_PROXY_PASS_HEADERS: option({
    schema: z
      .string()
      .transform((v) => v.split(',').map((n) => n.trim().toLowerCase()).filter(Boolean))
      .superRefine((names, ctx) => {
        for (const n of names) {
          const why = passHeaderProblem(n);
          if (why) ctx.addIssue({ code: 'custom', message: why });
        }
      }),
    doc: 'comma list of client headers section 5 strips that are passed upstream anyway',
  }),
  GATE_PROXY_XFF: option({ schema: z.enum(['replace', 'append']), default: 'replace', doc: '`replace` or `append` to a client-sent `X-Forwarded-For`' }),
  GATE_AUDIENCE: option({ schema: z.string().min(1).max(256), default: 'agent-gate', doc: 'proof and token audience (`aud`)' }),
  GATE_ISSUER: option({ schema: z.string().min(1).max(256), default: 'agent-gate', doc: 'token issuer (`iss`)' }),
  GATE_CHALLENGE_TTL_MS: option({ schema: int(500, 300_000), default: '3000', doc: 'challenge lifetime' }),
  GATE_TOKEN_TTL_S: option({
    schema: int(10, 86_400),
    default: '300',
    doc: 'access token lifetime',
    refuse: [{ in: STRICT, when: (v) => v > 900, why: 'at most 900 outside dev' }],
  }),
  GATE_MAX_SKEW_S: option({ schema: int(0, 300), default: '30', doc: 'allowed clock skew for proof `iat` and token times' }),
  GATE_SIGNING_JWK: option({
    schema: z.string().min(1),
    doc: 'Ed25519 private JWK, a JWK Set (at most 10 keys: the first signs, all verify), or a PEM Ed25519 private key',
    secret: { at: 'signing.jwk', mask: maskAll },
  }),
  GATE_SIGNING_KEY_FILE: option({ schema: path, doc: 'the same from a file, used when `GATE_SIGNING_JWK` is unset; without either an ephemeral key in dev, a violation elsewhere' }),
  GATE_REVOCATION: option({
    schema: z.enum(['off', 'crl', 'ocsp', 'ocsp,crl']),
    default: devElse('off', 'ocsp,crl'),
    doc: '`off`, `crl`, `ocsp`, or `ocsp,crl` (OCSP first, CRL when OCSP errs or says unknown)',
    refuse: [{ in: STRICT, when: (v) => v === 'off', why: 'revocation off is dev-only; use ocsp,crl' }],
  }),
  GATE_REVOCATION_FAIL: option({
    schema: z.enum(['closed', 'open']),
    default: devElse('open', 'closed'),
    doc: 'status unknown: `closed` gives 503 `revocation_unavailable`; `open` allows, logs and counts',
    refuse: [{ in: PROD, when: (v) => v === 'open', why: 'prod requires closed' }],
  }),
  GATE_CRL_FILES: option({ schema: z.string(), doc: 'comma list of PEM/DER CRL files used besides the distribution points; re-read once past `nextUpdate`' }),
  GATE_OCSP_URL: option({ schema: httpUrl, doc: 'OCSP responder for every certificate, instead of the certificate\'s AIA' }),
  GATE_REVOCATION_MAX_STALE_S: option({ schema: int(0, 86_400), default: '300', doc: 'a revocation answer is cached per certificate until its `nextUpdate`, at most this long' }),
  GATE_REVOCATION_TIMEOUT_MS: option({ schema: int(50, 60_000), default: '2000', doc: 'OCSP/CRL fetch timeout' }),
  GATE_CRL_MAX_BYTES: option({ schema: int(1024, 1024 ** 3), default: String(20 * 1024 * 1024), doc: 'largest CRL fetched or read' }),
  GATE_FWD_HMAC_KEYS: option({
    schema: z.string(),
    doc: '`kid:<base64 secret of at least 32 bytes>[,kid2:…]` shared with nginx; required in forwarded mode',
    secret: { at: 'forwarded.hmacKeys', mask: maskHmacKeys },
  }),
  GATE_FWD_MAX_SKEW_S: option({ schema: int(1, 300), default: '30', doc: 'allowed age of `x-gate-fwd-ts`' }),
  GATE_FWD_TRUSTED_PROXIES: option({ schema: z.string(), doc: 'CIDR list of the nginx addresses; required in forwarded mode outside dev' }),
  GATE_FWD_REPLAY_CHECK: option({ schema: z.enum(['all', 'v1']), default: 'all', doc: '`all` paths or only `v1` (`P/v1/*`) get the request-id replay check' }),
  GATE_AUTHZ_CACHE_S: option({ schema: int(0, 300), default: '2', doc: 'authorizer mode: seconds nginx may reuse an allow decision (`0`: every request asks the gate)' }),
  GATE_MAX_INFLIGHT: option({ schema: int(1, 1_000_000), default: '1024', doc: 'requests in flight above which new ones get 503 `overloaded`' }),
  GATE_MAX_EVENT_LOOP_DELAY_MS: option({ schema: int(0, 60_000), default: '1000', doc: 'mean event-loop delay (sampled every 500 ms) above which new requests get 503 `overloaded`; `0` disables' }),
  GATE_POW: option({
    schema: z.enum(['off', 'on', 'adaptive']),
    default: 'off',
    doc: 'proof-of-work: `off`, `on` (16 bits), `adaptive` (none below half load, then 8 rising to 20 bits)',
  }),
  GATE_RATE_LIMITS: option({
    schema: z.enum(['on', 'off']),
    default: 'on',
    doc: 'rate limits on or off (off only for functional tests)',
    refuse: [{ in: STRICT, when: (v) => v === 'off', why: 'off is dev-only' }],
  }),
  GATE_RATE_CHALLENGE_IP: option({ schema: rate, default: '120/60', doc: '`N/S`: challenges per client address, IPv6 per /64 (nginx\'s signed address in forwarded mode)' }),
  GATE_RATE_CHALLENGE_IDENTITY: option({ schema: rate, default: '60/60', doc: '`N/S`: challenges per certificate' }),
  GATE_RATE_TOKEN_IDENTITY: option({ schema: rate, default: '60/60', doc: '`N/S`: token requests per certificate' }),
  GATE_RATE_PROXY_IDENTITY: option({ schema: rate, default: '1000/1', doc: '`N/S`: gated requests per certificate (after the token check)' }),
  GATE_RATE_FAILED_PROOFS: option({ schema: rate, default: '5/900', doc: '`N/S`: after N failed proofs within S seconds the certificate gets 429 on the gate endpoints for S seconds' }),
  GATE_RATE_REFUSAL_IDENTITY: option({ schema: rate, default: '60/60', doc: '`N/S`: client-caused refusals per certificate; beyond, 429 in their place and no refusal record' }),
  GATE_REFUSAL_RECORDS_PER_IDENTITY: option({ schema: int(1, 10_000), default: '50', doc: 'refusal records kept for lookup (admin API): newest N per certificate' }),
  GATE_REFUSAL_RECORDS_MAX: option({ schema: int(100, 10_000_000), default: '100000', doc: 'refusal records kept for lookup (admin API): newest N in total' }),
  GATE_AUDIT_FILE: option({ schema: path, doc: 'audit trail file (checkpoints go to `<file>.checkpoint`)' }),
  GATE_AUDIT_KEY_FILE: option({ schema: path, doc: 'HMAC key of the audit chain; required with `GATE_AUDIT_FILE`' }),
  GATE_ATTESTATION_REGISTRY: option({ schema: path, doc: 'JSON file of trusted attestation issuers (section 8)' }),
  GATE_ATTESTATION_REQUIRED: option({ schema: int(0, 4), doc: 'minimum attestation level (0–4) for a token; needs the registry' }),
  GATE_LOG_LEVEL: option({
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    default: 'info',
    doc: 'pino log level (`agent-gate dev` sets `warn`)',
    refuse: [{ in: PROD, when: (v) => v === 'debug' || v === 'trace', why: 'debug and trace may log request details; use info or above in prod' }],
  }),
  GATE_DRAIN_TIMEOUT_MS: option({ schema: int(0, 600_000), default: '10000', doc: 'on SIGTERM, how long in-flight requests get before their connections are cut' }),
  GATE_HANDSHAKE_TIMEOUT_MS: option({ schema: int(100, 120_000), default: '10000', doc: 'public listener: TCP accept to completed TLS handshake, then the connection is destroyed' }),
  GATE_HEADERS_TIMEOUT_MS: option({ schema: int(100, 30_000), default: '10000', doc: 'public listener: a new connection or request to its last header byte (at most the 30 s request deadline)' }),
  GATE_IDLE_TIMEOUT_MS: option({ schema: int(100, 600_000), default: '65000', doc: 'public listener: keep-alive idle time between requests' }),
  GATE_MAX_CONNECTIONS: option({ schema: int(1, 1_000_000), default: '4096', doc: 'public listener: open connections in total; over it a connection is reset at accept' }),
  GATE_MAX_CONNECTIONS_PER_ADDRESS: option({
    schema: int(1, 1_000_000),
    default: String(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
    doc: 'public listener, direct mode: open connections per client address (IPv6 per /64)',
  }),
  GATE_WORKERS: option({
    schema: z.union([z.literal('auto'), int(1, 256)], { error: 'must be auto or a whole number from 1 to 256' }),
    default: devElse('1', 'auto'),
    doc: 'worker processes of `serve`: a number, or `auto` (usable CPUs, capped by a cgroup quota)',
  }),
  GATE_TLS_TICKET_ROTATE_S: option({ schema: int(60, 86_400), default: '3600', doc: 'lifetime of the TLS session-ticket key every worker shares, in seconds' }),
};

/** A variable name of the table. */
export type OptionName = keyof typeof OPTIONS;

/** Every variable name, in table order. */
export const OPTION_NAMES = Object.keys(OPTIONS) as OptionName[];

/** The entries, typed loosely for code that walks the whole table. */
export const OPTION_ENTRIES = Object.entries(OPTIONS) as [OptionName, Option][];

/** The text an unset variable takes in `env`, or undefined when unset stays unset. */
export function defaultFor(o: Option, env: GateEnv): string | undefined {
  return typeof o.default === 'object' ? o.default[env] : o.default;
}
