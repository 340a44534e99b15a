/**
 * Turns the environment into one frozen {@link GateConfig}, resolving the per-environment
 * defaults of PROTOCOL.md sections 1, 7, 11 and collecting every violation of section 11 as
 * `config violation: <VARIABLE>: <why>`.
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { autoWorkers } from '../cluster/cpus.js';
import { parseHmacKeys, parseTrustedProxies, TrustBundle } from '../identity/index.js';
import { OPTION_ENTRIES, OPTIONS, defaultFor, type GateEnv, type OptionName } from './options.js';
import { envSchemaFor, type RawEnv } from './schema.js';

export type { GateEnv } from './options.js';

/** The parsed type of one variable (defaults applied), so GateConfig's value types come from the option table. */
type V<K extends OptionName> = NonNullable<RawEnv[K]>;

/** One refusal of the configuration, naming the variable to change. */
export interface ConfigViolation {
  variable: string;
  why: string;
}

/** A host and port to listen on. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** A rate limit: at most `points` requests per `durationS` seconds. */
export interface RateSpec {
  points: number;
  durationS: number;
}

/** The effective configuration of one gate. */
export interface GateConfig {
  /** dev, staging or prod (`GATE_ENV`). */
  env: GateEnv;
  /**
   * direct (gate terminates mTLS), forwarded (behind nginx) or authorizer (nginx proxies and
   * asks the gate for decisions, section 13) (`GATE_MODE`).
   */
  mode: V<'GATE_MODE'>;
  /** The gate's own path prefix P (`GATE_PATH_PREFIX`). */
  pathPrefix: string;
  /** Public listener (`GATE_LISTEN`). */
  listen: ListenAddress;
  /** Admin listener (`GATE_ADMIN_LISTEN`). */
  adminListen: ListenAddress;
  /** Server TLS material and client trust bundle, as file paths. */
  tls: { certFile?: string; keyFile?: string; minVersion: V<'GATE_TLS_MIN_VERSION'>; clientCaFile?: string };
  /** Admin listener TLS and credentials. */
  admin: { tlsCertFile?: string; tlsKeyFile?: string; clientCaFile?: string; public: boolean; tokenFile?: string };
  /** Challenge store. */
  store: { kind: V<'GATE_STORE'>; memoryMax: number; redisUrl?: string; clusterNodes?: string[]; timeoutMs: number };
  /** The protected service. */
  upstream: {
    url?: string;
    timeoutMs: number;
    allowHttp: boolean;
    maxBodyBytes: number;
    /** `GATE_PROXY_PASS_HEADERS`: stripped client headers passed anyway (lowercase). */
    passHeaders: string[];
    /** `GATE_PROXY_XFF`: replace (default) or append to a client-sent X-Forwarded-For. */
    xff: V<'GATE_PROXY_XFF'>;
  };
  /** Token and proof audience, token issuer. */
  audience: string;
  issuer: string;
  /** Challenge lifetime in milliseconds (`GATE_CHALLENGE_TTL_MS`). */
  challengeTtlMs: number;
  /** Access token lifetime in seconds (`GATE_TOKEN_TTL_S`). */
  tokenTtlS: number;
  /** Allowed clock skew for proof `iat` and token times (`GATE_MAX_SKEW_S`). */
  maxSkewS: number;
  /** Token-signing key sources, first found wins. */
  signing: { jwk?: string; keyFile?: string };
  /** Revocation policy (section 7). */
  revocation: { mode: V<'GATE_REVOCATION'>; fail: V<'GATE_REVOCATION_FAIL'>; crlFiles: string[]; ocspUrl?: string; maxStaleS: number; timeoutMs: number; crlMaxBytes: number };
  /** Forwarded mode (section 6). */
  forwarded: { hmacKeys?: string; maxSkewS: number; trustedProxies?: string; replayCheck: V<'GATE_FWD_REPLAY_CHECK'> };
  /** Authorizer mode (section 13): seconds nginx may cache an allow decision (`GATE_AUTHZ_CACHE_S`, 0 disables). */
  authorizer: { cacheS: number };
  /** Load shedding and proof-of-work. */
  maxInflight: number;
  /** Mean event-loop delay that turns shedding on, 0 to disable (`GATE_MAX_EVENT_LOOP_DELAY_MS`, an extension of the contract). */
  maxEventLoopDelayMs: number;
  pow: V<'GATE_POW'>;
  /** Rate limits. */
  rateLimits: { enabled: boolean; challengeIp: RateSpec; challengeIdentity: RateSpec; tokenIdentity: RateSpec; proxyIdentity: RateSpec; failedProofs: RateSpec; refusalIdentity: RateSpec };
  /** Refusal records kept for lookup by id: newest per identity and in total (`GATE_REFUSAL_RECORDS_PER_IDENTITY`, `GATE_REFUSAL_RECORDS_MAX`). */
  refusalRecords: { perIdentity: number; max: number };
  /** Audit trail. */
  audit: { file?: string; keyFile?: string };
  /** Attestation (section 8). */
  attestation: { registry?: string; required?: number };
  /** Log level (`GATE_LOG_LEVEL`). */
  logLevel: V<'GATE_LOG_LEVEL'>;
  /** How long in-flight requests may take to finish after SIGTERM (`GATE_DRAIN_TIMEOUT_MS`). */
  drainTimeoutMs: number;
  /**
   * Public-listener connections: handshake, header and keep-alive idle deadlines in ms, and the
   * caps on open connections, in total and per client address (direct mode only).
   */
  connections: { handshakeTimeoutMs: number; headersTimeoutMs: number; idleTimeoutMs: number; max: number; maxPerAddress: number };
  /** Worker processes of `serve` (`GATE_WORKERS`, `auto` resolved to usable CPUs): 1 in dev, auto elsewhere. */
  workers: number;
  /** Seconds between rotations of the TLS session-ticket key every worker shares (`GATE_TLS_TICKET_ROTATE_S`). */
  ticketRotateS: number;
}

