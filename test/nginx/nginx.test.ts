/**
 * `agent-gate nginx-config` and the configuration it renders, run by a real nginx (Debian's
 * nginx with the njs module) on random loopback ports in front of a stand-in gate that records
 * what it receives (PROTOCOL.md sections 6, 9 and 12).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerNginxCommands } from '../../src/cli/nginx.js';
import { thumbprintOf } from '../../src/identity/certificate.js';
import { canonicalString, certFromHeader, FWD_HEADERS, signCanonical } from '../../src/identity/forwarded-canonical.js';
import { renderNginxConfig, type NginxConfigOptions } from '../../src/nginx/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { nginxEscapeUriComponent } from '../../scripts/make-forwarded-vectors.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { tlsAgent } from '../helpers/http.js';
import { freePort, waitFor } from '../helpers/ports.js';
import {
  ensureNginx,
  nginxTest,
  rawExchange,
  rawValues,
  removeTempDirs,
  startNginx,
  startRecordingGate,
  startSilentServer,
  tempDir,
  writeKeyFile,
  type RecordingGate,
  type RunningNginx,
  type Seen,
} from './harness.js';

let fx: Fixtures;
let keyDir: string;

beforeAll(async () => {
  ensureNginx();
  fx = await makeFixtures();
  keyDir = tempDir('keys');
}, 120_000);

afterAll(() => {
  removeTempDirs();
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
});

/** Options for a config in front of `gateUrl`, on `port`, writing into a fresh DIR. */
function baseOptions(port: number, gateUrl: string, keyFile: string, extra: Partial<NginxConfigOptions> = {}): NginxConfigOptions {
  return {
    listen: `127.0.0.1:${port}`,
    gateUrl,
    tlsCert: fx.serverCertFile,
    tlsKey: fx.serverKeyFile,
    clientCa: fx.caFile,
    hmacKeyFile: keyFile,
    kid: 'edge-1',
    dir: join(tempDir('dir'), 'out'),
    ...extra,
  };
}

/** Renders, optionally patches the conf (or anything else in DIR), starts nginx. */
async function launch(gateUrl: string, extra: Partial<NginxConfigOptions> = {}, patch?: (conf: string, dir: string) => string): Promise<{ nginx: RunningNginx; secret: Buffer }> {
  const key = writeKeyFile(keyDir);
  const port = await freePort();
  const opts = baseOptions(port, gateUrl, key.file, extra);
  const { confPath } = await renderNginxConfig(opts);
  if (patch) writeFileSync(confPath, patch(readFileSync(confPath, 'utf8'), opts.dir));
  const nginx = await startNginx(opts.dir, port);
  return { nginx, secret: key.secret };
}

interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  instance: string;
}

/** Checks the contract's problem+json shape; returns the body. */
function expectProblem(res: { status: number; headers: Record<string, string | string[] | undefined>; text: string }, status: number, code: string): Problem {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toBe('application/problem+json');
  expect(res.headers['cache-control']).toBe('no-store');
  const body = JSON.parse(res.text) as Problem;
  expect(Object.keys(body).sort()).toEqual(['code', 'instance', 'status', 'title', 'type']);
  expect(body).toMatchObject({ type: `urn:agent-gate:error:${code}`, status, code });
  expect(typeof body.title).toBe('string');
  expect(body.instance).toMatch(/^urn:agent-gate:refusal:[a-z0-9]{26}$/);
  return body;
}

