/**
 * The `GATE_*` environment variables of PROTOCOL.md section 12: one zod schema, parsed once at
 * start-up. Every value is validated here; nothing else reads `process.env`.
 * @module
 */
import { z } from 'zod';
import { DEFAULT_MAX_CONNECTIONS_PER_ADDRESS } from '../http/connections.js';
import { passHeaderProblem } from '../proxy/headers.js';

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

const bool = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.string().regex(/^\d+$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(min).max(max));
const rate = z.string().regex(/^\d+\/\d+$/, 'must be N/S (N requests per S seconds)').transform((v) => {
  const [n, s] = v.split('/').map(Number) as [number, number];
  return { points: n, durationS: s };
}).refine((r) => r.points > 0 && r.durationS > 0, 'N and S must be positive');

/**
 * The raw schema: keys are variable names, values their parsers. Defaults that depend on
 * `GATE_ENV` are resolved afterwards in `load.ts`, so here they stay optional.
 */
export const envSchema = z.object({
  GATE_ENV: z.enum(['dev', 'staging', 'prod']).default('prod'),
  GATE_MODE: z.enum(['direct', 'forwarded']).default('direct'),
  GATE_PATH_PREFIX: z.string().regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, 'must be /segment[/segment], no trailing slash').refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain . or .. segments').default('/.agent-gate'),
  GATE_LISTEN: hostPort.prefault('0.0.0.0:8443'),
  GATE_ADMIN_LISTEN: hostPort.prefault('127.0.0.1:9464'),
  GATE_TLS_CERT: z.string().min(1).optional(),
  GATE_TLS_KEY: z.string().min(1).optional(),
  GATE_TLS_MIN_VERSION: z.enum(['TLSv1.2', 'TLSv1.3']).optional(),
  GATE_CLIENT_CA: z.string().min(1).optional(),
  GATE_ADMIN_TLS_CERT: z.string().min(1).optional(),
  GATE_ADMIN_TLS_KEY: z.string().min(1).optional(),
  GATE_ADMIN_CLIENT_CA: z.string().min(1).optional(),
  GATE_ADMIN_PUBLIC: bool.default(false),
  GATE_ADMIN_TOKEN_FILE: z.string().min(1).optional(),
  GATE_STORE: z.enum(['redis', 'memory']).optional(),
  GATE_MEMORY_STORE_MAX: int(100, 10_000_000).default(100_000),
  GATE_REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://').optional(),
  GATE_REDIS_CLUSTER_NODES: z.string().regex(/^[^,\s]+(,[^,\s]+)*$/, 'must be host:port[,host:port...]').optional(),
  GATE_REDIS_TIMEOUT_MS: int(10, 60_000).default(1000),
  GATE_UPSTREAM_URL: httpUrl.optional(),
  GATE_UPSTREAM_TIMEOUT_MS: int(100, 600_000).default(30_000),
  GATE_UPSTREAM_ALLOW_HTTP: bool.optional(),
  GATE_PROXY_MAX_BODY_BYTES: int(0, 1024 ** 3).default(10 * 1024 * 1024),
  // Client-sent headers the operator deliberately passes although section 5 strips them.
  GATE_PROXY_PASS_HEADERS: z
    .string()
    .transform((v) => v.split(',').map((n) => n.trim().toLowerCase()).filter(Boolean))
    .superRefine((names, ctx) => {
      for (const n of names) {
        const why = passHeaderProblem(n);
        if (why) ctx.addIssue({ code: 'custom', message: why });
      }
    })
    .optional(),
  GATE_PROXY_XFF: z.enum(['replace', 'append']).default('replace'),
  GATE_AUDIENCE: z.string().min(1).max(256).optional(),
  GATE_ISSUER: z.string().min(1).max(256).optional(),
  GATE_CHALLENGE_TTL_MS: int(500, 300_000).default(3000),
  GATE_TOKEN_TTL_S: int(10, 86_400).default(300),
  GATE_MAX_SKEW_S: int(0, 300).default(30),
  GATE_SIGNING_JWK: z.string().min(1).optional(),
  GATE_SIGNING_KEY_FILE: z.string().min(1).optional(),
  GATE_REVOCATION: z.enum(['off', 'crl', 'ocsp', 'ocsp,crl']).optional(),
  GATE_REVOCATION_FAIL: z.enum(['closed', 'open']).optional(),
  GATE_CRL_FILES: z.string().optional(),
  GATE_OCSP_URL: httpUrl.optional(),
  GATE_REVOCATION_MAX_STALE_S: int(0, 86_400).default(300),
  GATE_REVOCATION_TIMEOUT_MS: int(50, 60_000).default(2000),
  GATE_CRL_MAX_BYTES: int(1024, 1024 ** 3).default(20 * 1024 * 1024),
  GATE_FWD_HMAC_KEYS: z.string().optional(),
  GATE_FWD_MAX_SKEW_S: int(1, 300).default(30),
  GATE_FWD_TRUSTED_PROXIES: z.string().optional(),
  GATE_FWD_REPLAY_CHECK: z.enum(['all', 'v1']).default('all'),
  GATE_MAX_INFLIGHT: int(1, 1_000_000).default(1024),
  GATE_MAX_EVENT_LOOP_DELAY_MS: int(0, 60_000).default(1000),
  GATE_POW: z.enum(['off', 'on', 'adaptive']).default('off'),
  GATE_RATE_LIMITS: z.enum(['on', 'off']).default('on'),
  GATE_RATE_CHALLENGE_IP: rate.default({ points: 120, durationS: 60 }),
  GATE_RATE_CHALLENGE_IDENTITY: rate.default({ points: 60, durationS: 60 }),
  GATE_RATE_TOKEN_IDENTITY: rate.default({ points: 60, durationS: 60 }),
  GATE_RATE_PROXY_IDENTITY: rate.default({ points: 1000, durationS: 1 }),
  GATE_RATE_FAILED_PROOFS: rate.default({ points: 5, durationS: 900 }),
  // Client-caused refusals (4xx) per certificate; over it the agent gets 429 and no refusal record.
  GATE_RATE_REFUSAL_IDENTITY: rate.default({ points: 60, durationS: 60 }),
  // Refusal records kept for lookup (admin API): newest N per identity and in total.
  GATE_REFUSAL_RECORDS_PER_IDENTITY: int(1, 10_000).default(50),
  GATE_REFUSAL_RECORDS_MAX: int(100, 10_000_000).default(100_000),
  GATE_AUDIT_FILE: z.string().min(1).optional(),
  GATE_AUDIT_KEY_FILE: z.string().min(1).optional(),
  GATE_ATTESTATION_REGISTRY: z.string().min(1).optional(),
  GATE_ATTESTATION_REQUIRED: int(0, 4).optional(),
  GATE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  GATE_DRAIN_TIMEOUT_MS: int(0, 600_000).default(10_000),
  // Connection lifecycle of the public listener (src/http/connections.ts); headers at most the fixed 30 s request timeout.
  GATE_HANDSHAKE_TIMEOUT_MS: int(100, 120_000).default(10_000),
  GATE_HEADERS_TIMEOUT_MS: int(100, 30_000).default(10_000),
  GATE_IDLE_TIMEOUT_MS: int(100, 600_000).default(65_000),
  GATE_MAX_CONNECTIONS: int(1, 1_000_000).default(4096),
  GATE_MAX_CONNECTIONS_PER_ADDRESS: int(1, 1_000_000).default(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
});

/** The parsed variables, before environment-dependent defaults. */
export type RawEnv = z.output<typeof envSchema>;