/** The outcome of {@link loadConfig}: a config when the variables parse, and every violation. */
export interface LoadedConfig {
  config: GateConfig | undefined;
  violations: ConfigViolation[];
}

/** Options of {@link loadConfig}. */
export interface LoadOptions {
  /** The gate is embedded as a fastify plugin: nothing is proxied, so no upstream is required. */
  embedded?: boolean;
}

/** Formats a violation as the contract's stderr line. */
export function formatViolation(v: ConfigViolation): string {
  return `config violation: ${v.variable}: ${v.why}`;
}

/**
 * True when the PEM bundles `a` and `b` hold a certificate in common (or are one file). Files
 * that cannot be read are judged where they are loaded, so they count as sharing nothing here.
 */
function sharesCertificate(a: string, b: string): boolean {
  const bundle = (file: string): TrustBundle | undefined => {
    try {
      return new TrustBundle(readFileSync(file, 'utf8'));
    } catch {
      return undefined;
    }
  };
  const left = bundle(a);
  return left !== undefined && (bundle(b)?.anchors.some((cert) => left.contains(cert)) ?? false);
}

/** True for loopback hosts (names that cannot leave the machine). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

/**
 * Parses and checks `env` (normally `process.env`). Never throws for bad values: every
 * problem becomes a violation so `config check` can list them all at once.
 */
export function loadConfig(env: Record<string, string | undefined>, opts: LoadOptions = {}): LoadedConfig {
  const gateVars: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // An empty variable means unset: shells and compose files produce them easily.
    if (k.startsWith('GATE_') && v !== undefined && v !== '') gateVars[k] = v;
  }
  const unknown = Object.keys(gateVars)
    .filter((k) => !Object.hasOwn(OPTIONS, k))
    .map((variable) => ({ variable, why: 'unknown variable (typo?)' }));
  // The profile picks the defaults; a bad GATE_ENV is reported by the default profile's schema.
  const profile = OPTIONS.GATE_ENV.schema.safeParse(gateVars.GATE_ENV ?? defaultFor(OPTIONS.GATE_ENV, 'prod'));
  const parsed = envSchemaFor(profile.success ? profile.data : 'prod').safeParse(gateVars);
  if (!parsed.success) {
    const invalid = parsed.error.issues.map((issue) => ({ variable: String(issue.path[0] ?? 'GATE_*'), why: issue.message }));
    return { config: undefined, violations: [...unknown, ...invalid] };
  }
  const config = resolve(parsed.data);
  const violations = [...unknown, ...checkPolicy(config, opts), ...optionRefusals(parsed.data), ...checkWorkers(config, gateVars.GATE_WORKERS !== undefined)];
  return { config: deepFreeze(config), violations };
}