async function get(dispatcher: Agent, url: string, init: { method?: string; headers?: Record<string, string | string[]>; body?: string | Buffer } = {}) {
  const r = await request(url, { dispatcher, method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text };
}

async function raw(nginx: RunningNginx, who: KeyAndCert | undefined, text: string | Buffer) {
  return rawExchange(nginx.port, { ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem }, text);
}

/** The fields the gate verifies, from what it received (section 6). */
function verifySeen(seen: Seen, secret: Buffer, host = '127.0.0.1'): { fwd: Record<string, string>; thumbprint: string } {
  const fwd: Record<string, string> = {};
  for (const name of FWD_HEADERS) {
    const values = rawValues(seen.rawHeaders, name);
    expect(values, `${name} exactly once`).toHaveLength(1);
    fwd[name] = values[0]!;
  }
  const thumbprint = certFromHeader(fwd['x-gate-fwd-cert']!)?.thumbprint ?? '-';
  const canonical = canonicalString({
    kid: fwd['x-gate-fwd-kid']!,
    ts: fwd['x-gate-fwd-ts']!,
    id: fwd['x-gate-fwd-id']!,
    method: seen.method,
    requestUri: seen.url,
    host: fwd['x-gate-fwd-host']!,
    addr: fwd['x-gate-fwd-addr']!,
    verify: fwd['x-gate-fwd-verify']!,
    thumbprint,
  });
  expect(fwd['x-gate-fwd-sig']).toBe(signCanonical(secret, canonical));
  expect(fwd['x-gate-fwd-ts']).toMatch(/^[0-9]{1,12}$/);
  expect(Math.abs(Number(fwd['x-gate-fwd-ts']) - Date.now() / 1000)).toBeLessThanOrEqual(5);
  expect(fwd['x-gate-fwd-id']).toMatch(/^[0-9a-f]{32}$/);
  expect(fwd['x-gate-fwd-kid']).toBe('edge-1');
  expect(fwd['x-gate-fwd-addr']).toBe('127.0.0.1');
  expect(fwd['x-gate-fwd-host']).toBe(host);
  // The gate compares Host with x-gate-fwd-host.
  expect(rawValues(seen.rawHeaders, 'host')).toEqual([fwd['x-gate-fwd-host']]);
  return { fwd, thumbprint };
}

describe('nginx-config: rendering', () => {
  it('writes nginx.conf, the njs signer and a 0600 key copy; nginx -t accepts the result', async () => {
    const key = writeKeyFile(keyDir);
    const opts = baseOptions(await freePort(), 'https://127.0.0.1:9443', key.file, { gateCa: fx.caFile, gateTlsName: 'localhost' });
    const out = await renderNginxConfig(opts);
    expect(out.confPath).toBe(join(opts.dir, 'nginx.conf'));
    expect(out.warnings).toEqual([]);
    expect(statSync(out.keyPath).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(out.keyPath, 'utf8'))).toEqual({ kid: 'edge-1', secret: key.b64 });
    expect(readFileSync(out.jsPath, 'utf8')).toBe(readFileSync(new URL('../../nginx/gate_sign.js', import.meta.url), 'utf8'));
    // Workers (nobody, when nginx starts as root) must be able to reach DIR/temp.
    expect(statSync(opts.dir).mode & 0o001).toBe(0o001);

    const conf = readFileSync(out.confPath, 'utf8');
    expect(conf).not.toMatch(/\{\{[A-Z_]+\}\}/);
    expect(conf).not.toMatch(/^\s*(daemon|pid|user)\s/m);
    expect(conf).toMatch(/^load_module \/usr\/lib\/nginx\/modules\/ngx_http_js_module\.so;$/m);
    expect(conf).toContain(`error_log "${opts.dir}/error.log"`);
    expect(conf).toContain(`access_log "${opts.dir}/access.log" agent_gate_json;`);
    for (const d of ['client_body_temp_path', 'proxy_temp_path', 'fastcgi_temp_path', 'uwsgi_temp_path', 'scgi_temp_path']) expect(conf).toMatch(new RegExp(`${d} +"${opts.dir}/temp/`));
    expect(conf).toContain('ssl_verify_client optional;');
    expect(conf).toContain('ssl_verify_depth 4;');
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(conf).toContain('proxy_ssl_verify on;');
    expect(conf).toContain('proxy_ssl_name localhost;');
    expect(conf).toContain(`proxy_ssl_trusted_certificate "${fx.caFile}";`);
    expect(conf).toContain('server 127.0.0.1:9443;');
    expect(conf).toContain('location ^~ /.agent-gate/v1/ {');
    for (const h of FWD_HEADERS) expect(conf).toMatch(new RegExp(`proxy_set_header ${h} +\\$gate_fwd_`));

    const t = nginxTest(opts.dir);
    expect(t.output).toContain('test is successful');
    expect(t.ok).toBe(true);
  });

  it('honours --path-prefix, --tls-min-version and an IPv6 --listen, and renders a plain-HTTP dev gate', async () => {
    const key = writeKeyFile(keyDir);
    const opts = baseOptions(await freePort(), 'http://localhost:8080', key.file, { pathPrefix: '/gw/agent', tlsMinVersion: 'TLSv1.3', listen: '[::1]:8443' });
    const out = await renderNginxConfig(opts);
    const conf = readFileSync(out.confPath, 'utf8');
    expect(conf).toContain('listen [::1]:8443 ssl;');
    expect(conf).toContain('server localhost:8080;');
    expect(conf).toContain('location ^~ /gw/agent/v1/ {');
    expect(conf).toContain('ssl_protocols TLSv1.3;');
    expect(conf).toContain('proxy_pass http://agent_gate;');
    expect(conf).not.toContain('proxy_ssl_verify');
    expect(out.warnings).toEqual([]);
    expect(nginxTest(opts.dir).ok).toBe(true);
  });

  it('warns about an unverified https gate and a plain-HTTP remote gate', async () => {
    const key = writeKeyFile(keyDir);
    const a = await renderNginxConfig(baseOptions(await freePort(), 'https://gate.internal:8443', key.file));
    expect(a.warnings.join('\n')).toMatch(/not verified/);
    expect(readFileSync(a.confPath, 'utf8')).toContain('proxy_ssl_verify off;');
    const b = await renderNginxConfig(baseOptions(await freePort(), 'http://10.1.2.3:8080', key.file));
    expect(b.warnings.join('\n')).toMatch(/plain HTTP/);
  });

  it('refuses bad input with a TypeError naming the flag', async () => {
    const good = writeKeyFile(keyDir);
    const short = writeKeyFile(keyDir, 16);
    const notB64 = join(keyDir, 'notb64.key');
    writeFileSync(notB64, 'not base64!\n');
    const empty = join(keyDir, 'empty.key');
    writeFileSync(empty, '\n');
    const port = await freePort();
    const cases: [Partial<NginxConfigOptions>, RegExp][] = [
      [{ listen: '8443' }, /--listen must be HOST:PORT/],
      [{ listen: '127.0.0.1:70000' }, /--listen/],
      [{ listen: '[nope]:8443' }, /--listen/],
      [{ gateUrl: 'ftp://gate:1' }, /--gate-url must be https/],
      [{ gateUrl: 'https://gate:1/path' }, /--gate-url must be an origin/],
      [{ gateUrl: 'https://u:p@gate:1' }, /credentials/],
      [{ gateUrl: 'not a url' }, /--gate-url is not a URL/],
      [{ tlsCert: join(keyDir, 'missing.crt') }, /--tls-cert .*cannot read \(ENOENT\)/],
      [{ tlsKey: fx.caFile }, /--tls-key .*no PEM private key/],
      [{ clientCa: fx.serverKeyFile }, /--client-ca .*no PEM certificate/],
      [{ hmacKeyFile: short.file }, /--hmac-key-file .*16 bytes; at least 32 required/],
      [{ hmacKeyFile: notB64 }, /--hmac-key-file .*(base64|one line)/],
      [{ hmacKeyFile: empty }, /--hmac-key-file .*empty/],
      [{ hmacKeyFile: join(keyDir, 'nope.key') }, /--hmac-key-file .*ENOENT/],
      [{ kid: 'bad kid!' }, /--kid "bad kid!" must be 1-64 of/],
      [{ kid: '' }, /--kid is required/],
      [{ dir: '/tmp/has"quote' }, /--dir .*cannot carry/],
      [{ dir: '/tmp/$var' }, /--dir .*cannot carry/],
      [{ pathPrefix: '/x/' }, /--path-prefix must be/],
      [{ pathPrefix: '/a/../b' }, /--path-prefix must be/],
      [{ tlsMinVersion: 'TLSv1.1' as 'TLSv1.2' }, /--tls-min-version must be TLSv1.2 or TLSv1.3/],
      [{ gateCa: fx.caFile }, /--gate-ca needs an https --gate-url/],
      [{ gateUrl: 'https://127.0.0.1:9443', gateCa: fx.caFile }, /nginx verifies DNS names only: give --gate-tls-name/],
      [{ gateUrl: 'https://127.0.0.1:9443', gateTlsName: '127.0.0.1' }, /--gate-tls-name must be a DNS name/],
      [{ gateTlsName: 'localhost' }, /--gate-tls-name needs an https --gate-url/],
    ];
    for (const [extra, message] of cases) {
      const opts = baseOptions(port, 'http://127.0.0.1:8080', good.file, extra);
      await expect(renderNginxConfig(opts), JSON.stringify(extra)).rejects.toThrow(TypeError);
      await expect(renderNginxConfig(opts), JSON.stringify(extra)).rejects.toThrow(message);
    }
  });

  it('without the key copy nginx refuses to start (js_preload_object)', async () => {
    const key = writeKeyFile(keyDir);
    const opts = baseOptions(await freePort(), 'http://127.0.0.1:8080', key.file);
    const out = await renderNginxConfig(opts);
    rmSync(out.keyPath);
    const t = nginxTest(opts.dir);
    expect(t.ok).toBe(false);
    // njs 0.7.9 does not say why; nginx only reports that the test failed.
    expect(t.output).toContain('test failed');
  });
});

