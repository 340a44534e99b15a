/**
 * The prod profile through the real command line (PROTOCOL.md sections 11 and 12): a correct
 * `GATE_ENV=prod` configuration passes `agent-gate config check` and `agent-gate serve` runs
 * the whole flow with it (Redis store, signing key file 0600, OCSP+CRL revocation failing
 * closed against a real `openssl ocsp` responder, TLS 1.3, loopback admin, log level info),
 * then drains on SIGTERM with exit 0. Each prod refusal is triggered by its own bad
 * configuration, exits 2 with a `config violation: <VAR>: ...` line naming the variable, and
 * (for `serve`) never binds a port.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeProtectedHeader, type JWK } from 'jose';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { devPkiPaths, initDevPki, issueAgentCert } from '../../src/pki/index.js';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { runCli } from '../helpers/cli.js';
import { call, tlsAgent } from '../helpers/http.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { cliArgv } from '../helpers/serve.js';
import { gateSuite } from '../helpers/suite.js';
import { FORBIDDEN } from '../setup/log-scan.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** A clean environment for the child: nothing of the runner's GATE_* (or npm settings) leaks in. */
const BASE_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };

const suite = gateSuite({ ocsp: true });
let dir: string;
let signingJwk: JWK;
let keyFile: string;
let keyFile0644: string;
let devCaBundle: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ag-prod-'));
  signingJwk = await generateSigningJwk();
  keyFile = join(dir, 'signing.jwk');
  writeFileSync(keyFile, JSON.stringify(signingJwk) + '\n', { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  keyFile0644 = join(dir, 'signing-0644.jwk');
  copyFileSync(keyFile, keyFile0644);
  chmodSync(keyFile0644, 0o644);
  // A trust bundle holding the test CA and the generated dev CA ("agent-gate dev CA").
  const devDir = join(dir, 'dev-pki');
  await initDevPki(devDir, { alg: 'ec-p256' });
  devCaBundle = join(dir, 'bundle-with-dev-ca.crt');
  writeFileSync(devCaBundle, suite.fx.ca.certPem + readFileSync(devPkiPaths(devDir).caCert, 'utf8'));
});

/** A correct prod configuration on the given ports. */
function prodEnv(ports: { port: number; adminPort: number } = { port: 0, adminPort: 0 }): Record<string, string> {
  return {
    GATE_ENV: 'prod',
    GATE_LISTEN: `127.0.0.1:${ports.port}`,
    GATE_ADMIN_LISTEN: `127.0.0.1:${ports.adminPort}`,
    GATE_TLS_CERT: suite.fx.serverCertFile,
    GATE_TLS_KEY: suite.fx.serverKeyFile,
    GATE_TLS_MIN_VERSION: 'TLSv1.3',
    GATE_CLIENT_CA: suite.fx.caFile,
    GATE_STORE: 'redis',
    GATE_REDIS_URL: inject('redisUrl'),
    // Loopback plain http is allowed in prod; the recording upstream listens on 127.0.0.1.
    GATE_UPSTREAM_URL: suite.up.url,
    GATE_SIGNING_KEY_FILE: keyFile,
    GATE_REVOCATION: 'ocsp,crl',
    GATE_REVOCATION_FAIL: 'closed',
    GATE_OCSP_URL: suite.ocsp.url,
    GATE_REVOCATION_TIMEOUT_MS: '5000',
    GATE_LOG_LEVEL: 'info',
  };
}

type Run = { code: number; stdout: string; stderr: string };

/**
 * `agent-gate config check` in-process (the real command tree, exit status and output): a tsx
 * process per case took most of this file's time and timed out on a loaded machine.
 */
async function configCheck(env: Record<string, string | undefined>): Promise<Run> {
  const r = await runCli(['config', 'check'], Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v ?? null])));
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** A running `agent-gate serve` child with its output collected. */
interface Served {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  alive(): boolean;
  kill(signal: NodeJS.Signals): void;
}

