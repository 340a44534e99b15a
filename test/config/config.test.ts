/**
 * Configuration (PROTOCOL.md sections 11 and 12): per-environment defaults, every refusal of
 * staging/prod that loadConfig implements, invalid values, unknown variables, the features this
 * build refuses (fail closed), and the `agent-gate config check` CLI.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadMaterials, StartupError } from '../../src/app.js';
import { formatViolation, loadConfig, type ConfigViolation, type GateConfig } from '../../src/config/index.js';
import { createCa } from '../../src/pki/index.js';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { runCliGateEnv } from '../helpers/cli.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';

type Env = Record<string, string | undefined>;

/** File paths are not read by loadConfig (except the signing key's mode in prod). */
const files = {
  GATE_TLS_CERT: '/nonexistent/server.crt',
  GATE_TLS_KEY: '/nonexistent/server.key',
  GATE_CLIENT_CA: '/nonexistent/ca.crt',
};

/** A complete dev configuration. */
const devEnv = (extra: Env = {}): Env => ({ GATE_ENV: 'dev', GATE_UPSTREAM_URL: 'http://127.0.0.1:9000', ...files, ...extra });

/** A complete staging/prod configuration (revocation defaults to ocsp,crl, failing closed). */
const strictEnv = (env: 'staging' | 'prod', extra: Env = {}): Env => ({
  GATE_ENV: env,
  GATE_STORE: 'redis',
  GATE_REDIS_URL: 'redis://127.0.0.1:6379',
  GATE_SIGNING_JWK: '{"kty":"OKP","crv":"Ed25519","x":"placeholder","d":"placeholder"}',
  GATE_UPSTREAM_URL: 'https://api.internal:8443',
  ...files,
  ...extra,
});

function load(env: Env): { config: GateConfig; violations: ConfigViolation[] } {
  const { config, violations } = loadConfig(env);
  expect(config, `config should parse: ${violations.map(formatViolation).join('; ')}`).toBeDefined();
  return { config: config!, violations };
}

const key = (v: ConfigViolation) => `${v.variable}: ${v.why}`;

/** The violations of `env` that `base` does not have. */
function added(base: Env, env: Env): ConfigViolation[] {
  const before = new Set(loadConfig(base).violations.map(key));
  return loadConfig(env).violations.filter((v) => !before.has(key(v)));
}

const vars = (vs: ConfigViolation[]) => vs.map((v) => v.variable);