describe('nginx-config: the command line', () => {
  function program(): { program: Command; out: string[]; err: string[] } {
    const out: string[] = [];
    const err: string[] = [];
    const p = new Command('agent-gate')
      .exitOverride()
      .showHelpAfterError()
      .configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
    registerNginxCommands(p);
    return { program: p, out, err };
  }

  function argv(opts: NginxConfigOptions): string[] {
    return ['nginx-config', '--listen', opts.listen, '--gate-url', opts.gateUrl, '--tls-cert', opts.tlsCert, '--tls-key', opts.tlsKey, '--client-ca', opts.clientCa, '--hmac-key-file', opts.hmacKeyFile, '--kid', opts.kid, '--dir', opts.dir];
  }

  it('writes the files and prints their paths', async () => {
    const key = writeKeyFile(keyDir);
    const opts = baseOptions(await freePort(), 'https://127.0.0.1:9443', key.file);
    const p = program();
    await p.program.parseAsync([...argv(opts), '--gate-ca', fx.caFile, '--gate-tls-name', 'localhost', '--path-prefix', '/gw', '--tls-min-version', 'TLSv1.3', '--max-connections-per-address', '9'], { from: 'user' });
    expect(p.out.join('')).toBe(['nginx.conf', 'gate_sign.js', 'gate_fwd_key.json'].map((f) => join(opts.dir, f)).join('\n') + '\n');
    expect(p.err.join('')).toMatch(/^run: nginx -p /);
    const conf = readFileSync(join(opts.dir, 'nginx.conf'), 'utf8');
    expect(conf).toContain('location ^~ /gw/v1/ {');
    expect(conf).toContain('ssl_protocols TLSv1.3;');
    expect(conf).toMatch(/^\s*limit_conn agent_gate_conn 9;$/m);
    expect(nginxTest(opts.dir).ok).toBe(true);
  });

  it('takes the authorizer-only flags with --mode authorizer', async () => {
    const key = writeKeyFile(keyDir);
    const opts = baseOptions(await freePort(), 'http://127.0.0.1:8080', key.file);
    const p = program();
    await p.program.parseAsync([...argv(opts), '--mode', 'authorizer', '--upstream-url', 'http://127.0.0.1:9', '--authz-cache-s', '0', '--xff', 'append', '--rate-proxy-identity', '5/1'], { from: 'user' });
    const conf = readFileSync(join(opts.dir, 'nginx.conf'), 'utf8');
    expect(conf).toContain('auth_request /./agent-gate-authorize;');
    expect(conf).not.toContain('proxy_cache agent_gate_authz;');
    expect(conf).toMatch(/rate=5r\/s/);
  });

  async function failure(args: string[]): Promise<{ code: number; err: string }> {
    const p = program();
    try {
      await p.program.parseAsync(args, { from: 'user' });
    } catch (e) {
      expect(e).toBeInstanceOf(CommanderError);
      return { code: (e as CommanderError).exitCode, err: p.err.join('') };
    }
    throw new Error('expected a failure');
  }

  it('reports every error as one line on stderr with exit status 2', async () => {
    const key = writeKeyFile(keyDir);
    const short = writeKeyFile(keyDir, 8);
    const opts = baseOptions(await freePort(), 'http://127.0.0.1:8080', key.file);
    const cases: [string[], RegExp][] = [
      [argv(opts).slice(0, -2), /required option '--dir <dir>' not specified/],
      [argv({ ...opts, hmacKeyFile: short.file }), /^error: --hmac-key-file .*8 bytes/],
      [argv({ ...opts, listen: 'nope' }), /^error: --listen must be HOST:PORT/],
      [[...argv(opts), '--tls-min-version', 'SSLv3'], /^error: --tls-min-version/],
      [[...argv(opts), '--max-connections-per-address', 'many'], /^error: --max-connections-per-address must be a whole number/],
      [[...argv(opts), '--bogus'], /unknown option '--bogus'/],
      // Flags only authorizer mode reads, given without it: refused, not silently ignored.
      [[...argv(opts), '--upstream-url', 'http://127.0.0.1:9'], /^error: --upstream-url is for --mode authorizer \(in forwarded mode the gate proxies/],
      [[...argv(opts), '--authz-cache-s', '0'], /^error: --authz-cache-s is for --mode authorizer$/m],
      [[...argv(opts), '--mode', 'forwarded', '--rate-proxy-identity', '5/1'], /^error: --rate-proxy-identity is for --mode authorizer$/m],
      // Given, even at its default value: the operator asked for something forwarded mode does not do.
      [[...argv(opts), '--xff', 'replace'], /^error: --xff is for --mode authorizer$/m],
      // A misspelt mode is named as such, before any flag it would take.
      [[...argv(opts), '--mode', 'Authorizer', '--upstream-url', 'http://127.0.0.1:9'], /^error: --mode must be forwarded or authorizer, got "Authorizer"$/m],
    ];
    for (const [args, message] of cases) {
      const f = await failure(args);
      expect(f.code, f.err).toBe(2);
      expect(f.err).toMatch(message);
      expect(f.err.trimEnd().split('\n'), f.err).toHaveLength(1);
    }
  });
});

describe('nginx in front of the gate: forwarded headers (stand-in gate over verified TLS)', () => {
  let gate: RecordingGate;
  let nginx: RunningNginx;
  let secret: Buffer;

  beforeAll(async () => {
    gate = await startRecordingGate({ cert: readFileSync(fx.serverCertFile, 'utf8'), key: readFileSync(fx.serverKeyFile, 'utf8') });
    // https to 127.0.0.1, verified against the fixture CA under the DNS name localhost.
    ({ nginx, secret } = await launch(gate.url, { gateCa: fx.caFile, gateTlsName: 'localhost' }));
  });

  afterAll(async () => {
    await nginx?.stop();
    await gate?.close();
  });

  function lastSeen(): Seen {
    expect(gate.seen.length).toBeGreaterThan(0);
    return gate.seen[gate.seen.length - 1]!;
  }

  it('signs a request with a client certificate; client-sent x-gate-fwd-* never reach the gate', async () => {
    const agent = fx.agents.p256;
    const before = gate.seen.length;
    const res = await get(tlsAgent(fx, agent), `${nginx.url}/api/items?limit=10`, {
      headers: {
        'x-gate-fwd-kid': 'evil',
        'X-Gate-Fwd-Sig': ['forged-1', 'forged-2'],
        'x-gate-fwd-verify': 'SUCCESS',
        'x-gate-fwd-cert': '-',
        'x-gate-fwd-addr': '10.0.0.1',
        'x_gate_fwd_cert': 'underscore-variant',
        'x_gate_fwd_sig': 'underscore-variant',
      },
    });
    expect(res.status, res.text).toBe(200);
    expect(gate.seen.length).toBe(before + 1);
    const seen = lastSeen();
    expect(seen.method).toBe('GET');
    expect(seen.url).toBe('/api/items?limit=10');
    const { fwd, thumbprint } = verifySeen(seen, secret);
    expect(fwd['x-gate-fwd-verify']).toBe('SUCCESS');
    // $ssl_client_escaped_cert: nginx's URI-component escaping of OpenSSL's PEM of the leaf.
    const pem = new X509Certificate(agent.certPem).toString();
    expect(fwd['x-gate-fwd-cert']).toBe(nginxEscapeUriComponent(pem));
    expect(thumbprint).toBe(thumbprintOf(new X509Certificate(agent.certPem).raw));
    // None of the client's values, and no underscore variant, got through.
    for (let i = 0; i < seen.rawHeaders.length; i += 2) expect(seen.rawHeaders[i]!.toLowerCase()).not.toMatch(/^x_gate_fwd_/);
    expect(seen.rawHeaders.join('\n')).not.toMatch(/evil|forged|underscore-variant|10\.0\.0\.1/);
    // The id is nginx's $request_id, as the access log shows. nginx writes the line after the
    // answer has gone out, so the client can read the answer before the line is there.
    const line = () => nginx.accessLog().find((l) => l.request_id === fwd['x-gate-fwd-id']);
    await waitFor(() => line() !== undefined, 10_000, `access log line with request_id ${fwd['x-gate-fwd-id']}`);
    const log = line();
    expect(log).toMatchObject({ status: '200', request_uri: '/api/items?limit=10', thumbprint, ssl_client_verify: 'SUCCESS' });
  });

  it('signs a request without a client certificate as "-" / NONE', async () => {
    const res = await get(tlsAgent(fx), `${nginx.url}/api/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(res.status).toBe(200);
    const seen = lastSeen();
    expect(seen.method).toBe('POST');
    expect(seen.body.toString()).toBe('{"a":1}');
    const { fwd, thumbprint } = verifySeen(seen, secret);
    expect(fwd['x-gate-fwd-cert']).toBe('-');
    expect(fwd['x-gate-fwd-verify']).toBe('NONE');
    expect(thumbprint).toBe('-');
  });

  it('forwards and signs $request_uri byte for byte', async () => {
    for (const target of ['/caf%C3%A9/%e2%9c%93?q=%F0%9F%98%80&p=a%2Fb&s=a+b%20c', '/a/./b/../c?x=1', '/.agent-gate/v1/challenge?', '/x//y;p=1?a=%00']) {
      const before = gate.seen.length;
      const r = await raw(nginx, fx.agents.ed25519, `GET ${target} HTTP/1.1\r\nHost: LocalHost:${nginx.port}\r\nConnection: close\r\n\r\n`);
      expect(r.status, `${target}: ${r.text}`).toBe(200);
      expect(gate.seen.length).toBe(before + 1);
      const seen = lastSeen();
      expect(seen.url).toBe(target);
      // Host lowercased, port dropped, in both Host and x-gate-fwd-host.
      verifySeen(seen, secret, 'localhost');
    }
  });

  it('buffers a large body through the workers\' temp files and forwards it intact', async () => {
    const body = Buffer.alloc(1024 * 1024 + 7, 'a');
    const res = await get(tlsAgent(fx, fx.agents.rsa), `${nginx.url}/upload`, { method: 'PUT', body });
    expect(res.status, nginx.errorLog()).toBe(200);
    const seen = lastSeen();
    expect(seen.body.equals(body)).toBe(true);
    verifySeen(seen, secret);
  });

  it('passes P/healthz, P/readyz and P/jwks.json through without a client certificate', async () => {
    const noCert = tlsAgent(fx);
    for (const [method, path] of [
      ['GET', '/.agent-gate/healthz'],
      ['GET', '/.agent-gate/readyz'],
      ['GET', '/.agent-gate/jwks.json'],
      ['HEAD', '/.agent-gate/healthz'],
    ] as const) {
      const before = gate.seen.length;
      const res = await get(noCert, `${nginx.url}${path}`, { method });
      expect(res.status, `${method} ${path}`).toBe(200);
      expect(gate.seen.length).toBe(before + 1);
      const seen = lastSeen();
      expect([seen.method, seen.url]).toEqual([method, path]);
      expect(verifySeen(seen, secret).fwd['x-gate-fwd-verify']).toBe('NONE');
    }
  });

  describe("nginx's own refusals are problem+json and reach no gate", () => {
    let before: number;
    beforeAll(() => {
      before = gate.seen.length;
    });
    afterAll(() => {
      expect(gate.seen.length).toBe(before);
    });

    // The refusal id of the body is the one in the access log line (written once the
    // request is finished, which may be just after the client has the answer).
    async function logged(p: Problem, status: number): Promise<void> {
      const id = p.instance.slice('urn:agent-gate:refusal:'.length);
      await waitFor(() => nginx.accessLog().some((l) => l.refusal_id === id), 10_000, `access log line with refusal_id ${id}`);
      expect(nginx.accessLog().find((l) => l.refusal_id === id)!.status).toBe(String(status));
    }

    it('495: a certificate from an unknown CA, or expired -> 403 client_cert_invalid', async () => {
      for (const who of [fx.agents.foreign, fx.agents.expired]) {
        const res = await get(tlsAgent(fx, who), `${nginx.url}/api/items`);
        await logged(expectProblem(res, 403, 'client_cert_invalid'), 403);
      }
    });

    it('400: a bad request, a non-ASCII target, HTTP/1.0 without Host -> 400 request_malformed', async () => {
      const requests = [
        `GET / HTTP/1.1\r\nHost: bad/host\r\nConnection: close\r\n\r\n`,
        Buffer.concat([Buffer.from('GET /caf'), Buffer.from([0xc3, 0xa9]), Buffer.from(` HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)]),
        `GET /a b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
        `GET / HTTP/1.0\r\n\r\n`,
        `GET /../etc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      ];
      for (const r of requests) {
        const res = await raw(nginx, fx.agents.p256, r);
        await logged(expectProblem(res, 400, 'request_malformed'), 400);
      }
    });

    it('414 (URI too long) and 494 (header too large) -> 400 request_malformed', async () => {
      const longUri = await raw(nginx, undefined, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expectProblem(longUri, 400, 'request_malformed');
      const bigHeader = await get(tlsAgent(fx), `${nginx.url}/`, { headers: { 'x-big': 'b'.repeat(20_000) } });
      expectProblem(bigHeader, 400, 'request_malformed');
    });

    it('497: plain HTTP to the TLS port -> 400 request_malformed', async () => {
      const res = await rawExchange(nginx.port, null, 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      await logged(expectProblem(res, 400, 'request_malformed'), 400);
    });

    it('413: a body over 10 MiB -> 413 body_too_large', async () => {
      const res = await raw(nginx, fx.agents.p256, `POST /api/items HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${11 * 1024 * 1024}\r\nConnection: close\r\n\r\n`);
      await logged(expectProblem(res, 413, 'body_too_large'), 413);
    });

    it('405: TRACE -> 405 method_not_allowed with Allow', async () => {
      const res = await raw(nginx, fx.agents.p256, `TRACE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expectProblem(res, 405, 'method_not_allowed');
      expect(res.headers.allow).toMatch(/GET/);
    });

    it('the internal error pages cannot be requested from outside', async () => {
      const r = await raw(nginx, fx.agents.p256, `GET /./agent-gate-problem/client_cert_invalid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      // Normalized to /agent-gate-problem/... and forwarded like any path (so the count check
      // of this block would fail): undo the count.
      expect(r.status).toBe(200);
      expect(lastSeen().url).toBe('/./agent-gate-problem/client_cert_invalid');
      before += 1;
    });
  });
});

