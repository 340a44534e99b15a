/**
 * Every startup failure of `agent-gate serve` takes one path (PROTOCOL.md sections 11 and 12):
 * exit 2 and `config violation: <VARIABLE>: <why>` lines naming the variable to change, never an
 * `agent-gate: ...` crash line or exit 1. Each case is the real command line with one broken
 * input: TLS materials, the admin listener's files, its token, the CRL files, the audit files,
 * the attestation registry, and a listener address that cannot be bound. The cases run the
 * real command tree in-process (test/helpers/cli.ts: process.exit and stderr captured, an
 * escaping error reported as main.ts reports it); the admin-token case and the unbroken
 * baseline also run as a real child process.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { runCliGateEnv } from '../helpers/cli.js';
import { cliArgv } from '../helpers/serve.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let fx: Fixtures;
let dir: string;
let busy: Server;
let busyPort: number;
let signingJwk: string;

beforeAll(async () => {
  fx = await makeFixtures();
  // A fixed key: dev's ephemeral-key notice would be one more stderr line.
  signingJwk = JSON.stringify(await generateSigningJwk());
  dir = mkdtempSync(join(tmpdir(), 'ag-startup-'));
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  busyPort = (busy.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise((resolve) => busy?.close(resolve));
});

/** A dev gate that would start: every case breaks one thing. */
function devEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    GATE_ENV: 'dev',
    GATE_LISTEN: '127.0.0.1:0',
    GATE_ADMIN_LISTEN: '127.0.0.1:0',
    GATE_UPSTREAM_URL: 'http://127.0.0.1:9',
    GATE_TLS_CERT: fx.serverCertFile,
    GATE_TLS_KEY: fx.serverKeyFile,
    GATE_CLIENT_CA: fx.caFile,
    GATE_LOG_LEVEL: 'info',
    GATE_SIGNING_JWK: signingJwk,
  };
}

/**
 * `agent-gate serve` in this process (test/helpers/cli.ts) with `env` as the gate's whole
 * GATE_* environment: the runner's own GATE_* variables are unset for the run.
 */
async function serveInProcess(env: Record<string, string>): Promise<{ code: number | string; stderr: string }> {
  const r = await runCliGateEnv(['serve'], { ...env, GATE_LOG_LEVEL: 'silent' });
  return { code: r.exitCode, stderr: r.stderr };
}

/** Runs `agent-gate serve`; a gate that starts (both listeners up) is killed and reported as exit `started`. */
function serve(env: Record<string, string>): Promise<{ code: number | string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cliArgv(), 'serve'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    let started = false;
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if ((stdout.match(/Server listening/g) ?? []).length >= 2 && !started) {
        started = true;
        child.kill('SIGKILL');
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code: started ? 'started' : (code ?? 'signal'), stderr });
    });
  });
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text, { mode: 0o600 });
  return p;
}

describe('agent-gate serve: every startup failure exits 2 with `config violation: VAR: why`', () => {
  const cases: [string, () => Record<string, string>, string, RegExp][] = [
    ['unreadable server certificate (materials)', () => ({ GATE_TLS_CERT: join(dir, 'missing.crt') }), 'GATE_TLS_CERT', /cannot read .*ENOENT/],
    ['a trust bundle without a certificate (materials)', () => ({ GATE_CLIENT_CA: file('empty-ca.pem', 'not a certificate\n') }), 'GATE_CLIENT_CA', /\S/],
    ['unreadable admin TLS key (admin listener)', () => ({ GATE_ADMIN_TLS_CERT: fx.serverCertFile, GATE_ADMIN_TLS_KEY: join(dir, 'missing-admin.key') }), 'GATE_ADMIN_TLS_KEY', /cannot read .*ENOENT/],
    // Node would trust its root store for admin client certificates: any public one would authorize the admin API.
    ['an empty admin client CA (admin listener)', () => ({ GATE_ADMIN_TLS_CERT: fx.serverCertFile, GATE_ADMIN_TLS_KEY: fx.serverKeyFile, GATE_ADMIN_CLIENT_CA: file('empty-admin-ca.pem', '') }), 'GATE_ADMIN_CLIENT_CA', /^\S+empty-admin-ca\.pem holds no PEM certificate$/],
    ['an admin client CA with a block that is not a certificate', () => ({ GATE_ADMIN_TLS_CERT: fx.serverCertFile, GATE_ADMIN_TLS_KEY: fx.serverKeyFile, GATE_ADMIN_CLIENT_CA: file('bad-admin-ca.pem', '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n') }), 'GATE_ADMIN_CLIENT_CA', /holds a PEM block that is not a certificate$/],
    ['an admin token shorter than 16 characters', () => ({ GATE_ADMIN_TOKEN_FILE: file('short-token', 'short\n') }), 'GATE_ADMIN_TOKEN_FILE', /at least 16 characters/],
    ['an unreadable admin token file', () => ({ GATE_ADMIN_TOKEN_FILE: join(dir, 'missing-token') }), 'GATE_ADMIN_TOKEN_FILE', /cannot read .*ENOENT/],
    ['a CRL file that is not a CRL', () => ({ GATE_REVOCATION: 'crl', GATE_CRL_FILES: file('bad.crl', 'garbage') }), 'GATE_CRL_FILES', /cannot load a CRL/],
    ['an audit trail without a readable key', () => ({ GATE_AUDIT_FILE: join(dir, 'audit.log'), GATE_AUDIT_KEY_FILE: join(dir, 'missing-audit.key') }), 'GATE_AUDIT_KEY_FILE', /\S/],
    ['an attestation registry that is not JSON', () => ({ GATE_ATTESTATION_REGISTRY: file('registry.json', '{not json') }), 'GATE_ATTESTATION_REGISTRY', /\S/],
    ['a public listener address already in use', () => ({ GATE_LISTEN: `127.0.0.1:${busyPort}` }), 'GATE_LISTEN', new RegExp(`cannot listen on 127\\.0\\.0\\.1:\\d+: EADDRINUSE`)],
    ['an admin listener address already in use', () => ({ GATE_ADMIN_LISTEN: `127.0.0.1:${busyPort}` }), 'GATE_ADMIN_LISTEN', /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/],
  ];

  it.each(cases)('%s', async (_name, broken, variable, why) => {
    const r = await serveInProcess({ ...devEnv(), ...broken() });
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('config violation: '));
    expect(r.code, r.stderr).toBe(2);
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]!.startsWith(`config violation: ${variable}: `), lines[0]).toBe(true);
    expect(lines[0]!.slice(`config violation: ${variable}: `.length)).toMatch(why);
    // Nothing else: no `agent-gate: ...` crash line, no stack.
    expect(r.stderr).not.toMatch(/^agent-gate: /m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 20_000);

  it('the real command line: a short admin token is exit 2 and one violation line', async () => {
    const r = await serve({ ...devEnv(), GATE_ADMIN_TOKEN_FILE: file('short-token-2', 'fifteen-chars!!\n') });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim()).toMatch(/^config violation: GATE_ADMIN_TOKEN_FILE: \S+ must hold a secret of at least 16 characters$/);
  }, 60_000);

  it('the unbroken configuration does start (the cases above fail for their one change)', async () => {
    const r = await serve(devEnv());
    expect(r.code, r.stderr).toBe('started');
  }, 60_000);
});