/**
 * The refusals of section 11 that one variable's value decides (the option table's `refuse`).
 * Violations name the variable whether its value was set or is the profile's default.
 */
function optionRefusals(r: RawEnv): ConfigViolation[] {
  const out: ConfigViolation[] = [];
  for (const [name, o] of OPTION_ENTRIES) {
    for (const rule of o.refuse ?? []) {
      if (rule.in.includes(r.GATE_ENV) && rule.when(r[name])) out.push({ variable: name, why: rule.why });
    }
  }
  return out;
}

/** The nested configuration from the parsed variables; every default already came from the option table. */
function resolve(r: RawEnv): GateConfig {
  return {
    env: r.GATE_ENV,
    mode: r.GATE_MODE,
    pathPrefix: r.GATE_PATH_PREFIX,
    listen: r.GATE_LISTEN,
    adminListen: r.GATE_ADMIN_LISTEN,
    tls: {
      certFile: r.GATE_TLS_CERT,
      keyFile: r.GATE_TLS_KEY,
      minVersion: r.GATE_TLS_MIN_VERSION,
      clientCaFile: r.GATE_CLIENT_CA,
    },
    admin: {
      tlsCertFile: r.GATE_ADMIN_TLS_CERT,
      tlsKeyFile: r.GATE_ADMIN_TLS_KEY,
      clientCaFile: r.GATE_ADMIN_CLIENT_CA,
      public: r.GATE_ADMIN_PUBLIC,
      tokenFile: r.GATE_ADMIN_TOKEN_FILE,
    },
    store: {
      kind: r.GATE_STORE,
      memoryMax: r.GATE_MEMORY_STORE_MAX,
      redisUrl: r.GATE_REDIS_URL,
      clusterNodes: r.GATE_REDIS_CLUSTER_NODES?.split(','),
      timeoutMs: r.GATE_REDIS_TIMEOUT_MS,
    },
    upstream: {
      url: r.GATE_UPSTREAM_URL,
      timeoutMs: r.GATE_UPSTREAM_TIMEOUT_MS,
      allowHttp: r.GATE_UPSTREAM_ALLOW_HTTP,
      maxBodyBytes: r.GATE_PROXY_MAX_BODY_BYTES,
      passHeaders: r.GATE_PROXY_PASS_HEADERS ?? [],
      xff: r.GATE_PROXY_XFF,
    },
    audience: r.GATE_AUDIENCE,
    issuer: r.GATE_ISSUER,
    challengeTtlMs: r.GATE_CHALLENGE_TTL_MS,
    tokenTtlS: r.GATE_TOKEN_TTL_S,
    maxSkewS: r.GATE_MAX_SKEW_S,
    signing: { jwk: r.GATE_SIGNING_JWK, keyFile: r.GATE_SIGNING_KEY_FILE },
    revocation: {
      mode: r.GATE_REVOCATION,
      fail: r.GATE_REVOCATION_FAIL,
      crlFiles: r.GATE_CRL_FILES ? r.GATE_CRL_FILES.split(',').filter(Boolean) : [],
      ocspUrl: r.GATE_OCSP_URL,
      maxStaleS: r.GATE_REVOCATION_MAX_STALE_S,
      timeoutMs: r.GATE_REVOCATION_TIMEOUT_MS,
      crlMaxBytes: r.GATE_CRL_MAX_BYTES,
    },
    forwarded: {
      hmacKeys: r.GATE_FWD_HMAC_KEYS,
      maxSkewS: r.GATE_FWD_MAX_SKEW_S,
      trustedProxies: r.GATE_FWD_TRUSTED_PROXIES,
      replayCheck: r.GATE_FWD_REPLAY_CHECK,
    },
    authorizer: { cacheS: r.GATE_AUTHZ_CACHE_S },
    maxInflight: r.GATE_MAX_INFLIGHT,
    maxEventLoopDelayMs: r.GATE_MAX_EVENT_LOOP_DELAY_MS,
    pow: r.GATE_POW,
    rateLimits: {
      enabled: r.GATE_RATE_LIMITS === 'on',
      challengeIp: r.GATE_RATE_CHALLENGE_IP,
      challengeIdentity: r.GATE_RATE_CHALLENGE_IDENTITY,
      tokenIdentity: r.GATE_RATE_TOKEN_IDENTITY,
      proxyIdentity: r.GATE_RATE_PROXY_IDENTITY,
      failedProofs: r.GATE_RATE_FAILED_PROOFS,
      refusalIdentity: r.GATE_RATE_REFUSAL_IDENTITY,
    },
    refusalRecords: { perIdentity: r.GATE_REFUSAL_RECORDS_PER_IDENTITY, max: r.GATE_REFUSAL_RECORDS_MAX },
    audit: { file: r.GATE_AUDIT_FILE, keyFile: r.GATE_AUDIT_KEY_FILE },
    attestation: { registry: r.GATE_ATTESTATION_REGISTRY, required: r.GATE_ATTESTATION_REQUIRED },
    logLevel: r.GATE_LOG_LEVEL,
    drainTimeoutMs: r.GATE_DRAIN_TIMEOUT_MS,
    connections: {
      handshakeTimeoutMs: r.GATE_HANDSHAKE_TIMEOUT_MS,
      headersTimeoutMs: r.GATE_HEADERS_TIMEOUT_MS,
      idleTimeoutMs: r.GATE_IDLE_TIMEOUT_MS,
      max: r.GATE_MAX_CONNECTIONS,
      maxPerAddress: r.GATE_MAX_CONNECTIONS_PER_ADDRESS,
    },
    workers: r.GATE_WORKERS === 'auto' ? autoWorkers() : r.GATE_WORKERS,
    ticketRotateS: r.GATE_TLS_TICKET_ROTATE_S,
  };
}