describe('defaults per environment', () => {
  it('dev: memory store, revocation off and failing open, TLSv1.2', () => {
    const { config, violations } = load(devEnv());
    expect(violations).toEqual([]);
    expect(config.env).toBe('dev');
    expect(config.store.kind).toBe('memory');
    expect(config.revocation.mode).toBe('off');
    expect(config.revocation.fail).toBe('open');
    expect(config.tls.minVersion).toBe('TLSv1.2');
  });

  it('dev: the contract defaults of sections 1, 3, 4 and 12', () => {
    const { config } = load(devEnv());
    expect(config).toMatchObject({
      mode: 'direct',
      pathPrefix: '/.agent-gate',
      listen: { host: '0.0.0.0', port: 8443 },
      adminListen: { host: '127.0.0.1', port: 9464 },
      audience: 'agent-gate',
      issuer: 'agent-gate',
      challengeTtlMs: 3000,
      tokenTtlS: 300,
      maxSkewS: 30,
      store: { memoryMax: 100_000, timeoutMs: 1000 },
      upstream: { timeoutMs: 30_000, allowHttp: false, maxBodyBytes: 10 * 1024 * 1024 },
      forwarded: { maxSkewS: 30, replayCheck: 'all' },
      pow: 'off',
      rateLimits: {
        enabled: true,
        challengeIp: { points: 120, durationS: 60 },
        challengeIdentity: { points: 60, durationS: 60 },
        tokenIdentity: { points: 60, durationS: 60 },
        proxyIdentity: { points: 1000, durationS: 1 },
        failedProofs: { points: 5, durationS: 900 },
      },
      logLevel: 'info',
      drainTimeoutMs: 10_000,
      revocation: { maxStaleS: 300, timeoutMs: 2000, crlMaxBytes: 20 * 1024 * 1024, crlFiles: [] },
    });
  });

  it('prod: redis store, revocation ocsp,crl failing closed, TLSv1.3', () => {
    const { config } = load(strictEnv('prod'));
    expect(config.store.kind).toBe('redis');
    expect(config.revocation.mode).toBe('ocsp,crl');
    expect(config.revocation.fail).toBe('closed');
    expect(config.tls.minVersion).toBe('TLSv1.3');
  });

  it('GATE_ENV defaults to prod', () => {
    const { config } = load({ ...strictEnv('prod'), GATE_ENV: undefined });
    expect(config.env).toBe('prod');
    expect(config.tls.minVersion).toBe('TLSv1.3');
    expect(config.store.kind).toBe('redis');
  });

  it('staging: redis, ocsp,crl failing closed, but TLSv1.2', () => {
    const { config } = load(strictEnv('staging'));
    expect(config.store.kind).toBe('redis');
    expect(config.revocation.mode).toBe('ocsp,crl');
    expect(config.revocation.fail).toBe('closed');
    expect(config.tls.minVersion).toBe('TLSv1.2');
  });

  it('an explicit GATE_TLS_MIN_VERSION wins over the environment default', () => {
    expect(load(devEnv({ GATE_TLS_MIN_VERSION: 'TLSv1.3' })).config.tls.minVersion).toBe('TLSv1.3');
    expect(load(strictEnv('prod', { GATE_TLS_MIN_VERSION: 'TLSv1.2' })).config.tls.minVersion).toBe('TLSv1.2');
  });

  it('parses listeners, IPv6 hosts and rate specs', () => {
    const { config, violations } = load(devEnv({ GATE_LISTEN: '[::1]:9443', GATE_ADMIN_LISTEN: 'localhost:9999', GATE_RATE_CHALLENGE_IP: '7/3' }));
    expect(violations).toEqual([]);
    expect(config.listen).toEqual({ host: '::1', port: 9443 });
    expect(config.adminListen).toEqual({ host: 'localhost', port: 9999 });
    expect(config.rateLimits.challengeIp).toEqual({ points: 7, durationS: 3 });
  });
});

describe('a complete dev config', () => {
  it('has zero violations', () => {
    expect(loadConfig(devEnv()).violations).toEqual([]);
  });

  it('ignores variables outside GATE_*', () => {
    expect(loadConfig(devEnv({ PATH: '/usr/bin', HOME: '/root', REDIS_URL: 'x' })).violations).toEqual([]);
  });
});

