/**
 * Issue 13 class 4: server CPU per TLS connection for client certificates nobody trusts, the
 * gate (direct mode) side by side with a bare node:https server (requestCert,
 * rejectUnauthorized: false, same `ca`) and nginx (`ssl_verify_client on`, same `ca`).
 * Chains: an untrusted P-256 leaf, and the worst presented chain (P-256 leaf under four
 * RSA-3072 CAs with ~3000-bit public exponents, no trust anchor). Each server runs in its own
 * process; its CPU is read from /proc (utime + stime) around a bounded number of loopback
 * connections (one HTTP request each). Rounds are interleaved and medians reported.
 *
 *   npx tsx load/handshake-bench.ts [--rounds 5] [--conns 30] [--write]
 *
 * `--write` replaces the "Handshake amplification" section of load/RESULTS.md.
 * @module
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createCa, issueAgentCert, issueServerCert, type KeyAndCert } from '../src/pki/index.js';
import { caExt, hugeExponentRsaKey, leafExt, OpensslPki } from '../test/helpers/openssl-pki.js';
import { freePort } from '../test/helpers/ports.js';

const SELF = fileURLToPath(import.meta.url);
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : Number(process.argv[i + 1]);
};

// ---------------------------------------------------------------------------------------------
// server roles (child processes)

if (process.argv[2] === 'serve') {
  const [, , , role, dir, port] = process.argv;
  const ca = readFileSync(join(dir!, 'ca.crt'), 'utf8');
  if (role === 'bare') {
    const server = createServer({ key: readFileSync(join(dir!, 'server.key')), cert: readFileSync(join(dir!, 'server.crt')), ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      res.writeHead(403, { 'content-type': 'application/json' }).end('{"code":"client_cert_invalid"}');
    });
    server.listen(Number(port), '127.0.0.1', () => process.send?.('ready'));
  } else {
    const { startGate, testEnv } = await import('../test/helpers/gate.js');
    const fx = { caFile: join(dir!, 'ca.crt'), serverCertFile: join(dir!, 'server.crt'), serverKeyFile: join(dir!, 'server.key') } as Parameters<typeof testEnv>[0];
    await startGate(testEnv(fx, { GATE_LISTEN: `127.0.0.1:${port}`, GATE_STORE: 'memory', GATE_UPSTREAM_URL: 'http://127.0.0.1:9', GATE_LOG_LEVEL: 'warn' }));
    process.send?.('ready');
  }
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------

/** utime + stime of `pids`, in ms (clock ticks of 10 ms). */
function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks * 10;
}

/** Master and workers of an nginx process group. */
function groupPids(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const f = readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ');
      if (Number(f[2]) === pgid) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

function oneConnection(port: number, chain: KeyAndCert[], ca: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca, cert: chain.map((c) => c.certPem).join(''), key: chain[0]!.keyPem, servername: 'localhost' });
    s.setTimeout(20_000, () => s.destroy());
    s.on('secureConnect', () => s.write('POST /.agent-gate/v1/challenge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
    s.on('data', () => {});
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
}

interface Target {
  name: string;
  port: number;
  pids: () => number[];
  stop(): void;
}

async function startChild(role: string, dir: string): Promise<Target> {
  const port = await freePort();
  const child: ChildProcess = fork(SELF, ['serve', role, dir, String(port)], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (c) => reject(new Error(`${role} exited ${c}`)));
  });
  return { name: role, port, pids: () => [child.pid!], stop: () => child.kill('SIGKILL') };
}

async function startNginxVerifyOn(dir: string): Promise<Target> {
  const port = await freePort();
  const nd = join(dir, 'nginx');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(join(nd, 'logs'), { recursive: true });
  writeFileSync(
    join(nd, 'nginx.conf'),
    `worker_processes 1;\nerror_log ${nd}/logs/error.log crit;\nevents { worker_connections 256; }\nhttp {\n access_log off;\n client_body_temp_path ${nd}; proxy_temp_path ${nd}; fastcgi_temp_path ${nd}; uwsgi_temp_path ${nd}; scgi_temp_path ${nd};\n server {\n  listen 127.0.0.1:${port} ssl;\n  ssl_certificate ${dir}/server.crt; ssl_certificate_key ${dir}/server.key;\n  ssl_client_certificate ${dir}/ca.crt; ssl_verify_client on; ssl_verify_depth 10;\n  location / { return 403 '{"code":"client_cert_invalid"}'; }\n }\n}\n`,
  );
  const child = spawn('nginx', ['-p', nd, '-c', join(nd, 'nginx.conf'), '-g', `daemon off; pid ${nd}/nginx.pid;`], { stdio: 'inherit', detached: true });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name: 'nginx', port, pids: () => groupPids(child.pid!), stop: () => process.kill(-child.pid!, 'SIGKILL') };
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