/** The refusals of section 11 plus what this build cannot do yet (fail closed, never ignore). */
function checkPolicy(c: GateConfig, opts: LoadOptions): ConfigViolation[] {
  const out: ConfigViolation[] = [];
  const add = (variable: string, why: string) => out.push({ variable, why });
  const strict = c.env !== 'dev';

  // Required everywhere.
  // In authorizer mode nginx proxies to the upstream itself.
  if (!c.upstream.url && !opts.embedded && c.mode !== 'authorizer') add('GATE_UPSTREAM_URL', 'required: the protected service the gate proxies to');
  if (c.mode === 'direct') {
    if (!c.tls.certFile) add('GATE_TLS_CERT', 'required in direct mode: the server certificate chain (PEM)');
    if (!c.tls.keyFile) add('GATE_TLS_KEY', 'required in direct mode: the server private key (PEM)');
  } else {
    if (!c.tls.certFile !== !c.tls.keyFile) add(c.tls.certFile ? 'GATE_TLS_KEY' : 'GATE_TLS_CERT', 'set both GATE_TLS_CERT and GATE_TLS_KEY, or neither');
    // Section 1: plain HTTP behind nginx only in dev or when only trusted proxies can connect.
    if (!c.tls.certFile && !plainHttpAllowed(c)) add('GATE_TLS_CERT', 'plain HTTP in forwarded mode needs GATE_ENV=dev or GATE_FWD_TRUSTED_PROXIES');
    if (c.forwarded.hmacKeys) {
      try {
        parseHmacKeys(c.forwarded.hmacKeys);
      } catch (err) {
        add('GATE_FWD_HMAC_KEYS', (err as Error).message);
      }
    } else {
      add('GATE_FWD_HMAC_KEYS', 'required in forwarded mode: kid:<base64 secret of at least 32 bytes>[,kid2:...]');
    }
    if (c.forwarded.trustedProxies) {
      try {
        parseTrustedProxies(c.forwarded.trustedProxies);
      } catch (err) {
        add('GATE_FWD_TRUSTED_PROXIES', (err as Error).message);
      }
    }
  }
  if (!c.tls.clientCaFile) add('GATE_CLIENT_CA', 'required: the CA bundle trusted to issue agent certificates');
  if (c.store.kind === 'redis' && !c.store.redisUrl && !c.store.clusterNodes) {
    add('GATE_REDIS_URL', 'required with GATE_STORE=redis (or set GATE_REDIS_CLUSTER_NODES)');
  }
  if (c.store.redisUrl && c.store.clusterNodes) add('GATE_REDIS_CLUSTER_NODES', 'set either GATE_REDIS_URL or GATE_REDIS_CLUSTER_NODES, not both');

  // Features of the contract that later work brings; until then refuse rather than pretend.
  if (c.audit.file && !c.audit.keyFile) add('GATE_AUDIT_KEY_FILE', 'required whenever GATE_AUDIT_FILE is set: the key of the HMAC chain (agent-gate audit keygen --out F)');
  if (c.attestation.required !== undefined && !c.attestation.registry) add('GATE_ATTESTATION_REGISTRY', 'required when GATE_ATTESTATION_REQUIRED is set: no attestation could ever be accepted without issuers');

  if (strict) {
    if (!c.signing.jwk && !c.signing.keyFile) add('GATE_SIGNING_KEY_FILE', `an ephemeral signing key is dev-only; set GATE_SIGNING_KEY_FILE or GATE_SIGNING_JWK in ${c.env}`);
    if (c.mode !== 'direct' && !c.forwarded.trustedProxies) add('GATE_FWD_TRUSTED_PROXIES', `required in ${c.mode} mode outside dev`);
  }
  if (c.admin.clientCaFile && c.tls.clientCaFile && sharesCertificate(c.admin.clientCaFile, c.tls.clientCaFile)) {
    add('GATE_ADMIN_CLIENT_CA', 'shares a certificate with GATE_CLIENT_CA: every agent certificate would authorize the admin API; use a CA that issues admin certificates only');
  }
  if (!isLoopbackHost(c.adminListen.host)) {
    if (!c.admin.public) add('GATE_ADMIN_PUBLIC', `admin listener on non-loopback ${c.adminListen.host} needs GATE_ADMIN_PUBLIC=true`);
    if (!c.admin.tlsCertFile || !c.admin.tlsKeyFile) add('GATE_ADMIN_TLS_CERT', 'admin listener on a non-loopback address needs GATE_ADMIN_TLS_CERT and GATE_ADMIN_TLS_KEY');
  }
  if (c.env === 'prod') {
    // Judged on the URL as parsed (the forwarder parses it the same way): `HTTP://` or a
    // leading space is plain HTTP too.
    const upstream = c.upstream.url ? new URL(c.upstream.url.trim()) : undefined;
    if (upstream?.protocol === 'http:' && !c.upstream.allowHttp) {
      const host = upstream.hostname;
      if (!isLoopbackHost(host)) add('GATE_UPSTREAM_URL', 'plain http:// to a non-loopback upstream; use https:// or set GATE_UPSTREAM_ALLOW_HTTP=true');
    }
    if (c.signing.keyFile && !c.signing.jwk) {
      try {
        if ((statSync(c.signing.keyFile).mode & 0o077) !== 0) add('GATE_SIGNING_KEY_FILE', 'readable by group or others; chmod 600 it');
      } catch {
        // A missing file is reported when the key is loaded, with the same variable.
      }
    }
  }
  return out;
}

/**
 * Worker processes share nothing but the store, so per-process state cannot back a gate of
 * several. Outside dev the memory store and an ephemeral key are refused anyway: the worker
 * line is added there only when GATE_WORKERS was set explicitly.
 */
function checkWorkers(c: GateConfig, explicit: boolean): ConfigViolation[] {
  const out: ConfigViolation[] = [];
  if (c.workers <= 1 || (c.env !== 'dev' && !explicit)) return out;
  if (c.store.kind === 'memory') out.push({ variable: 'GATE_WORKERS', why: `${c.workers} workers cannot share the memory store or its memory-only rate limits; use GATE_STORE=redis or GATE_WORKERS=1` });
  if (!c.signing.jwk && !c.signing.keyFile) out.push({ variable: 'GATE_WORKERS', why: `${c.workers} workers cannot share an ephemeral signing key (each would refuse the others' tokens); set GATE_SIGNING_KEY_FILE or GATE_WORKERS=1` });
  return out;
}

function plainHttpAllowed(c: GateConfig): boolean {
  return c.env === 'dev' || Boolean(c.forwarded.trustedProxies);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