describe('nginx in front of the gate: failures', () => {
  it('fails closed: a key it cannot use is 502 upstream_unavailable with a log line, nothing forwarded', async () => {
    const gate = await startRecordingGate();
    // A key copy that loads (valid JSON) but cannot sign: nginx must not forward unsigned.
    const { nginx } = await launch(gate.url, {}, (conf, dir) => {
      writeFileSync(join(dir, 'gate_fwd_key.json'), JSON.stringify({ kid: 'edge-1', secret: 'c2hvcnQ=' }), { mode: 0o600 });
      return conf;
    });
    try {
      const res = await get(tlsAgent(fx, fx.agents.p256), `${nginx.url}/api/items`);
      const seenAfterReload = gate.seen.length;
      expect(seenAfterReload).toBe(0);
      expectProblem(res, 502, 'upstream_unavailable');
      const again = await get(tlsAgent(fx), `${nginx.url}/.agent-gate/v1/challenge`, { method: 'POST' });
      expectProblem(again, 502, 'upstream_unavailable');
      expect(gate.seen.length).toBe(seenAfterReload);
      expect(nginx.errorLog()).toMatch(/agent-gate: cannot sign the forwarded headers, refusing the request: HMAC secret is 5 bytes/);
    } finally {
      await nginx.stop();
      await gate.close();
    }
  });

  it('502 upstream_unavailable when the gate is down, or its certificate does not match', async () => {
    const closed = await freePort();
    const down = await launch(`http://127.0.0.1:${closed}`);
    try {
      expectProblem(await get(tlsAgent(fx, fx.agents.p256), `${down.nginx.url}/api/items`), 502, 'upstream_unavailable');
      expect(down.nginx.errorLog()).toMatch(/connect\(\) failed/);
    } finally {
      await down.nginx.stop();
    }
    const gate = await startRecordingGate({ cert: readFileSync(fx.serverCertFile, 'utf8'), key: readFileSync(fx.serverKeyFile, 'utf8') });
    const wrongName = await launch(gate.url, { gateCa: fx.caFile, gateTlsName: 'gate.example.com' });
    try {
      expectProblem(await get(tlsAgent(fx), `${wrongName.nginx.url}/api/items`), 502, 'upstream_unavailable');
      expect(gate.seen).toHaveLength(0);
      expect(wrongName.nginx.errorLog()).toMatch(/upstream SSL certificate does not match "gate\.example\.com"/);
    } finally {
      await wrongName.nginx.stop();
      await gate.close();
    }
  });

  it('504 upstream_timeout when the gate does not answer in time', async () => {
    const silent = await startSilentServer();
    const { nginx } = await launch(`http://127.0.0.1:${silent.port}`, {}, (c) => c.replace('proxy_read_timeout 60s;', 'proxy_read_timeout 1s;'));
    try {
      expectProblem(await get(tlsAgent(fx, fx.agents.p256), `${nginx.url}/api/items`), 504, 'upstream_timeout');
    } finally {
      await nginx.stop();
      await silent.close();
    }
  });

  it('429 rate_limited with Retry-After and RateLimit headers at the edge limit', async () => {
    const gate = await startRecordingGate();
    const { nginx } = await launch(gate.url, {}, (c) => c.replace('rate=10r/s', 'rate=1r/m').replace('limit_req zone=agent_gate_v1 burst=20 nodelay;', 'limit_req zone=agent_gate_v1;'));
    try {
      const who = tlsAgent(fx, fx.agents.p256);
      expect((await get(who, `${nginx.url}/.agent-gate/v1/challenge`, { method: 'POST' })).status).toBe(200);
      const res = await get(who, `${nginx.url}/.agent-gate/v1/challenge`, { method: 'POST' });
      expectProblem(res, 429, 'rate_limited');
      expect(res.headers['retry-after']).toBe('1');
      expect(res.headers['ratelimit-policy']).toBe('"edge-v1";q=10;w=1');
      expect(res.headers['ratelimit']).toBe('"edge-v1";r=0;t=1');
      expect(gate.seen).toHaveLength(1);
      // Other paths have their own, wider limit.
      expect((await get(who, `${nginx.url}/api/items`)).status).toBe(200);
    } finally {
      await nginx.stop();
      await gate.close();
    }
  });
});
