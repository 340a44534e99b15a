/**
 * The authorizer-mode half of `agent-gate nginx-config` (PROTOCOL.md section 13): the values
 * of nginx/agent-gate-authorizer.conf's placeholders. The header rules nginx applies before
 * the upstream are rendered from the same lists the gate's own proxy uses (src/proxy/headers.ts),
 * so the two modes cannot drift apart.
 * @module
 */
import { authorizeRoute } from '../authorizer/paths.js';
import { CARRIER } from '../authorizer/carriers.js';
import { AUTHZ_TARGET_HEADERS, FWD_HEADERS } from '../identity/forwarded-canonical.js';
import { HOP_BY_HOP, passHeaderProblem, STRIPPED_HEADERS } from '../proxy/headers.js';
import { originTls, parseOrigin, type Origin } from './origin.js';

/** The deployment nginx is rendered for. */
export type NginxMode = 'forwarded' | 'authorizer';

/** Options of authorizer mode (`--mode authorizer`). */
export interface AuthorizerNginxOptions {
  /** The protected service's origin (`--upstream-url`), http(s)://host:port, no path. */
  upstreamUrl: string;
  /** CA bundle that verifies the upstream's certificate (https upstream). */
  upstreamCa?: string;
  /** DNS name to verify the upstream's certificate against; default the URL's host. */
  upstreamTlsName?: string;
  /** Seconds of the decision cache, as `GATE_AUTHZ_CACHE_S` (default 2); 0 renders no cache. */
  cacheS?: number;
  /** Size of the cache's shared key zone (default `10m`, about 80 000 decisions). */
  cacheZone?: string;
  /** Disk bound of the cache (default `100m`). */
  cacheMaxSize?: string;
  /** `GATE_RATE_PROXY_IDENTITY` (`N/S`, default `1000/1`): the edge limit per certificate. */
  rateProxyIdentity?: string;
  /** Seconds nginx waits for a decision before answering 503 gate_unavailable (default 5). */
  timeoutS?: number;
  /** `GATE_PROXY_XFF`: replace (default) or append to a client-sent X-Forwarded-For. */
  xff?: 'replace' | 'append';
  /** `GATE_PROXY_PASS_HEADERS`: stripped headers passed deliberately. */
  passHeaders?: string[];
}

/** Defaults shared with the gate's variables (section 12). */
export const AUTHZ_DEFAULTS = { cacheS: 2, cacheZone: '10m', cacheMaxSize: '100m', rateProxyIdentity: '1000/1', timeoutS: 5 } as const;

/**
 * `X-Forwarded-*` names nginx removes. The gate removes every `x-forwarded-*` name; nginx can
 * only remove names it is given (section 13), so this lists those upstreams are known to read.
 */
export const X_FORWARDED_NAMES: readonly string[] = [
  'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server', 'x-forwarded-ssl',
  'x-forwarded-scheme', 'x-forwarded-protocol', 'x-forwarded-uri', 'x-forwarded-path', 'x-forwarded-method',
  'x-forwarded-client-cert', 'x-forwarded-user', 'x-forwarded-email', 'x-forwarded-groups',
  'x-forwarded-preferred-username', 'x-forwarded-access-token',
];

/** Hop-by-hop names nginx already replaces itself (and Host, set to the upstream's). */
const NGINX_HANDLED = new Set(['host', 'connection', 'transfer-encoding', 'te', 'keep-alive', 'upgrade', 'expect']);

const SIZE_RE = /^[1-9][0-9]{0,6}[km]$/;

/** `--mode`: forwarded (default) or authorizer. */
export function parseMode(value: unknown): NginxMode {
  if (value === undefined || value === 'forwarded') return 'forwarded';
  if (value === 'authorizer') return 'authorizer';
  throw new TypeError(`--mode must be forwarded or authorizer, got ${JSON.stringify(value)}`);
}

function wholeNumber(flag: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function size(flag: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !SIZE_RE.test(value)) throw new TypeError(`${flag} must be an nginx size like 10m or 512k, got ${JSON.stringify(value)}`);
  return value;
}