describe('staging and prod refusals (section 11)', () => {
  it('a complete staging/prod config has no violations', () => {
    for (const env of ['staging', 'prod'] as const) {
      const { violations } = load(strictEnv(env));
      expect(vars(violations)).toEqual([]);
    }
  });

  for (const env of ['staging', 'prod'] as const) {
    describe(env, () => {
      const base = strictEnv(env);

      it('memory store -> GATE_STORE', () => {
        const v = added(base, strictEnv(env, { GATE_STORE: 'memory', GATE_REDIS_URL: '' }));
        expect(vars(v)).toEqual(['GATE_STORE']);
        expect(v[0]!.why).toMatch(/memory/);
      });

      it('no signing key (ephemeral) -> GATE_SIGNING_KEY_FILE', () => {
        const v = added(base, strictEnv(env, { GATE_SIGNING_JWK: '' }));
        expect(vars(v)).toEqual(['GATE_SIGNING_KEY_FILE']);
        expect(v[0]!.why).toMatch(/ephemeral/);
      });

      it('revocation off -> GATE_REVOCATION (dev-only)', () => {
        const { violations } = load(strictEnv(env, { GATE_REVOCATION: 'off' }));
        expect(vars(violations)).toEqual(['GATE_REVOCATION']);
        expect(violations[0]!.why).toMatch(/dev-only/);
      });

      it('GATE_TOKEN_TTL_S=901 -> GATE_TOKEN_TTL_S; 900 is allowed', () => {
        const v = added(base, strictEnv(env, { GATE_TOKEN_TTL_S: '901' }));
        expect(vars(v)).toEqual(['GATE_TOKEN_TTL_S']);
        expect(v[0]!.why).toMatch(/900/);
        expect(added(base, strictEnv(env, { GATE_TOKEN_TTL_S: '900' }))).toEqual([]);
      });

      it('admin listener on 0.0.0.0 without GATE_ADMIN_PUBLIC and TLS -> GATE_ADMIN_PUBLIC and GATE_ADMIN_TLS_CERT', () => {
        const v = added(base, strictEnv(env, { GATE_ADMIN_LISTEN: '0.0.0.0:9464' }));
        expect(vars(v).sort()).toEqual(['GATE_ADMIN_PUBLIC', 'GATE_ADMIN_TLS_CERT']);
      });

      it('admin listener on 0.0.0.0 with GATE_ADMIN_PUBLIC=true but no TLS -> GATE_ADMIN_TLS_CERT only', () => {
        const v = added(base, strictEnv(env, { GATE_ADMIN_LISTEN: '0.0.0.0:9464', GATE_ADMIN_PUBLIC: 'true' }));
        expect(vars(v)).toEqual(['GATE_ADMIN_TLS_CERT']);
      });

      it('admin listener on 0.0.0.0 with GATE_ADMIN_PUBLIC=true and TLS is accepted', () => {
        const ok = strictEnv(env, {
          GATE_ADMIN_LISTEN: '0.0.0.0:9464',
          GATE_ADMIN_PUBLIC: 'true',
          GATE_ADMIN_TLS_CERT: '/nonexistent/admin.crt',
          GATE_ADMIN_TLS_KEY: '/nonexistent/admin.key',
        });
        expect(added(base, ok)).toEqual([]);
      });

      it('GATE_RATE_LIMITS=off -> GATE_RATE_LIMITS', () => {
        expect(vars(added(base, strictEnv(env, { GATE_RATE_LIMITS: 'off' })))).toEqual(['GATE_RATE_LIMITS']);
      });

      it('forwarded mode without HMAC keys or trusted proxies names both', () => {
        const v = added(base, strictEnv(env, { GATE_MODE: 'forwarded' }));
        expect(vars(v).sort()).toEqual(['GATE_FWD_HMAC_KEYS', 'GATE_FWD_TRUSTED_PROXIES']);
      });
      it('forwarded mode with a short HMAC secret or a bad CIDR names the variable', () => {
        const short = Buffer.alloc(31, 1).toString('base64');
        const v = added(base, strictEnv(env, { GATE_MODE: 'forwarded', GATE_FWD_HMAC_KEYS: `k1:${short}`, GATE_FWD_TRUSTED_PROXIES: '10.0.0.0/33' }));
        expect(vars(v).sort()).toEqual(['GATE_FWD_HMAC_KEYS', 'GATE_FWD_TRUSTED_PROXIES']);
      });
      it('a complete forwarded configuration has no violations', () => {
        const key = Buffer.alloc(32, 7).toString('base64');
        const v = added(base, strictEnv(env, { GATE_MODE: 'forwarded', GATE_FWD_HMAC_KEYS: `k1:${key},k2:${key}`, GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32,::1' }));
        expect(v).toEqual([]);
      });
    });
  }

  describe('prod only', () => {
    const base = strictEnv('prod');
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'agent-gate-config-'));
    });

    it('GATE_REVOCATION_FAIL=open -> GATE_REVOCATION_FAIL (staging allows it)', () => {
      expect(vars(added(base, strictEnv('prod', { GATE_REVOCATION_FAIL: 'open' })))).toEqual(['GATE_REVOCATION_FAIL']);
      expect(added(strictEnv('staging'), strictEnv('staging', { GATE_REVOCATION_FAIL: 'open' }))).toEqual([]);
    });

    it('GATE_LOG_LEVEL=debug or trace -> GATE_LOG_LEVEL (staging allows it)', () => {
      expect(vars(added(base, strictEnv('prod', { GATE_LOG_LEVEL: 'debug' })))).toEqual(['GATE_LOG_LEVEL']);
      expect(vars(added(base, strictEnv('prod', { GATE_LOG_LEVEL: 'trace' })))).toEqual(['GATE_LOG_LEVEL']);
      expect(added(base, strictEnv('prod', { GATE_LOG_LEVEL: 'warn' }))).toEqual([]);
      expect(added(strictEnv('staging'), strictEnv('staging', { GATE_LOG_LEVEL: 'debug' }))).toEqual([]);
    });

    it('http:// upstream that is not loopback -> GATE_UPSTREAM_URL unless GATE_UPSTREAM_ALLOW_HTTP=true', () => {
      const v = added(base, strictEnv('prod', { GATE_UPSTREAM_URL: 'http://api.internal:8080/' }));
      expect(vars(v)).toEqual(['GATE_UPSTREAM_URL']);
      expect(v[0]!.why).toMatch(/GATE_UPSTREAM_ALLOW_HTTP/);
      expect(added(base, strictEnv('prod', { GATE_UPSTREAM_URL: 'http://api.internal:8080/', GATE_UPSTREAM_ALLOW_HTTP: 'true' }))).toEqual([]);
      for (const loop of ['http://127.0.0.1:8080', 'http://localhost:8080/x', 'http://[::1]:8080/']) {
        expect(added(base, strictEnv('prod', { GATE_UPSTREAM_URL: loop })), loop).toEqual([]);
      }
      expect(added(strictEnv('staging'), strictEnv('staging', { GATE_UPSTREAM_URL: 'http://api.internal:8080/' }))).toEqual([]);
      // Judged as the URL parses (as the forwarder parses it), not by its spelling.
      for (const spelled of ['HTTP://api.internal:8080/', ' http://api.internal:8080/', 'Http://10.1.2.3/']) {
        expect(vars(added(base, strictEnv('prod', { GATE_UPSTREAM_URL: spelled }))), spelled).toEqual(['GATE_UPSTREAM_URL']);
      }
    });

    it('signing key file readable by group or others (0644) -> GATE_SIGNING_KEY_FILE; 0600 is accepted', () => {
      const loose = join(dir, 'loose.jwk');
      const tight = join(dir, 'tight.jwk');
      writeFileSync(loose, '{}');
      writeFileSync(tight, '{}');
      chmodSync(loose, 0o644);
      chmodSync(tight, 0o600);
      const v = added(base, strictEnv('prod', { GATE_SIGNING_JWK: '', GATE_SIGNING_KEY_FILE: loose }));
      expect(vars(v)).toEqual(['GATE_SIGNING_KEY_FILE']);
      expect(v[0]!.why).toMatch(/group or others/);
      expect(added(base, strictEnv('prod', { GATE_SIGNING_JWK: '', GATE_SIGNING_KEY_FILE: tight }))).toEqual([]);
      // staging does not check the mode.
      expect(added(strictEnv('staging'), strictEnv('staging', { GATE_SIGNING_JWK: '', GATE_SIGNING_KEY_FILE: loose }))).toEqual([]);
    });

    it('the dev CA in the trust bundle -> GATE_CLIENT_CA (checked when materials are loaded)', async () => {
      const devCa = await createCa({ alg: 'ec-p256' }); // default CN: the dev CA's
      const fx = await makeFixtures();
      const caFile = join(dir, 'dev-ca.crt');
      writeFileSync(caFile, devCa.certPem);
      const jwk = JSON.stringify(await generateSigningJwk());
      const env = { GATE_TLS_CERT: fx.serverCertFile, GATE_TLS_KEY: fx.serverKeyFile, GATE_SIGNING_JWK: jwk };
      const prod = load(strictEnv('prod', { ...env, GATE_CLIENT_CA: caFile })).config;
      const err = await loadMaterials(prod, () => {}).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StartupError);
      expect(vars((err as StartupError).violations)).toEqual(['GATE_CLIENT_CA']);
      // The same bundle is fine in staging, and the fixture CA is fine in prod.
      await expect(loadMaterials(load(strictEnv('staging', { ...env, GATE_CLIENT_CA: caFile })).config, () => {})).resolves.toBeDefined();
      await expect(loadMaterials(load(strictEnv('prod', { ...env, GATE_CLIENT_CA: fx.caFile })).config, () => {})).resolves.toBeDefined();
    });
  });

  it('dev allows what staging/prod refuse', () => {
    const v = loadConfig(
      devEnv({
        GATE_STORE: 'memory',
        GATE_REVOCATION: 'off',
        GATE_REVOCATION_FAIL: 'open',
        GATE_TOKEN_TTL_S: '3600',
        GATE_RATE_LIMITS: 'off',
        GATE_LOG_LEVEL: 'trace',
        GATE_UPSTREAM_URL: 'http://api.internal:8080',
      }),
    ).violations;
    expect(v).toEqual([]);
  });
});

