/**
 * The option table (src/config/options.ts) against the contract and against itself: every option
 * is a row of section 12's variable table in docs/protocol.md and every variable there is an
 * option, so code and contract cannot drift; every option has a doc; every default parses in
 * every profile and passes that profile's own refusals; every secret is masked where it lands.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig, maskedConfig } from '../../src/config/index.js';
import { OPTION_ENTRIES, OPTION_NAMES, OPTIONS, PROFILES, defaultFor } from '../../src/config/options.js';
import { envSchema, envSchemaFor } from '../../src/config/schema.js';

const protocol = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/**
 * The rows of section 12's variable table: the GATE_* names of each row (`names`) and of its
 * first cell (`described`: the variables the row is about; a meaning cell may mention others).
 */
function section12Rows(): { row: string; names: string[]; described: string[] }[] {
  const start = protocol.indexOf('\n## 12.');
  expect(start, 'docs/protocol.md has a section 12').toBeGreaterThan(0);
  const end = protocol.indexOf('\n## ', start + 1);
  const section = protocol.slice(start, end === -1 ? undefined : end);
  return section
    .split('\n')
    .filter((l) => /^\| `GATE_/.test(l))
    .map((row) => ({
      row,
      names: [...new Set(row.match(/GATE_[A-Z0-9_]+/g) ?? [])],
      described: [...new Set(row.split(' | ')[0]!.match(/GATE_[A-Z0-9_]+/g) ?? [])],
    }));
}

describe('the option table and the contract (docs/protocol.md section 12)', () => {
  const rows = section12Rows();
  const contract = rows.flatMap((r) => r.names);

  it('every option is in section 12\'s variable table', () => {
    const missing = OPTION_NAMES.filter((n) => !contract.includes(n));
    expect(missing, 'options without a row in docs/protocol.md section 12').toEqual([]);
  });

  it('every variable of section 12\'s table is an option', () => {
    const unknown = contract.filter((n) => !Object.hasOwn(OPTIONS, n));
    expect(unknown, 'section 12 names variables the gate does not have').toEqual([]);
  });

  it('no variable is described by two rows', () => {
    const described = rows.flatMap((r) => r.described);
    expect(described.filter((n, i) => described.indexOf(n) !== i)).toEqual([]);
  });

  it('the check would notice a missing row (the table really is read)', () => {
    expect(rows.length).toBeGreaterThan(20);
    expect(contract).toContain('GATE_ENV');
    expect(contract).toContain('GATE_RATE_REFUSAL_IDENTITY');
  });
});

describe('the option table itself', () => {
  it.each(OPTION_ENTRIES)('%s has a one-line doc', (_name, o) => {
    expect(o.doc.trim()).not.toBe('');
    expect(o.doc).not.toMatch(/\n/);
    for (const r of o.refuse ?? []) expect(r.why.trim()).not.toBe('');
  });

  it.each(PROFILES)('every default parses in %s and passes the refusals of that profile', (profile) => {
    for (const [name, o] of OPTION_ENTRIES) {
      const d = defaultFor(o, profile);
      if (d === undefined) continue;
      const parsed = o.schema.safeParse(d);
      expect(parsed.success, `${name} default ${d} in ${profile}`).toBe(true);
      for (const r of o.refuse ?? []) if (r.in.includes(profile)) expect(r.when(parsed.data), `${name}'s ${profile} default is refused there`).toBe(false);
    }
  });

  it('the schema has exactly the table\'s variables, and takes each profile\'s defaults', () => {
    expect(Object.keys(envSchema.shape)).toEqual(OPTION_NAMES);
    expect(envSchemaFor('dev').parse({}).GATE_STORE).toBe('memory');
    expect(envSchemaFor('staging').parse({}).GATE_STORE).toBe('redis');
    expect(envSchemaFor('prod').parse({}).GATE_TLS_MIN_VERSION).toBe('TLSv1.3');
    expect(envSchemaFor('staging').parse({}).GATE_TLS_MIN_VERSION).toBe('TLSv1.2');
    // The default profile's schema is prod's: GATE_ENV defaults to prod.
    expect(envSchema.parse({}).GATE_ENV).toBe('prod');
    expect(envSchema.parse({}).GATE_REVOCATION).toBe('ocsp,crl');
  });

  it('loadConfig takes the defaults of the profile GATE_ENV names', () => {
    const dev = loadConfig({ GATE_ENV: 'dev' }).config!;
    expect([dev.store.kind, dev.revocation.mode, dev.revocation.fail, dev.tls.minVersion, dev.workers]).toEqual(['memory', 'off', 'open', 'TLSv1.2', 1]);
    const prod = loadConfig({ GATE_ENV: 'prod' }).config!;
    expect([prod.store.kind, prod.revocation.mode, prod.revocation.fail, prod.tls.minVersion]).toEqual(['redis', 'ocsp,crl', 'closed', 'TLSv1.3']);
    expect(prod.workers).toBeGreaterThanOrEqual(1);
  });

  it('a refusal of the table names its variable in the profiles it lists, and only there', () => {
    const refused = (env: Record<string, string>) => loadConfig(env).violations.map((v) => `${v.variable}: ${v.why}`);
    expect(refused({ GATE_ENV: 'staging', GATE_TOKEN_TTL_S: '901' })).toContain('GATE_TOKEN_TTL_S: at most 900 outside dev');
    expect(refused({ GATE_ENV: 'dev', GATE_TOKEN_TTL_S: '901' }).some((l) => l.startsWith('GATE_TOKEN_TTL_S'))).toBe(false);
    expect(refused({ GATE_ENV: 'prod', GATE_LOG_LEVEL: 'trace' }).some((l) => l.startsWith('GATE_LOG_LEVEL: '))).toBe(true);
    expect(refused({ GATE_ENV: 'staging', GATE_LOG_LEVEL: 'trace' }).some((l) => l.startsWith('GATE_LOG_LEVEL: '))).toBe(false);
  });

  it('every secret is masked where it lands in the printed config', () => {
    const secret = 'S3cr3tValueNobodyMayPrint';
    const hmac = Buffer.alloc(32, 7).toString('base64');
    const { config } = loadConfig({
      GATE_ENV: 'dev',
      GATE_MODE: 'forwarded',
      GATE_SIGNING_JWK: `{"d":"${secret}"}`,
      GATE_REDIS_URL: `redis://user:${secret}@127.0.0.1:6379`,
      GATE_REDIS_CLUSTER_NODES: `redis://:${secret}@a:1,b:2`,
      GATE_FWD_HMAC_KEYS: `k1:${hmac}`,
    });
    expect(config).toBeDefined();
    const printed = JSON.stringify(maskedConfig(config!));
    expect(printed).not.toContain(secret);
    expect(printed).not.toContain(hmac);
    // Masking keeps what an operator needs to recognise the setting.
    expect(printed).toContain('"hmacKeys":"k1:***"');
    expect(printed).toContain('127.0.0.1:6379');
    // Every option marked secret is one of these (a new secret needs a line above).
    expect(OPTION_ENTRIES.filter(([, o]) => o.secret).map(([n]) => n).sort()).toEqual(['GATE_FWD_HMAC_KEYS', 'GATE_REDIS_CLUSTER_NODES', 'GATE_REDIS_URL', 'GATE_SIGNING_JWK']);
  });
});