function serve(env: Record<string, string | undefined>): Served {
  const child = spawn(process.execPath, [...cliArgv(), 'serve'], { cwd: ROOT, env: { ...BASE_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  suite.closers.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { stdout: () => out, stderr: () => err, exited, alive: () => child.exitCode === null && child.signalCode === null, kill: (s) => child.kill(s) };
}

const violationLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('config violation: '));

/** True when nothing accepts connections on 127.0.0.1:port. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** Negotiates TLS with the given version bounds; resolves the protocol or the error code. */
function handshake(port: number, opts: { minVersion?: 'TLSv1.2' | 'TLSv1.3'; maxVersion?: 'TLSv1.2' | 'TLSv1.3' }): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: suite.fx.ca.certPem, cert: suite.fx.agents.p256.certPem, key: suite.fx.agents.p256.keyPem, ...opts });
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.once('secureConnect', () => {
      const p = s.getProtocol() ?? 'none';
      s.destroy();
      resolve(p);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(`error:${e.code ?? e.message}`));
  });
}

describe('a correct prod configuration', () => {
  it('passes `config check`: exit 0, no violation, the effective prod settings on stdout', async () => {
    const r = await configCheck(prodEnv());
    expect(r.stderr).not.toMatch(/config violation/);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>;
    expect(printed.env).toBe('prod');
    expect(printed.store).toMatchObject({ kind: 'redis' });
    expect(printed.tls).toMatchObject({ minVersion: 'TLSv1.3' });
    expect(printed.revocation).toMatchObject({ mode: 'ocsp,crl', fail: 'closed', ocspUrl: suite.ocsp.url });
    expect(printed.logLevel).toBe('info');
    expect(printed.tokenTtlS).toBeLessThanOrEqual(900);
    expect(r.stdout).not.toContain(signingJwk.d as string);
  });

  it('starts with `serve` and completes the whole flow, then drains on SIGTERM with exit 0', async () => {
    const ports = { port: await freePort(), adminPort: await freePort() };
    const g = serve(prodEnv(ports));
    const base = `https://127.0.0.1:${ports.port}`;
    // Stops waiting early when the process dies; the assertion below then shows why.
    await waitFor(async () => !g.alive() || (await fetch(`http://127.0.0.1:${ports.adminPort}/readyz`)).status === 200, 90_000, 'the prod gate ready on its admin port', 100).catch(
      (err: unknown) => {
        throw new Error(`${(err as Error).message}\nstderr: ${g.stderr()}\nstdout: ${g.stdout().slice(0, 4000)}`);
      },
    );
    expect(g.alive(), `serve exited early; stderr: ${g.stderr()}`).toBe(true);
    expect(g.stderr()).not.toMatch(/config violation|ephemeral/);

    // TLS 1.3 only.
    expect(await handshake(ports.port, {})).toBe('TLSv1.3');
    expect(await handshake(ports.port, { maxVersion: 'TLSv1.2' })).toMatch(/^error:/);

    // The published key is the one from the key file.
    const jwks = await call(tlsAgent(suite.fx), `${base}/.agent-gate/jwks.json`);
    expect((jwks.json() as { keys: JWK[] }).keys.map((k) => k.kid)).toEqual([signingJwk.kid]);

    // The flow: challenge, proof, token, gated request reaching the upstream.
    const ocspBefore = suite.ocsp.requests;
    const c = new GateClient({ baseUrl: base, cert: suite.fx.agents.ed25519.certPem, key: suite.fx.agents.ed25519.keyPem, ca: suite.fx.ca.certPem, servername: 'localhost' });
    suite.closers.push(() => c.close());
    const token = await c.getToken();
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt', kid: signingJwk.kid });
    const res = await c.request('/prod/hello?x=1', { method: 'POST', body: 'hi', headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ method: 'POST', url: '/prod/hello?x=1', agent_id: expect.any(String), body_bytes: 2 });
    const seen = suite.up.seen.find((s) => s.url === '/prod/hello?x=1')!;
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers['x-agent-thumbprint']).toEqual(expect.any(String));
    // Revocation really ran against the responder, and the token works for a second request.
    expect(suite.ocsp.requests).toBeGreaterThan(ocspBefore);
    expect((await c.request('/prod/again')).status).toBe(200);

    // Failing closed: a certificate the responder does not know is refused with 503...
    const unknown = await issueAgentCert(suite.fx.ca, 'prod-unknown', { alg: 'ec-p256' });
    const a1 = tlsAgent(suite.fx, unknown);
    suite.closers.push(() => a1.close());
    const r1 = await call(a1, `${base}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r1.status, r1.json().code]).toEqual([503, 'revocation_unavailable']);
    // ... and a revoked one with 403.
    const revoked = await issueAgentCert(suite.fx.ca, 'prod-revoked', { alg: 'ec-p256' });
    suite.ocsp.revoke(revoked);
    const a2 = tlsAgent(suite.fx, revoked);
    suite.closers.push(() => a2.close());
    const r2 = await call(a2, `${base}/.agent-gate/v1/challenge`, { method: 'POST' });
    expect([r2.status, r2.json().code]).toEqual([403, 'client_cert_revoked']);

    g.kill('SIGTERM');
    expect(await g.exited).toBe(0);

    // Logged at info and above only, and nothing secret in the process's own log.
    const logLines = g.stdout().split('\n').filter(Boolean);
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) {
      const level = (JSON.parse(line) as { level?: number }).level;
      expect(level, line).toBeGreaterThanOrEqual(30);
      for (const [name, re] of FORBIDDEN) expect(re.test(line), `${name} in: ${line}`).toBe(false);
    }
    expect(await refused(ports.port)).toBe(true);
  });
});

/** Each prod refusal: one change to the correct configuration, and the variable it must name. */
const REFUSALS: { what: string; variable: string; change: () => Record<string, string | undefined> }[] = [
  { what: 'memory store', variable: 'GATE_STORE', change: () => ({ GATE_STORE: 'memory' }) },
  { what: 'no signing key (ephemeral)', variable: 'GATE_SIGNING_KEY_FILE', change: () => ({ GATE_SIGNING_KEY_FILE: undefined }) },
  { what: 'GATE_REVOCATION=off', variable: 'GATE_REVOCATION', change: () => ({ GATE_REVOCATION: 'off' }) },
  { what: 'GATE_REVOCATION_FAIL=open', variable: 'GATE_REVOCATION_FAIL', change: () => ({ GATE_REVOCATION_FAIL: 'open' }) },
  { what: 'GATE_TOKEN_TTL_S=901', variable: 'GATE_TOKEN_TTL_S', change: () => ({ GATE_TOKEN_TTL_S: '901' }) },
  { what: 'GATE_LOG_LEVEL=debug', variable: 'GATE_LOG_LEVEL', change: () => ({ GATE_LOG_LEVEL: 'debug' }) },
  { what: 'http:// upstream on a non-loopback host', variable: 'GATE_UPSTREAM_URL', change: () => ({ GATE_UPSTREAM_URL: 'http://api.internal.example:8080' }) },
  { what: 'signing key file mode 0644', variable: 'GATE_SIGNING_KEY_FILE', change: () => ({ GATE_SIGNING_KEY_FILE: keyFile0644 }) },
  { what: 'the dev CA in GATE_CLIENT_CA', variable: 'GATE_CLIENT_CA', change: () => ({ GATE_CLIENT_CA: devCaBundle }) },
];

function withChange(env: Record<string, string>, change: Record<string, string | undefined>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = { ...env, ...change };
  for (const [k, v] of Object.entries(change)) if (v === undefined) delete out[k];
  return out;
}

function expectOnlyViolation(stderr: string, variable: string): void {
  const lines = violationLines(stderr);
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^config violation: ${variable}: \\S`));
}

describe.concurrent('each prod refusal, via `config check`: exit 2 and one line naming its variable', () => {
  for (const { what, variable, change } of REFUSALS) {
    it(`${what} -> ${variable}`, async () => {
      const r = await configCheck(withChange(prodEnv(), change()));
      expect(r.code, r.stderr).toBe(2);
      expectOnlyViolation(r.stderr, variable);
    });
  }
});

describe.concurrent('prod refusals through the real `serve`: exit 2, the violation line, nothing listens', () => {
  for (const what of ['memory store', 'signing key file mode 0644', 'the dev CA in GATE_CLIENT_CA']) {
    const { variable, change } = REFUSALS.find((r) => r.what === what)!;
    it(`${what} -> ${variable}`, async () => {
      const ports = { port: await freePort(), adminPort: await freePort() };
      const g = serve(withChange(prodEnv(ports), change()));
      const code = await g.exited;
      expect(code, g.stderr()).toBe(2);
      expectOnlyViolation(g.stderr(), variable);
      // It exited before binding: no listening log line, and neither port answers.
      expect(g.stdout()).not.toMatch(/listening/i);
      expect(await refused(ports.port)).toBe(true);
      expect(await refused(ports.adminPort)).toBe(true);
    });
  }
});