describe('revocation modes', () => {
  for (const mode of ['crl', 'ocsp', 'ocsp,crl'] as const) {
    it(`${mode} is accepted in dev`, () => {
      expect(loadConfig(devEnv({ GATE_REVOCATION: mode })).violations).toEqual([]);
    });
  }
});

describe('attestation', () => {
  it('GATE_ATTESTATION_REQUIRED without a registry names GATE_ATTESTATION_REGISTRY', () => {
    expect(vars(loadConfig(devEnv({ GATE_ATTESTATION_REQUIRED: '2' })).violations)).toEqual(['GATE_ATTESTATION_REGISTRY']);
  });
  it('a registry with a required level is accepted by the config check', () => {
    expect(loadConfig(devEnv({ GATE_ATTESTATION_REGISTRY: '/tmp/registry.json', GATE_ATTESTATION_REQUIRED: '2' })).violations).toEqual([]);
  });
});

describe('audit trail', () => {
  it('GATE_AUDIT_FILE without GATE_AUDIT_KEY_FILE names the key variable', () => {
    expect(vars(loadConfig(devEnv({ GATE_AUDIT_FILE: '/tmp/audit.log' })).violations)).toEqual(['GATE_AUDIT_KEY_FILE']);
  });
  it('both set is accepted', () => {
    expect(loadConfig(devEnv({ GATE_AUDIT_FILE: '/tmp/audit.log', GATE_AUDIT_KEY_FILE: '/tmp/audit.key' })).violations).toEqual([]);
  });
});