/** `N/S` → nginx `rate=` (r/s when whole, else r/m rounded up) and the burst of one window. */
export function identityRate(spec: unknown): { points: number; durationS: number; rate: string; burst: number } {
  const text = spec ?? AUTHZ_DEFAULTS.rateProxyIdentity;
  const m = typeof text === 'string' ? /^([0-9]{1,9})\/([0-9]{1,6})$/.exec(text) : null;
  const points = m ? Number(m[1]) : 0;
  const durationS = m ? Number(m[2]) : 0;
  if (!m || points < 1 || durationS < 1) throw new TypeError(`--rate-proxy-identity must be N/S as GATE_RATE_PROXY_IDENTITY (N requests per S seconds), got ${JSON.stringify(spec)}`);
  const rate = points % durationS === 0 ? `${points / durationS}r/s` : `${Math.ceil((points * 60) / durationS)}r/m`;
  return { points, durationS, rate, burst: points };
}

function upstreamTls(origin: Origin, ca: string | undefined, tlsName: string | undefined): string {
  if (origin.scheme === 'http') return '            # The upstream over plain HTTP.';
  const lines = [
    '            proxy_ssl_protocols TLSv1.2 TLSv1.3;',
    '            proxy_ssl_session_reuse on;',
    '            proxy_ssl_server_name on;',
    `            proxy_ssl_name ${tlsName ?? origin.host};`,
  ];
  if (ca) lines.push('            proxy_ssl_verify on;', `            proxy_ssl_trusted_certificate "${ca}";`, '            proxy_ssl_verify_depth 4;');
  else lines.push("            # NOT verifying the upstream's certificate (no --upstream-ca given).", '            proxy_ssl_verify off;');
  return lines.join('\n');
}

/** The proxy_set_header lines of the request to the upstream (section 5, section 13). */
export function upstreamHeaderLines(xff: 'replace' | 'append', pass: readonly string[]): string {
  const passing = new Set(pass.map((n) => n.toLowerCase()));
  const cleared = [
    'authorization',
    ...[...HOP_BY_HOP].filter((n) => !NGINX_HANDLED.has(n)),
    ...FWD_HEADERS,
    ...AUTHZ_TARGET_HEADERS,
    ...Object.values(CARRIER),
    ...STRIPPED_HEADERS.filter((n) => !passing.has(n)),
    ...X_FORWARDED_NAMES.filter((n) => !passing.has(n)),
  ];
  const lines = [...new Set(cleared)].map((n) => `            proxy_set_header ${n} "";`);
  lines.push(
    '            proxy_set_header x-agent-id         $agent_gate_agent_id;',
    '            proxy_set_header x-agent-thumbprint $agent_gate_thumbprint;',
    '            proxy_set_header x-agent-token-id   $agent_gate_token_id;',
    `            proxy_set_header X-Forwarded-For    ${xff === 'append' ? '$proxy_add_x_forwarded_for' : '$remote_addr'};`,
    '            proxy_set_header X-Forwarded-Proto  https;',
  );
  return lines.join('\n');
}

/**
 * Validates the authorizer options (TypeError naming the flag) and returns a function of DIR
 * giving the template's authorizer placeholders.
 */