async function main(): Promise<void> {
  const rounds = arg('rounds', 5);
  const conns = arg('conns', 30);
  const dir = mkdtempSync(join(tmpdir(), 'agent-gate-hsbench-'));
  const ca = await createCa({ alg: 'ec-p256', commonName: 'handshake bench CA' });
  const server = await issueServerCert(ca);
  writeFileSync(join(dir, 'ca.crt'), ca.certPem);
  writeFileSync(join(dir, 'server.crt'), server.certPem);
  writeFileSync(join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
  const foreign = await createCa({ alg: 'ec-p256', commonName: 'untrusted CA' });
  const p256 = [await issueAgentCert(foreign, 'p256', { alg: 'ec-p256' })];
  const o = new OpensslPki();
  process.stderr.write('generating four RSA-3072 keys with ~3000-bit exponents...\n');
  let issuer = await o.cert({ subj: '/CN=amplifier root', ext: caExt(), keyPem: hugeExponentRsaKey(3072, 3000) });
  const cas = [issuer];
  for (let i = 0; i < 3; i++) cas.unshift((issuer = await o.cert({ subj: `/CN=amplifier ${i}`, ext: caExt(), keyPem: hugeExponentRsaKey(3072, 3000), issuer })));
  const leaf = await o.cert({ subj: '/CN=amplified', ext: leafExt('URI:urn:agent:amplified'), keyPem: await o.key(), issuer });
  const worst = [leaf, ...cas];
  const chains: [string, KeyAndCert[]][] = [
    ['untrusted P-256 leaf', p256],
    ['worst chain (4 × RSA-3072, ~3000-bit e, untrusted)', worst],
  ];

  const targets = [await startChild('gate', dir), await startChild('bare', dir), await startNginxVerifyOn(dir)];
  const samples = new Map<string, number[]>();
  try {
    for (const t of targets) for (const [, c] of chains) await oneConnection(t.port, c, ca.certPem); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (const [cname, chain] of chains) {
        for (const t of r % 2 ? [...targets].reverse() : targets) {
          const before = cpuMs(t.pids());
          for (let i = 0; i < conns; i++) await oneConnection(t.port, chain, ca.certPem);
          const per = (cpuMs(t.pids()) - before) / conns;
          const key = `${t.name}|${cname}`;
          samples.set(key, [...(samples.get(key) ?? []), per]);
        }
      }
      process.stderr.write(`round ${r + 1}/${rounds} done\n`);
    }
  } finally {
    for (const t of targets) t.stop();
  }
  const m = (t: string, c: number) => median(samples.get(`${t}|${chains[c]![0]}`)!);
  const rows = ['gate', 'bare', 'nginx'].map((t) => `| ${t === 'gate' ? 'agent-gate (direct mode)' : t === 'bare' ? 'bare node:https (requestCert, rejectUnauthorized: false)' : 'nginx ssl_verify_client on'} | ${m(t, 0).toFixed(2)} | ${m(t, 1).toFixed(2)} |`);
  const target = m('bare', 1) + 3 * m('bare', 0);
  const verdict = m('gate', 1) <= target ? 'met' : 'missed';
  const section = `## Handshake amplification

\`npx tsx load/handshake-bench.ts --rounds ${rounds} --conns ${conns} --write\` (${new Date().toISOString().slice(0, 10)}, 2 shared cores, loopback).
Server CPU (utime + stime from /proc, 10 ms ticks) per TLS connection with one HTTP request,
median of ${rounds} interleaved rounds of ${conns} sequential connections; every server has the
same \`ca\`; no chain reaches it.

| server | untrusted P-256 leaf (ms/conn) | worst chain: 4 × RSA-3072 CAs, ~3000-bit e (ms/conn) |
|---|---|---|
${rows.join('\n')}

Target (issue 13 class 4): gate on the worst chain <= bare server on it + 3 × an untrusted P-256
certificate = ${m('bare', 1).toFixed(2)} + 3 × ${m('bare', 0).toFixed(2)} = ${target.toFixed(2)} ms: **${verdict}** (gate ${m('gate', 1).toFixed(2)} ms).
The cost left is OpenSSL's own signature checks in the handshake, which any server with
\`rejectUnauthorized: false\` pays; nginx pays it too (its verify callback lets OpenSSL check
the whole chain and refuses after the handshake). The gate adds no certificate work for chains
OpenSSL refused (test/integration/handshake-amplification.test.ts); before this change it
verified every link again itself. 10 ms clock ticks make single figures coarse.
`;
  process.stdout.write(section);
  if (process.argv.includes('--write')) {
    const file = join(SELF, '..', 'RESULTS.md');
    const text = readFileSync(file, 'utf8');
    const start = text.indexOf('## Handshake amplification');
    let next = start === -1 ? -1 : text.indexOf('\n## ', start + 1);
    if (next !== -1) next += 1;
    const updated = start === -1 ? `${text.trimEnd()}\n\n${section}` : text.slice(0, start) + section + (next === -1 ? '' : `\n${text.slice(next)}`);
    writeFileSync(file, updated);
  }
}