describe('required variables', () => {
  it('a dev config without upstream, TLS files or client CA names each of them', () => {
    const v = loadConfig({ GATE_ENV: 'dev' }).violations;
    expect(vars(v).sort()).toEqual(['GATE_CLIENT_CA', 'GATE_TLS_CERT', 'GATE_TLS_KEY', 'GATE_UPSTREAM_URL']);
  });

  it('redis store without GATE_REDIS_URL -> GATE_REDIS_URL; both URL and cluster nodes -> GATE_REDIS_CLUSTER_NODES', () => {
    expect(vars(loadConfig(devEnv({ GATE_STORE: 'redis' })).violations)).toEqual(['GATE_REDIS_URL']);
    expect(loadConfig(devEnv({ GATE_STORE: 'redis', GATE_REDIS_CLUSTER_NODES: 'a:1,b:2' })).violations).toEqual([]);
    expect(vars(loadConfig(devEnv({ GATE_STORE: 'redis', GATE_REDIS_URL: 'redis://a:1', GATE_REDIS_CLUSTER_NODES: 'a:1' })).violations)).toEqual([
      'GATE_REDIS_CLUSTER_NODES',
    ]);
  });
});

describe('invalid values: one violation naming the variable', () => {
  const cases: [string, string][] = [
    ['GATE_LISTEN', 'foo'],
    ['GATE_LISTEN', '127.0.0.1:70000'],
    ['GATE_ADMIN_LISTEN', 'foo'],
    ['GATE_ADMIN_LISTEN', '127.0.0.1:70000'],
    ['GATE_RATE_CHALLENGE_IP', 'abc'],
    ['GATE_RATE_CHALLENGE_IP', '0/60'],
    ['GATE_ENV', 'test'],
    ['GATE_MODE', 'proxy'],
    ['GATE_STORE', 'postgres'],
    ['GATE_TOKEN_TTL_S', 'abc'],
    ['GATE_TOKEN_TTL_S', '-5'],
    ['GATE_CHALLENGE_TTL_MS', '1.5'],
    ['GATE_ADMIN_PUBLIC', 'maybe'],
    ['GATE_REDIS_URL', 'http://127.0.0.1:6379'],
    ['GATE_UPSTREAM_URL', 'ftp://example.com'],
    ['GATE_PATH_PREFIX', '/a/../b'],
    ['GATE_LOG_LEVEL', 'verbose'],
    ['GATE_TLS_MIN_VERSION', 'TLSv1.1'],
  ];
  for (const [variable, value] of cases) {
    it(`${variable}=${value}`, () => {
      const { config, violations } = loadConfig(devEnv({ [variable]: value }));
      expect(config).toBeUndefined();
      expect(violations).toHaveLength(1);
      expect(violations[0]!.variable).toBe(variable);
      expect(violations[0]!.why.length).toBeGreaterThan(0);
    });
  }

  // An upstream URL that passes the pattern but is not a URL must be a violation, never a crash.
  for (const env of ['dev', 'prod'] as const) {
    it(`${env}: GATE_UPSTREAM_URL=http://a b/ (not a URL) is a GATE_UPSTREAM_URL violation, not an exception`, () => {
      const base = env === 'dev' ? devEnv() : strictEnv('prod');
      let result: ReturnType<typeof loadConfig> | undefined;
      expect(() => {
        result = loadConfig({ ...base, GATE_UPSTREAM_URL: 'http://a b/' });
      }).not.toThrow();
      expect(vars(result!.violations)).toContain('GATE_UPSTREAM_URL');
    });
  }
});

