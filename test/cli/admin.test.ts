/**
 * `agent-gate admin ...` run in-process (test/helpers/cli.ts: the real command tree, output and
 * exit statuses) against real gates sharing Redis: every command, refusals as one stderr line with
 * exit 1, usage and credential errors with exit 2, a CLI deny reaching the agent as 403
 * `agent_denied`, and an HTTPS admin listener with an admin client certificate.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { createCa, issueAgentCert, type KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { call, tlsAgent } from '../helpers/http.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const SECRET = `cli-admin-secret-${randomBytes(12).toString('hex')}`;
const WRONG = `wrong-admin-secret-${randomBytes(12).toString('hex')}`;
// Unique per run: the deny list and cooldown registry live in the Redis every suite shares.
const RUN = randomBytes(4).toString('hex');

let fx: Fixtures;
let up: RecordingUpstream;
let tokenFile: string;
let wrongTokenFile: string;
let g: RunningGate;
/** Admin listener on HTTPS, passing only holders of an admin certificate. */
let tlsGate: RunningGate;
let tlsAdminUrl: string;
let operator: { cert: string; key: string };
const closers: (() => Promise<void>)[] = [];
let n = 0;

/** Runs `agent-gate admin ...` in-process; `env` sets (string) or unsets (null) GATE_ADMIN_URL and GATE_ADMIN_TOKEN_FILE. */
async function cli(args: string[], env: { GATE_ADMIN_URL?: string | null; GATE_ADMIN_TOKEN_FILE?: string | null } = {}): Promise<CliResult> {
  const r = await runCli(['admin', ...args], { GATE_ADMIN_URL: g.adminUrl, GATE_ADMIN_TOKEN_FILE: tokenFile, ...env });
  // Whatever happens, the secret is never printed.
  expect(r.stdout + r.stderr).not.toContain(SECRET);
  expect(r.stdout + r.stderr).not.toContain(WRONG);
  return r;
}

/** Exit 0, nothing on stderr, one JSON document on stdout. */
function ok<T = Record<string, unknown>>(r: CliResult): T {
  expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
  return r.json<T>();
}

/** Exit `code`, nothing on stdout, exactly one stderr line matching `line`. */
function failed(r: CliResult, code: number, line: RegExp): void {
  expect({ exitCode: r.exitCode, stdout: r.stdout }).toEqual({ exitCode: code, stdout: '' });
  expect(r.stderr.endsWith('\n')).toBe(true);
  expect(r.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(line)]);
}

async function agentCert(): Promise<KeyAndCert> {
  return issueAgentCert(fx.ca, `cli-admin-${RUN}-${n++}`, { alg: 'ec-p256' });
}

function client(who: KeyAndCert): GateClient {
  const c = new GateClient({ baseUrl: g.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetryAfterS: 0 });
  closers.push(() => c.close());
  return c;
}

/** Status and code of a challenge request by `who` (403 agent_denied once denied). */
async function challengeAs(who: KeyAndCert): Promise<{ status: number; code: unknown; instance: unknown }> {
  const agent = tlsAgent(fx, who);
  try {
    const r = await call(agent, `${g.url}/.agent-gate/v1/challenge`, { method: 'POST' });
    const j = r.json();
    return { status: r.status, code: j.code, instance: j.instance };
  } finally {
    await agent.close();
  }
}

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  tokenFile = join(fx.dir, 'admin.token');
  wrongTokenFile = join(fx.dir, 'wrong.token');
  writeFileSync(tokenFile, SECRET + '\n', { mode: 0o600 });
  writeFileSync(wrongTokenFile, WRONG + '\n', { mode: 0o600 });
  const base = { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: up.url };
  g = await startGate(testEnv(fx, { ...base, GATE_ADMIN_TOKEN_FILE: tokenFile, GATE_RATE_LIMITS: 'on', GATE_RATE_FAILED_PROOFS: '2/600' }));

  const adminCa = await createCa({ alg: 'ec-p256', commonName: 'agent-gate admin CA (cli test)' });
  const adminCaFile = join(fx.dir, 'admin-ca.crt');
  writeFileSync(adminCaFile, adminCa.certPem);
  const op = await issueAgentCert(adminCa, 'operator', { alg: 'ec-p256' });
  operator = { cert: join(fx.dir, 'operator.crt'), key: join(fx.dir, 'operator.key') };
  writeFileSync(operator.cert, op.certPem);
  writeFileSync(operator.key, op.keyPem, { mode: 0o600 });
  tlsGate = await startGate(
    testEnv(fx, { ...base, GATE_ADMIN_TLS_CERT: fx.serverCertFile, GATE_ADMIN_TLS_KEY: fx.serverKeyFile, GATE_ADMIN_CLIENT_CA: adminCaFile }),
  );
  tlsAdminUrl = tlsGate.adminUrl.replace(/^http:/, 'https:');
});

afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await g?.close();
  await tlsGate?.close();
  await up?.close();
});

describe('agent-gate admin', () => {
  it('cooldowns and denylist print one JSON document', async () => {
    expect(Array.isArray(ok<{ cooldowns: unknown }>(await cli(['cooldowns'])).cooldowns)).toBe(true);
    expect(Array.isArray(ok<{ entries: unknown }>(await cli(['denylist'])).entries)).toBe(true);
  });

  it('cooldowns lists a certificate after failed proofs; cooldown-clear lets the agent in at once', async () => {
    const c = client(await agentCert());
    for (let i = 0; i < 2; i++) {
      const ch = await c.challenge();
      expect((await c.submitProof({ challenge_id: ch.challenge_id, proof: await c.signProof(ch, { payload: { aud: 'x' } }) })).status).toBe(403);
    }
    expect((await c.request('/blocked').catch((e: { code: string }) => ({ status: e.code }))).status).toBe('rate_limited');
    const listed = ok<{ cooldowns: { thumbprint: string; until: number }[] }>(await cli(['cooldowns']));
    const mine = listed.cooldowns.find((x) => x.thumbprint === c.thumbprint);
    expect(mine?.until).toBeGreaterThan(Date.now());

    expect(ok(await cli(['cooldown-clear', c.thumbprint]))).toEqual({ thumbprint: c.thumbprint, cleared: true });
    expect(ok<{ cooldowns: { thumbprint: string }[] }>(await cli(['cooldowns'])).cooldowns.map((x) => x.thumbprint)).not.toContain(c.thumbprint);
    expect((await c.request('/unblocked')).status).toBe(200);
  });

  it('deny --thumbprint refuses the agent with 403 agent_denied; refusal looks the refusal up; undeny lets it back in', async () => {
    const who = await agentCert();
    const c = client(who);
    expect((await c.request('/before')).status).toBe(200);

    const entry = ok<{ id: string; thumbprint: string; reason: string; created_at: number; expires_at?: number }>(
      await cli(['deny', '--thumbprint', c.thumbprint, '--reason', 'test: compromised key']),
    );
    expect(entry).toMatchObject({ id: expect.stringMatching(/^[0-9a-f]{16}$/), thumbprint: c.thumbprint, reason: 'test: compromised key' });
    expect(entry.expires_at).toBeUndefined();
    await waitFor(async () => (await challengeAs(who)).status === 403, 5000, 'the deny entry to reach the gate');
    const refused = await challengeAs(who);
    expect(refused).toMatchObject({ status: 403, code: 'agent_denied', instance: expect.stringMatching(/^urn:agent-gate:refusal:[a-z0-9]+$/) });
    expect(ok<{ entries: { id: string }[] }>(await cli(['denylist'])).entries.map((e) => e.id)).toContain(entry.id);

    // The refusal, by the whole instance URN and by its bare id.
    const instance = String(refused.instance);
    const id = instance.split(':').at(-1)!;
    await waitFor(async () => (await cli(['refusal', id])).exitCode === 0, 5000, 'the refusal record');
    for (const ref of [instance, id]) {
      expect(ok(await cli(['refusal', ref]))).toMatchObject({ refusal_id: id, code: 'agent_denied', status: 403, thumbprint: c.thumbprint });
    }

    expect(ok(await cli(['undeny', entry.id]))).toEqual({ id: entry.id, removed: true });
    expect(ok<{ entries: { id: string }[] }>(await cli(['denylist'])).entries.map((e) => e.id)).not.toContain(entry.id);
    await waitFor(async () => (await challengeAs(who)).status === 201, 5000, 'the removal to reach the gate');
    failed(await cli(['undeny', entry.id]), 1, /^error: not_found \(404\) instance=urn:agent-gate:refusal:[a-z0-9]+$/);
  });

  it('deny --agent-id with --ttl sets the expiry and refuses every certificate of that agent', async () => {
    const who = await agentCert();
    const agentId = `urn:agent:cli-admin-${RUN}-${n - 1}`;
    const before = Date.now();
    const entry = ok<{ id: string; agent_id: string; created_at: number; expires_at: number }>(
      await cli(['deny', '--agent-id', agentId, '--reason', 'test: by agent id', '--ttl', '3600']),
    );
    const after = Date.now();
    expect(entry).toMatchObject({ agent_id: agentId, reason: 'test: by agent id' });
    // The gate reads its clock separately for created_at and expires_at.
    expect(entry.expires_at).toBeGreaterThanOrEqual(before + 3600_000);
    expect(entry.expires_at).toBeLessThanOrEqual(after + 3600_000);
    await waitFor(async () => (await challengeAs(who)).status === 403, 5000, 'the deny entry to reach the gate');
    expect(await challengeAs(who)).toMatchObject({ status: 403, code: 'agent_denied' });
    expect(ok(await cli(['undeny', entry.id]))).toEqual({ id: entry.id, removed: true });
  });

  it('a short-lived entry expiring does not lift a permanent one: denylist shows the permanent entry and the agent stays denied', async () => {
    const who = await agentCert();
    const agentId = `urn:agent:cli-admin-${RUN}-${n - 1}`;
    const c = client(who);
    const permanent = ok<{ id: string }>(await cli(['deny', '--agent-id', agentId, '--reason', 'test: permanent']));
    const short = ok<{ id: string; expires_at: number }>(await cli(['deny', '--thumbprint', c.thumbprint, '--reason', 'test: briefly', '--ttl', '1']));
    const shortByAgent = ok<{ id: string; expires_at: number }>(await cli(['deny', '--agent-id', agentId, '--reason', 'test: briefly', '--ttl', '1']));
    await waitFor(() => Date.now() > Math.max(short.expires_at, shortByAgent.expires_at) + 100, 5000, 'the short-lived entries to expire');
    const mine = ok<{ entries: { id: string; agent_id?: string; thumbprint?: string }[] }>(await cli(['denylist'])).entries.filter(
      (e) => e.agent_id === agentId || e.thumbprint === c.thumbprint,
    );
    expect(mine.map((e) => e.id)).toEqual([permanent.id]);
    expect(await challengeAs(who)).toMatchObject({ status: 403, code: 'agent_denied' });
    expect(ok(await cli(['undeny', permanent.id]))).toEqual({ id: permanent.id, removed: true });
    expect(ok<{ entries: { id: string }[] }>(await cli(['denylist'])).entries.map((e) => e.id)).not.toContain(permanent.id);
    expect((await challengeAs(who)).status).toBe(201);
  });

  it('refusal of an unknown id is not_found with exit 1', async () => {
    failed(await cli(['refusal', 'doesnotexist']), 1, /^error: not_found \(404\) instance=urn:agent-gate:refusal:[a-z0-9]+$/);
  });

  it('a wrong secret is refused with token_invalid and exit 1, and is never printed', async () => {
    for (const args of [['denylist'], ['cooldowns'], ['deny', '--agent-id', `urn:agent:never-${RUN}`, '--reason', 'x']]) {
      failed(await cli(args, { GATE_ADMIN_TOKEN_FILE: wrongTokenFile }), 1, /^error: token_invalid \(401\) instance=urn:agent-gate:refusal:[a-z0-9]+$/);
    }
    // --token-file overrides the variable.
    failed(await cli(['denylist', '--token-file', wrongTokenFile]), 1, /^error: token_invalid \(401\)/);
    ok(await cli(['denylist', '--token-file', tokenFile], { GATE_ADMIN_TOKEN_FILE: wrongTokenFile }));
  });

  it('credential errors exit 2 with one line: missing token file, no credential, empty file', async () => {
    const empty = join(fx.dir, 'empty.token');
    writeFileSync(empty, '\n');
    const missing = join(fx.dir, 'nope.token');
    failed(await cli(['denylist'], { GATE_ADMIN_TOKEN_FILE: missing }), 2, new RegExp(`^error: cannot read --token-file ${missing}: ENOENT$`));
    failed(await cli(['cooldowns', '--token-file', missing]), 2, /^error: cannot read --token-file .*: ENOENT$/);
    failed(await cli(['denylist'], { GATE_ADMIN_TOKEN_FILE: null }), 2, /^error: no admin credential/);
    failed(await cli(['denylist'], { GATE_ADMIN_TOKEN_FILE: empty }), 2, /^error: --token-file .*: want one line holding the admin secret$/);
  });

  it('usage errors exit 2 with one line and send nothing', async () => {
    const tp = 'A'.repeat(43);
    const emptyCa = join(fx.dir, 'empty.crt');
    writeFileSync(emptyCa, '');
    const brokenCa = join(fx.dir, 'broken.crt');
    writeFileSync(brokenCa, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
    const cases: [string[], RegExp][] = [
      [['deny', '--reason', 'x'], /^error: give --thumbprint or --agent-id$/],
      [['deny', '--thumbprint', tp, '--agent-id', 'a', '--reason', 'x'], /^error: option '--thumbprint <thumbprint>' cannot be used with option '--agent-id <id>'$/],
      [['deny', '--thumbprint', tp], /^error: required option '--reason <text>' not specified$/],
      [['deny', '--thumbprint', 'short', '--reason', 'x'], /^error: option '--thumbprint <thumbprint>' argument 'short' is invalid\. want a 43-character/],
      [['deny', '--agent-id', 'a', '--reason', 'x', '--ttl', '0'], /^error: option '--ttl <seconds>' argument '0' is invalid/],
      [['deny', '--agent-id', 'a', '--reason', 'x', '--ttl', '1h'], /^error: option '--ttl <seconds>' argument '1h' is invalid/],
      [['cooldown-clear'], /^error: missing required argument 'thumbprint'$/],
      [['cooldown-clear', '../denylist'], /^error: command-argument value '\.\.\/denylist' is invalid for argument 'thumbprint'/],
      [['undeny', 'XYZ'], /^error: command-argument value 'XYZ' is invalid for argument 'id'/],
      [['refusal', 'urn:agent-gate:refusal:'], /^error: command-argument value .* is invalid for argument 'id'/],
      [['refusal', 'a/b'], /^error: command-argument value 'a\/b' is invalid for argument 'id'/],
      [['denylist', '--bogus'], /^error: unknown option '--bogus'$/],
      [['bogus'], /^error: unknown command 'bogus'$/],
      [['denylist', '--url', 'not a url'], /^error: --url: not a URL/],
      [['denylist', '--url', 'ftp://127.0.0.1/'], /^error: --url: want http:\/\/ or https:\/\//],
      [['denylist', '--url', 'http://192.0.2.1:9464'], /^error: refusing to send the admin secret over http:\/\/ to 192\.0\.2\.1; use https:\/\/$/],
      [['denylist', '--cert', operator.cert, '--key', operator.key], /^error: --cert, --key, --ca and --servername need an https:\/\/ --url$/],
      [['denylist', '--url', 'https://127.0.0.1:1', '--cert', operator.cert], /^error: --cert and --key go together$/],
      // Node would trust the system roots for a ca without a certificate, and send the secret there.
      [['denylist', '--url', 'https://127.0.0.1:1', '--token-file', tokenFile, '--ca', emptyCa], /^error: --ca .*empty\.crt: holds no PEM certificate$/],
      [['denylist', '--url', 'https://127.0.0.1:1', '--token-file', tokenFile, '--ca', tokenFile], /^error: --ca .*admin\.token: holds no PEM certificate$/],
      [['denylist', '--url', 'https://127.0.0.1:1', '--token-file', tokenFile, '--ca', brokenCa], /^error: --ca .*broken\.crt: holds a PEM block that is not a certificate$/],
    ];
    // The default URL is a listener that only counts connections: usage errors must send nothing.
    let connections = 0;
    const counter = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => counter.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(counter.address() as AddressInfo).port}`;
    try {
      // A few processes at a time: each is a node + tsx start-up.
      for (let i = 0; i < cases.length; i += 4) {
        const batch = cases.slice(i, i + 4);
        const results = await Promise.all(batch.map(([args]) => cli(args, { GATE_ADMIN_URL: url })));
        results.forEach((r, j) => {
          const [args, line] = batch[j]!;
          expect({ args, exitCode: r.exitCode, stdout: r.stdout }).toEqual({ args, exitCode: 2, stdout: '' });
          expect(r.stderr.trimEnd().split('\n'), args.join(' ')).toEqual([expect.stringMatching(line)]);
        });
      }
    } finally {
      await new Promise((resolve) => counter.close(resolve));
    }
    expect(connections).toBe(0);
  });

  it('an unreachable admin listener is one error line with exit 1', async () => {
    const port = await freePort();
    failed(await cli(['denylist'], { GATE_ADMIN_URL: `http://127.0.0.1:${port}` }), 1, new RegExp(`^error: cannot reach the admin listener at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });

  it('an HTTPS admin listener with GATE_ADMIN_CLIENT_CA takes an admin certificate instead of the secret', async () => {
    const tls = ['--url', tlsAdminUrl, '--ca', fx.caFile];
    const entries = ok<{ entries: unknown[] }>(await cli(['denylist', ...tls, '--cert', operator.cert, '--key', operator.key], { GATE_ADMIN_TOKEN_FILE: null }));
    expect(Array.isArray(entries.entries)).toBe(true);
    // Past the handshake (here checked against the name given by --servername), refusals are the API's own.
    const withCert = [...tls, '--cert', operator.cert, '--key', operator.key, '--servername', 'localhost'];
    failed(await cli(['refusal', 'doesnotexist', ...withCert], { GATE_ADMIN_TOKEN_FILE: null }), 1, /^error: not_found \(404\) instance=urn:agent-gate:refusal:/);
    // Without an admin certificate the handshake fails, whatever secret is sent.
    failed(await cli(['denylist', ...tls]), 1, /^error: cannot reach the admin listener at https:\/\/127\.0\.0\.1:\d+: /);
    // An agent certificate (another CA) is not an admin certificate.
    const agentCrt = join(fx.dir, 'agent.crt');
    const agentKey = join(fx.dir, 'agent.key');
    writeFileSync(agentCrt, fx.agents.p256.certPem);
    writeFileSync(agentKey, fx.agents.p256.keyPem, { mode: 0o600 });
    failed(await cli(['denylist', ...tls, '--cert', agentCrt, '--key', agentKey], { GATE_ADMIN_TOKEN_FILE: null }), 1, /^error: cannot reach the admin listener/);
    // Without --ca the gate's test certificate is not trusted.
    failed(await cli(['denylist', '--url', tlsAdminUrl, '--cert', operator.cert, '--key', operator.key], { GATE_ADMIN_TOKEN_FILE: null }), 1, /^error: cannot reach the admin listener/);
  });
});
