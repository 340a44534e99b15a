/**
 * The tables of src/gate/pipeline.ts against the contract's own words: the order of the
 * numbered steps of docs/protocol.md section 4 (gate endpoints) and of section 5 (gated
 * requests). Each row is tied to the phrase of the contract that names it; the rows of every
 * table must meet those phrases in the order the contract lists them, and cover every step.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHECKS, PIPELINE, rowsOf, type CheckName, type Endpoint, type Mode } from '../../src/gate/index.js';

const protocol = readFileSync(resolve(__dirname, '../../docs/protocol.md'), 'utf8');
const section = (from: string, to: string) => protocol.slice(protocol.indexOf(from), protocol.indexOf(to));
const S4 = section('## 4. Token', '## 5.').replace(/\s+/g, ' ');
const S5 = section('## 5. Gated requests', '## 6.').replace(/\s+/g, ' ');
const S12 = section('## 12.', '\n## 13.').replace(/\s+/g, ' ');

/** The phrase of section 4 (or 5 for the token rows of a gated request) that each row implements. */
const S4_PHRASE: Partial<Record<CheckName, string>> = {
  shedding: '1. load shedding',
  draining: '1. load shedding',
  path_policy: '2. request form, path and method',
  identity_direct: '3. identity: certificate or forwarded headers',
  identity_forwarded: '3. identity: certificate or forwarded headers',
  forwarded_address: '3. identity: certificate or forwarded headers',
  revocation: 'forwarded headers, revocation',
  deny_list: 'revocation, deny list',
  cooldown: '4. rate limits',
  limit_challenge_identity: '4. rate limits',
  limit_challenge_address: '4. rate limits',
  limit_token: '4. rate limits',
  challenge_body: '5. content type',
  content_type: '5. content type',
  body_size: '6. size',
  json_shape: '7. JSON shape',
  challenge_consume: '8. atomic consume',
  on_time: '9. on time',
  challenge_binding: 'same certificate thumbprint as at issue',
  pow: 'pow when required',
  proof: '10. JWS verified',
  attestation: '11. attestation',
};
/** Rows that implement several steps at once (section 3: the challenge body is empty or any JSON object). */
const SPANS: Partial<Record<CheckName, number[]>> = { challenge_body: [5, 6, 7] };
const S5_PHRASE: Partial<Record<CheckName, string>> = {
  identity_direct: 'Identity is checked first',
  identity_forwarded: 'Identity is checked first',
  forwarded_address: 'Identity is checked first',
  revocation: 'forwarded headers, revocation',
  deny_list: 'revocation, deny list',
  bearer: 'then the token: `Authorization: Bearer',
  token_binding: '`cnf.x5t#S256` equal to the presented certificate',
};

/** Where each numbered step (1. to 11.) of section 4's ordered list starts. */
const STEP_STARTS: number[] = (() => {
  const from = S4.indexOf('checked in this order');
  const starts: number[] = [];
  for (let n = 1, at = from; n <= 11; n++) {
    at = S4.indexOf(`${n}. `, at);
    expect(at, `section 4 lost its step ${n}`).toBeGreaterThan(from);
    starts.push(at);
  }
  return starts;
})();

/** The number of the step of section 4 that position `at` falls in. */
function stepAt(at: number): number {
  let step = 0;
  STEP_STARTS.forEach((start, i) => {
    if (start <= at) step = i + 1;
  });
  return step;
}

/** Position of each row's phrase in `text`; fails when the contract no longer says it. */
function positions(rows: CheckName[], phrases: Partial<Record<CheckName, string>>, text: string): number[] {
  return rows.map((row) => {
    const phrase = phrases[row];
    expect(phrase, `row ${row} has no phrase of the contract`).toBeDefined();
    const at = text.indexOf(phrase!);
    expect(at, `the contract no longer says "${phrase}" (row ${row})`).toBeGreaterThanOrEqual(0);
    return at;
  });
}

function expectInContractOrder(label: string, rows: CheckName[], at: number[]): void {
  for (let i = 1; i < rows.length; i++) {
    expect(at[i]!, `${label}: ${rows[i]} comes after ${rows[i - 1]} in the table but before it in the contract`).toBeGreaterThanOrEqual(at[i - 1]!);
  }
}

const MODES = Object.keys(PIPELINE) as Mode[];

describe('pipeline tables follow the contract order', () => {
  it('every row of every table is a known check', () => {
    for (const mode of MODES) for (const endpoint of Object.keys(PIPELINE[mode].endpoints) as Endpoint[]) for (const row of rowsOf(mode, endpoint)) expect(CHECKS).toHaveProperty(row);
  });

  for (const mode of MODES) {
    for (const endpoint of ['challenge', 'token'] as const) {
      it(`${mode} ${endpoint}: rows in the order of section 4's numbered steps, every step present`, () => {
        const rows = rowsOf(mode, endpoint);
        expectInContractOrder(`${mode} ${endpoint}`, rows, positions(rows, S4_PHRASE, S4));
        const steps = new Set(rows.flatMap((r) => SPANS[r] ?? [stepAt(S4.indexOf(S4_PHRASE[r]!) + S4_PHRASE[r]!.length)]));
        const want = endpoint === 'token' ? 11 : 7;
        // Embedded mode leaves steps 1 and 2 to the host server.
        const first = mode === 'embedded' ? 3 : 1;
        for (let step = first; step <= want; step++) expect(steps.has(step), `${mode} ${endpoint} lacks step ${step}`).toBe(true);
      });
    }
  }

  for (const mode of MODES) {
    const endpoint: Endpoint = PIPELINE[mode].endpoints.proxied ? 'proxied' : 'authorize';
    it(`${mode} ${endpoint}: edge as section 4 steps 1-2, then identity and token as section 5, then the proxy limit (section 12)`, () => {
      const edge = [...PIPELINE[mode].edge];
      expectInContractOrder(`${mode} edge`, edge, positions(edge, S4_PHRASE, S4));
      const rows = PIPELINE[mode].endpoints[endpoint]!.headers.filter((r) => r !== 'limit_proxy');
      expect(rows.slice(0, 1)).toEqual([mode === 'direct' || mode === 'embedded' ? 'identity_direct' : 'identity_forwarded']);
      expectInContractOrder(`${mode} ${endpoint}`, rows, positions(rows, S5_PHRASE, S5));
      expect(rows).toEqual(expect.arrayContaining(['revocation', 'deny_list', 'bearer', 'token_binding']));
      expect(S12).toContain('The proxy limit applies after the token check');
      expect(PIPELINE[mode].endpoints[endpoint]!.headers.at(-1)).toBe('limit_proxy');
    });
  }

  it('modes differ only in where identity comes from and whether the edge is the gate\'s', () => {
    const strip = (rows: CheckName[]) => rows.filter((r) => !['identity_direct', 'identity_forwarded', 'forwarded_address', 'shedding', 'draining', 'path_policy'].includes(r));
    for (const endpoint of ['challenge', 'token'] as const) {
      const base = strip(rowsOf('direct', endpoint));
      for (const mode of MODES) expect(strip(rowsOf(mode, endpoint)), `${mode} ${endpoint}`).toEqual(base);
    }
    // Forwarded identity is always followed by the signed client address, before anything uses the address.
    for (const mode of MODES) for (const endpoint of Object.keys(PIPELINE[mode].endpoints) as Endpoint[]) {
      const rows = rowsOf(mode, endpoint);
      const i = rows.indexOf('identity_forwarded');
      if (i >= 0) expect(rows[i + 1], `${mode} ${endpoint}`).toBe('forwarded_address');
    }
  });
});