describe('secrets never echoed, node lists checked', () => {
  it('GATE_FWD_HMAC_KEYS with kid and secret swapped: the violation names the entry, never the secret', () => {
    for (const secret of [randomBytes(32).toString('base64'), randomBytes(33).toString('base64url'), randomBytes(2).toString('base64url')]) {
      const { violations } = loadConfig(strictEnv('prod', { GATE_MODE: 'forwarded', GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32', GATE_FWD_HMAC_KEYS: `${secret}:kid1` }));
      const lines = violations.map(formatViolation).join('\n');
      expect(lines).toMatch(/GATE_FWD_HMAC_KEYS: entry 1/);
      expect(lines).not.toContain(secret);
    }
  });

  it('GATE_REDIS_CLUSTER_NODES: every node is host:port, [v6]:port or a redis:// URL', () => {
    for (const bad of ['redis-node', 'a:6379,b:port', 'a:0', 'a:70000', 'a:6379,', ':6379']) {
      expect(vars(loadConfig(devEnv({ GATE_STORE: 'redis', GATE_REDIS_CLUSTER_NODES: bad })).violations), bad).toEqual(['GATE_REDIS_CLUSTER_NODES']);
    }
    for (const good of ['a:1,b:2', '10.0.0.1:7000', '[::1]:7000', 'redis://:pw@a:1,rediss://b:2']) {
      expect(loadConfig(devEnv({ GATE_STORE: 'redis', GATE_REDIS_CLUSTER_NODES: good })).violations, good).toEqual([]);
    }
  });
});

describe('the admin client CA', () => {
  it('GATE_ADMIN_CLIENT_CA sharing a certificate with GATE_CLIENT_CA is refused in every profile: every agent would be an admin', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-gate-adminca-'));
    try {
      const agentsCa = await createCa({ alg: 'ec-p256', commonName: 'agents' });
      const adminsCa = await createCa({ alg: 'ec-p256', commonName: 'admins' });
      const file = (name: string, pem: string) => (writeFileSync(join(dir, name), pem), join(dir, name));
      const agents = file('agents.pem', agentsCa.certPem);
      const admins = file('admins.pem', adminsCa.certPem);
      const both = file('both.pem', adminsCa.certPem + agentsCa.certPem);
      const admin = (ca: string) => ({ GATE_CLIENT_CA: agents, GATE_ADMIN_TLS_CERT: '/nonexistent/a.crt', GATE_ADMIN_TLS_KEY: '/nonexistent/a.key', GATE_ADMIN_CLIENT_CA: ca });
      for (const ca of [agents, both]) {
        expect(vars(loadConfig(devEnv(admin(ca))).violations), ca).toEqual(['GATE_ADMIN_CLIENT_CA']);
        expect(vars(added(strictEnv('prod', { GATE_CLIENT_CA: agents }), strictEnv('prod', admin(ca)))), ca).toEqual(['GATE_ADMIN_CLIENT_CA']);
      }
      expect(loadConfig(devEnv(admin(admins))).violations).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('unknown and empty variables', () => {
  it('an unknown GATE_ variable (typo) is a violation naming it', () => {
    const { violations } = loadConfig(devEnv({ GATE_TOKN_TTL_S: '60' }));
    expect(violations).toHaveLength(1);
    expect(violations[0]!.variable).toBe('GATE_TOKN_TTL_S');
    expect(violations[0]!.why).toMatch(/unknown/);
  });

  it('an empty string means unset', () => {
    const { config, violations } = load(
      devEnv({ GATE_STORE: '', GATE_LISTEN: '', GATE_TOKEN_TTL_S: '', GATE_REVOCATION: '', GATE_SIGNING_JWK: '', GATE_TYPO_BUT_EMPTY: '' }),
    );
    expect(violations).toEqual([]);
    expect(config.store.kind).toBe('memory');
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8443 });
    expect(config.tokenTtlS).toBe(300);
    expect(config.revocation.mode).toBe('off');
    expect(config.signing.jwk).toBeUndefined();
    // An empty GATE_ENV is the default, prod.
    expect(load(strictEnv('prod', { GATE_ENV: '' })).config.env).toBe('prod');
  });
});

describe('the config object', () => {
  it('is deeply frozen', () => {
    const { config } = load(devEnv({ GATE_REDIS_CLUSTER_NODES: 'a:1,b:2', GATE_STORE: 'redis' }));
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.store)).toBe(true);
    expect(Object.isFrozen(config.store.clusterNodes)).toBe(true);
    expect(Object.isFrozen(config.rateLimits.challengeIp)).toBe(true);
    expect(() => {
      (config as { tokenTtlS: number }).tokenTtlS = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.store as { kind: string }).kind = 'memory';
    }).toThrow(TypeError);
    expect(config.tokenTtlS).toBe(300);
  });
});

describe('formatViolation', () => {
  it('is `config violation: VAR: why`', () => {
    expect(formatViolation({ variable: 'GATE_STORE', why: 'memory store is dev-only' })).toBe('config violation: GATE_STORE: memory store is dev-only');
  });
});

describe('agent-gate config check (CLI)', () => {
  let fx: Fixtures;
  beforeAll(async () => {
    fx = await makeFixtures();
  });
  /** `agent-gate config check` in-process (the real command tree): no GATE_* of the runner leaks in. */
  async function configCheck(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await runCliGateEnv(['config', 'check'], env);
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  }

  it('prod with a memory store: exit 2, one `config violation: GATE_STORE: ...` line', async () => {
    const r = await configCheck({
      GATE_ENV: 'prod',
      GATE_STORE: 'memory',
      GATE_UPSTREAM_URL: 'https://api.internal',
      GATE_TLS_CERT: fx.serverCertFile,
      GATE_TLS_KEY: fx.serverKeyFile,
      GATE_CLIENT_CA: fx.caFile,
    });
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('config violation: '));
    expect(lines.filter((l) => l.startsWith('config violation: GATE_STORE: '))).toHaveLength(1);
    for (const l of lines) expect(l).toMatch(/^config violation: GATE_[A-Z_]+: \S.*$/);
    // Also the other refusals of this config, each on its own line.
    expect(lines.some((l) => l.startsWith('config violation: GATE_SIGNING_KEY_FILE: '))).toBe(true);
  }, 60_000);

  it('a valid dev config: exit 0, the effective config as JSON on stdout, secrets masked', async () => {
    const jwk = await generateSigningJwk();
    const r = await configCheck({
      GATE_ENV: 'dev',
      GATE_LISTEN: '127.0.0.1:0',
      GATE_UPSTREAM_URL: 'http://127.0.0.1:9',
      GATE_TLS_CERT: fx.serverCertFile,
      GATE_TLS_KEY: fx.serverKeyFile,
      GATE_CLIENT_CA: fx.caFile,
      GATE_SIGNING_JWK: JSON.stringify(jwk),
      GATE_REDIS_URL: 'redis://:hunter2secret@127.0.0.1:6379',
    });
    expect(r.stderr).not.toMatch(/config violation/);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>;
    expect(printed.env).toBe('dev');
    expect(printed.store!.kind).toBe('memory');
    expect(printed.listen).toEqual({ host: '127.0.0.1', port: 0 });
    expect(printed.signing!.jwk).toBe('***');
    expect(r.stdout).not.toContain(jwk.d as string);
    expect(r.stdout).not.toContain('hunter2secret');
  }, 60_000);
});