export async function authorizerValues(opts: AuthorizerNginxOptions | undefined, pathPrefix: string, warnings: string[]): Promise<(dir: string) => Record<string, string>> {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('--upstream-url is required in authorizer mode');
  const upstream = parseOrigin('--upstream-url', opts.upstreamUrl, { required: 'required in authorizer mode', schemes: 'http:// or https://', originOnly: ': nginx forwards the request URI unchanged' });
  const { ca: upstreamCa, tlsName } = await originTls(upstream, { url: '--upstream-url', ca: '--upstream-ca', tlsName: '--upstream-tls-name', dnsOnly: '' }, opts.upstreamCa, opts.upstreamTlsName);
  if (upstream.scheme === 'https' && !upstreamCa) warnings.push("the upstream's TLS certificate is not verified: give --upstream-ca outside dev");
  const cacheS = opts.cacheS === undefined ? AUTHZ_DEFAULTS.cacheS : wholeNumber('--authz-cache-s', opts.cacheS, 0, 300);
  const cacheZone = size('--authz-cache-zone', opts.cacheZone, AUTHZ_DEFAULTS.cacheZone);
  const cacheMax = size('--authz-cache-max-size', opts.cacheMaxSize, AUTHZ_DEFAULTS.cacheMaxSize);
  const timeoutS = opts.timeoutS === undefined ? AUTHZ_DEFAULTS.timeoutS : wholeNumber('--authz-timeout-s', opts.timeoutS, 1, 60);
  const xff = opts.xff ?? 'replace';
  if (xff !== 'replace' && xff !== 'append') throw new TypeError(`--xff must be replace or append, got ${JSON.stringify(xff)}`);
  const pass = opts.passHeaders ?? [];
  for (const n of pass) {
    const why = passHeaderProblem(n);
    if (why) throw new TypeError(`--pass-headers: ${why}`);
  }
  const id = identityRate(opts.rateProxyIdentity);
  return (dir) => ({
    AUTHORIZE_PATH: authorizeRoute(pathPrefix),
    UPSTREAM_URL: upstream.url,
    // The Host the gate's own proxy sends (undici: the URL's host, port only when not the default).
    UPSTREAM_HOST: new URL(opts.upstreamUrl).host,
    UPSTREAM_SERVER: upstream.server,
    UPSTREAM_SCHEME: upstream.scheme,
    UPSTREAM_TLS: upstreamTls(upstream, upstreamCa, tlsName),
    // GATE_UPSTREAM_TIMEOUT_MS default: 504 upstream_timeout after it.
    UPSTREAM_TIMEOUT: '30s',
    UPSTREAM_HEADERS: upstreamHeaderLines(xff, pass),
    // GATE_PROXY_MAX_BODY_BYTES default (10 MiB): 413 body_too_large beyond it.
    MAX_BODY: '10m',
    IDENTITY_LIMIT: `${id.points}/${id.durationS}`,
    IDENTITY_RATE: id.rate,
    IDENTITY_BURST: String(id.burst),
    IDENTITY_ZONE: '10m',
    IDENTITY_POLICY: `"proxy_identity";q=${id.points};w=${id.durationS}`,
    AUTHZ_TIMEOUT: `${timeoutS}s`,
    AUTHZ_CONNECT_TIMEOUT: `${Math.min(timeoutS, 2)}s`,
    CACHE_PATH:
      cacheS === 0
        ? '    # Decision cache off (--authz-cache-s 0): the gate decides every gated request.'
        : `    proxy_cache_path "${dir}/temp/authz_cache" levels=1:2 keys_zone=agent_gate_authz:${cacheZone} max_size=${cacheMax} inactive=60s use_temp_path=off;`,
    CACHE_LOCATION:
      cacheS === 0
        ? '            # Decision cache off (--authz-cache-s 0).'
        : [
            '            proxy_cache agent_gate_authz;',
            '            proxy_cache_key "$ssl_client_fingerprint|$http_authorization";',
            '            proxy_cache_methods GET;',
            // How long: the gate's Cache-Control max-age (min of GATE_AUTHZ_CACHE_S and the
            // token's remaining life) and nothing else; refusals carry no-store and a carrier.
            '            proxy_cache_bypass $agent_gate_authz_nocache;',
            '            proxy_no_cache $agent_gate_authz_nocache $upstream_http_x_agent_gate_status $agent_gate_authz_no_agent;',
            '            proxy_cache_use_stale off;',
            '            proxy_cache_revalidate off;',
            '            proxy_cache_lock off;',
            // A hit reads its entry through a kept descriptor instead of open/fstat/close. nginx
            // reopens when the entry's inode changes (a newer decision replaced it), and every
            // entry is judged by its own stored expiry, so a kept descriptor never extends one.
            // At most 256 descriptors per worker (the busiest agents, LRU), so that the cache
            // cannot eat into the file limit client and upstream connections need.
            '            open_file_cache max=256 inactive=10s;',
            '            open_file_cache_valid 10s;',
          ].join('\n'),
  });
}
