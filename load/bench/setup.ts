/**
 * Starts the benchmark's processes on loopback: PKI files, redis-server, the upstream, the
 * Node mTLS baseline server, gates (`node dist/cli/main.js serve`), nginx (baseline
 * proxy_pass config written here, or the forwarded config rendered by `renderNginxConfig`)
 * and the load generator. Every process is tracked and killed at exit (procs.ts).
 * @module
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PATH_PREFIX, renderNginxConfig } from '../../src/nginx/index.js';
import { createCa, issueAgentCert, issueServerCert, type KeyAndCert } from '../../src/pki/index.js';
import type { ClientTls, FromLoadgen, Job, JobResult, ToLoadgen } from './jobs.js';
import type { CpuGroups, CpuReading } from './procs.js';
import { MACHINE, childPids, cpuSeconds, freePort, GiveUp, machineBusySeconds, redisPing, spawnTracked, stopChild, tcpOpen, track, trackPid, waitFor } from './procs.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** The repository root (load/bench/ is two levels below). */
export const ROOT = join(HERE, '..', '..');

/** The PKI files of a run. */
export interface BenchPki {
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientTls: ClientTls;
  /** The CA itself (for benches that also run an OCSP responder for it). */
  ca: KeyAndCert;
}

/** CA, server certificate (localhost, 127.0.0.1, ::1) and one ECDSA P-256 agent, as files. */
export async function makePki(dir: string): Promise<BenchPki> {
  const ca = await createCa();
  const server = await issueServerCert(ca);
  const agent = await issueAgentCert(ca, 'bench-agent', { alg: 'ec-p256' });
  const file = (name: string, text: string, mode = 0o644) => {
    const p = join(dir, name);
    writeFileSync(p, text, { mode });
    return p;
  };
  const caFile = file('ca.pem', ca.certPem);
  const serverCertFile = file('server.pem', server.certPem);
  const serverKeyFile = file('server.key', server.keyPem, 0o600);
  file('agent.pem', agent.certPem);
  file('agent.key', agent.keyPem, 0o600);
  return { caFile, serverCertFile, serverKeyFile, clientTls: { cert: agent.certPem, key: agent.keyPem, ca: ca.certPem, servername: 'localhost' }, ca };
}

/**
 * Open-loop flows: the share of the offered rate sent by the probe, a second load-generator
 * process doing nothing else, whose /v1/token latency is the one reported. The main load
 * generator shares 2 cores with the gate and runs the client side of every other handshake and
 * proof; its own event loop stalls (scheduler lag p99 11-125 ms at 70 % on 2026-12-07) and
 * those stalls land in every latency it measures.
 */
const PROBE_SHARE = 0.2;
const PROBE_MAX_RATE = 30;
/** The probe, in one line, for the reports' settings. */
export const PROBE_TEXT = `a second load-generator process sends ${PROBE_SHARE * 100}% of each open-loop rate (at most ${PROBE_MAX_RATE} flows/s) and does nothing else`;

/** How long an open-loop flow may take, challenge to token, to count as on time (rows 3-80d and the workers bench). */
export const FLOW_DEADLINE_MS = 3000;

/** An open-loop flow job against `origin`: `rate` flows/s, each due within {@link FLOW_DEADLINE_MS}. */
export function openFlowJob(origin: string, rate: number, window: { warmupMs: number; durationMs: number }): Job {
  return { kind: 'flow-open', origin, prefix: DEFAULT_PATH_PREFIX, rate, ...window, deadlineMs: FLOW_DEADLINE_MS, maxOutstanding: 5000 };
}

/** `rate` flows/s in all (at least 2): what the main load generator and the probe each send. */
export function probeSplit(rate: number): { main: number; probe: number } {
  const probe = Math.max(1, Math.min(PROBE_MAX_RATE, Math.round(rate * PROBE_SHARE)));
  return { main: Math.max(1, rate - probe), probe };
}

/** What every benchmark script starts first (see {@link startBase}). */
export interface BenchBase {
  /** A new temporary directory, mode 0755: nginx workers (nobody when started as root) reach their temp dirs below it. */
  work: string;
  pki: BenchPki;
  redis: Started;
  upstream: Started;
  redisUrl: string;
  upstreamUrl: string;
}

/** The work directory `agent-gate-NAME-*` under the OS temp dir, the PKI, redis-server and the upstream. */
export async function startBase(name: string): Promise<BenchBase> {
  const work = mkdtempSync(join(tmpdir(), `agent-gate-${name}-`));
  chmodSync(work, 0o755);
  const pki = await makePki(work);
  const redis = await startRedis(work);
  const upstream = await startServer('upstream', pki);
  return { work, pki, redis, upstream, redisUrl: `redis://127.0.0.1:${redis.port}`, upstreamUrl: `http://127.0.0.1:${upstream.port}` };
}

/** A started process with the pids whose CPU time counts as its own. */
export interface Started {
  name: string;
  child: ChildProcess;
  pid: number;
  /** The process and, for nginx, its workers. */
  pids: number[];
  port: number;
  stop(): Promise<void>;
}

/**
 * The OpenSSL configuration the image gives the gate (`OPENSSL_CONF`, one TLS 1.3 ticket per
 * handshake). Every TLS server the bench runs in Node, the gates and the Node mTLS baseline,
 * gets it, so row 2 compares like with like.
 */
export const NODE_OPENSSL_CONF = join(ROOT, 'deploy', 'node-openssl.cnf');

/** The environment for children: ours minus NODE_OPTIONS (a loader must not leak into the gate). */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  return env;
}

export async function startRedis(dir: string): Promise<Started> {
  const port = await freePort();
  const child = spawnTracked('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--dir', dir], {
    stdio: 'ignore',
  });
  await waitFor(() => child.exitCode === null && redisPing(port), 10_000, `redis-server on port ${port}`);
  return { name: 'redis', child, pid: child.pid ?? 0, pids: [child.pid ?? 0], port, stop: async () => void (await stopChild(child, 'SIGKILL')) };
}

/** The upstream or the Node mTLS baseline server (load/bench/servers.ts), forked with tsx. */
export async function startServer(mode: 'upstream' | 'tls-baseline', pki: BenchPki): Promise<Started> {
  const child = track(
    fork(join(HERE, 'servers.ts'), [mode], {
      execArgv: ['--import', 'tsx'],
      env: childEnv({ OPENSSL_CONF: NODE_OPENSSL_CONF, BENCH_TLS_CERT: pki.serverCertFile, BENCH_TLS_KEY: pki.serverKeyFile, BENCH_CLIENT_CA: pki.caFile }),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${mode} did not start`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${mode} exited with ${code}`)));
    child.on('message', (m: { type?: string; port?: number }) => {
      if (m.type === 'ready' && m.port) {
        clearTimeout(timer);
        resolve(m.port);
      }
    });
  });
  return { name: mode, child, pid: child.pid ?? 0, pids: [child.pid ?? 0], port, stop: async () => void (await stopChild(child)) };
}

/** A gate child process. */
export interface StartedGate extends Started {
  adminPort: number;
  logFile: string;
}

/** `node [nodeArgs] dist/cli/main.js serve` with `env` (from `root`: another build for A/B runs), `OPENSSL_CONF` as in the image unless `env` sets it; waits for the admin /readyz. */
export async function startGate(name: string, dir: string, env: Record<string, string>, nodeArgs: string[] = [], root = ROOT): Promise<StartedGate> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const logFile = join(dir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawnTracked(process.execPath, [...nodeArgs, join(root, 'dist', 'cli', 'main.js'), 'serve'], {
    cwd: root,
    env: childEnv({ OPENSSL_CONF: NODE_OPENSSL_CONF, ...env, GATE_LISTEN: `127.0.0.1:${port}`, GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}` }),
    // Logs (JSON lines on stdout, warnings on stderr) go to a file, as a collector would take them.
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const tail = () => readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n');
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new GiveUp(`exited with ${child.exitCode}`);
        return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200;
      },
      30_000,
      `gate ${name} ready`,
      100,
    );
  } catch (err) {
    if (child.exitCode !== null) throw new Error(`gate ${name} exited with ${child.exitCode}:\n${tail()}`);
    throw new Error(`${(err as Error).message}:\n${tail()}`);
  }
  return {
    name,
    child,
    pid: child.pid ?? 0,
    pids: [child.pid ?? 0],
    port,
    adminPort,
    logFile,
    stop: async () => void (await stopChild(child, 'SIGTERM', 15_000)),
  };
}

/** A rate no benchmark window reaches (one agent certificate and one address carry all the load). */
export const OUT_OF_REACH_RATE = '1000000000/1';

/**
 * Every rate ceiling out of reach: with GATE_RATE_LIMITS=on the limits run (their step scripts
 * and batched counters cost what they cost) but never answer 429.
 */
export const RATE_CEILINGS_OUT_OF_REACH: Record<string, string> = {
  GATE_RATE_CHALLENGE_IP: OUT_OF_REACH_RATE,
  GATE_RATE_CHALLENGE_IDENTITY: OUT_OF_REACH_RATE,
  GATE_RATE_TOKEN_IDENTITY: OUT_OF_REACH_RATE,
  GATE_RATE_PROXY_IDENTITY: OUT_OF_REACH_RATE,
  GATE_RATE_FAILED_PROOFS: OUT_OF_REACH_RATE,
  GATE_RATE_REFUSAL_IDENTITY: OUT_OF_REACH_RATE,
};

/**
 * The common GATE_* environment of every benchmark gate: dev profile (GATE_RATE_LIMITS=off is
 * dev-only), Redis store, limits off with every ceiling out of reach should a gate turn them on,
 * and the connection caps above anything the load generator opens from 127.0.0.1 (the open-loop
 * window keeps thousands of flows in flight; the default 128 per address would reset them), so
 * the bench measures the gate and not its caps.
 */
export function gateEnv(pki: BenchPki, redisUrl: string, upstreamUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    GATE_ENV: 'dev',
    GATE_MODE: 'direct',
    GATE_TLS_CERT: pki.serverCertFile,
    GATE_TLS_KEY: pki.serverKeyFile,
    GATE_CLIENT_CA: pki.caFile,
    GATE_STORE: 'redis',
    GATE_REDIS_URL: redisUrl,
    GATE_UPSTREAM_URL: upstreamUrl,
    GATE_RATE_LIMITS: 'off',
    ...RATE_CEILINGS_OUT_OF_REACH,
    GATE_LOG_LEVEL: 'warn',
    GATE_MAX_INFLIGHT: '100000',
    GATE_MAX_CONNECTIONS: '100000',
    GATE_MAX_CONNECTIONS_PER_ADDRESS: '100000',
    ...extra,
  };
}

function withoutKeys(env: Record<string, string>, keys: string[]): Record<string, string> {
  const out = { ...env };
  for (const k of keys) delete out[k];
  return out;
}

/** Starts nginx on a config file and waits for its port and its workers. */
export async function startNginx(name: string, dir: string, confPath: string, port: number, workers: number): Promise<Started> {
  let stderr = '';
  const child = spawnTracked('/usr/sbin/nginx', ['-p', dir, '-c', confPath, '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const pid = child.pid ?? 0;
  let workerPids: number[] = [];
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new GiveUp(`exited with ${child.exitCode}`);
        workerPids = childPids(pid);
        return workerPids.length >= workers && (await tcpOpen(port));
      },
      15_000,
      `nginx ${name} on port ${port}`,
    );
  } catch (err) {
    let log = '';
    try {
      log = readFileSync(join(dir, 'error.log'), 'utf8').slice(-2000);
    } catch {
      // none yet
    }
    throw new Error(`nginx ${name} did not start (${(err as Error).message}): ${stderr}\n${log}`);
  }
  for (const w of workerPids) trackPid(w);
  return {
    name,
    child,
    pid,
    // The master only accepts configuration signals; the workers serve.
    pids: workerPids,
    port,
    stop: async () => {
      await stopChild(child, 'SIGTERM', 5000);
      for (const w of workerPids) {
        try {
          process.kill(w, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  };
}

/** The baseline: plain mTLS proxy_pass to the upstream, the same certificate and client CA. */
export function baselineNginxConf(dir: string, pki: BenchPki, port: number, upstreamPort: number, workers: '1' | 'auto'): string {
  return `# agent-gate benchmark baseline: nginx terminating mTLS and proxying to the same upstream.
worker_processes ${workers};
error_log "${dir}/error.log" warn;
events { worker_connections 4096; }
http {
    client_body_temp_path "${dir}/temp/client_body";
    proxy_temp_path       "${dir}/temp/proxy";
    fastcgi_temp_path     "${dir}/temp/fastcgi";
    uwsgi_temp_path       "${dir}/temp/uwsgi";
    scgi_temp_path        "${dir}/temp/scgi";
    access_log off;
    # Node's server has no per-connection request cap: nor has the baseline.
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    upstream upstream {
        server 127.0.0.1:${upstreamPort};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${port} ssl;
        ssl_certificate     "${pki.serverCertFile}";
        ssl_certificate_key "${pki.serverKeyFile}";
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate "${pki.caFile}";
        ssl_verify_client on;
        ssl_verify_depth 4;
        location / {
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`;
}

/** Writes the baseline config into its own directory and starts it. */
export async function startBaselineNginx(name: string, root: string, pki: BenchPki, upstreamPort: number, workers: '1' | 'auto', cores: number): Promise<Started> {
  const dir = join(root, name);
  mkdirSync(join(dir, 'temp'), { recursive: true });
  chmodSync(dir, 0o755);
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, baselineNginxConf(dir, pki, port, upstreamPort, workers));
  return startNginx(name, dir, conf, port, workers === '1' ? 1 : cores);
}

/** What was changed in the rendered forwarded config for the benchmark, for the report. */
export const FORWARDED_EDITS = 'limit_req/limit_conn lines removed (all load comes from one client address; the edge limits would answer 429)';

/**
 * nginx + gate in forwarded mode: the gate on plain HTTP loopback (trusted proxy 127.0.0.1),
 * nginx from `renderNginxConfig`, minus the per-address edge rate limits.
 */
export async function startForwarded(
  root: string,
  pki: BenchPki,
  redisUrl: string,
  upstreamUrl: string,
  cores: number,
  gateNodeArgs: string[] = [],
): Promise<{ gate: StartedGate; nginx: Started; workers: number }> {
  const dir = join(root, 'nginx-forwarded');
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const secret = randomBytes(32).toString('base64');
  const keyFile = join(root, 'fwd-hmac.key');
  writeFileSync(keyFile, secret + '\n', { mode: 0o600 });
  const gate = await startGate(
    'gate-forwarded',
    root,
    withoutKeys(
      gateEnv(pki, redisUrl, upstreamUrl, {
        GATE_MODE: 'forwarded',
        GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32',
        GATE_FWD_HMAC_KEYS: `k1:${secret}`,
      }),
      // No certificate: plain HTTP on loopback behind nginx.
      ['GATE_TLS_CERT', 'GATE_TLS_KEY'],
    ),
    gateNodeArgs,
  );
  const port = await freePort();
  const rendered = await renderNginxConfig(benchNginxOptions(pki, port, gate.port, keyFile, dir));
  const conf = readFileSync(rendered.confPath, 'utf8');
  const edited = conf
    .split('\n')
    .filter((l) => !/^\s*(limit_req|limit_conn)\s/.test(l))
    .join('\n');
  writeFileSync(rendered.confPath, edited);
  const m = /^\s*worker_processes\s+(\w+);/m.exec(edited);
  const workers = !m || m[1] === 'auto' ? cores : Number(m[1]);
  const nginx = await startNginx('nginx-forwarded', dir, rendered.confPath, port, workers);
  return { gate, nginx, workers };
}

export type { CpuGroups, CpuReading } from './procs.js';

function readCpu(groups: CpuGroups): CpuReading {
  const out: CpuReading = { [MACHINE]: machineBusySeconds() };
  for (const [name, pids] of Object.entries(groups)) out[name] = pids.reduce((s, p) => s + cpuSeconds(p), 0);
  return out;
}

/** The load-generator child and a way to run one job on it with CPU readings of the window. */
export interface LoadGen {
  pid: number;
  /** Runs `job`; `monotonicUs` brackets the measurement window (CLOCK_MONOTONIC µs, the clock of V8 CPU profiles). */
  run(job: Job, cpu: CpuGroups, onMark?: (phase: 'start' | 'end') => void): Promise<{ result: JobResult; cpuSeconds: CpuReading; windowS: number; monotonicUs: [number, number] }>;
  stop(): Promise<void>;
}

export async function startLoadgen(tls: ClientTls): Promise<LoadGen> {
  const child = track(
    fork(join(HERE, 'loadgen.ts'), [], { execArgv: ['--import', 'tsx'], env: childEnv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  let nextId = 1;
  type Waiter = { resolve: (m: FromLoadgen) => void; reject: (e: Error) => void };
  const waiters = new Map<number, Waiter>();
  const marks = new Map<number, (phase: 'start' | 'end') => void>();
  let readyResolve: (() => void) | undefined;
  child.on('message', (raw) => {
    const m = raw as FromLoadgen;
    if (m.type === 'ready') readyResolve?.();
    else if (m.type === 'mark') marks.get(m.id)?.(m.phase);
    else waiters.get(m.id)?.resolve(m);
  });
  child.once('exit', (code) => {
    for (const w of waiters.values()) w.reject(new Error(`load generator exited with ${code}`));
  });
  await new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    setTimeout(() => reject(new Error('load generator did not start')), 20_000).unref();
    child.send({ type: 'init', tls } satisfies ToLoadgen);
  });
  return {
    pid: child.pid ?? 0,
    async run(job, cpu, onMark) {
      const id = nextId++;
      let before: CpuReading | undefined;
      let after: CpuReading | undefined;
      let tStart = 0;
      let tEnd = 0;
      const monotonicUs: [number, number] = [0, 0];
      marks.set(id, (phase) => {
        if (phase === 'start') {
          before = readCpu(cpu);
          tStart = performance.now();
          monotonicUs[0] = Number(process.hrtime.bigint() / 1000n);
        } else {
          after = readCpu(cpu);
          tEnd = performance.now();
          monotonicUs[1] = Number(process.hrtime.bigint() / 1000n);
        }
        onMark?.(phase);
      });
      const budget = job.warmupMs + job.durationMs + 60_000;
      const msg = await new Promise<FromLoadgen>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`job ${job.kind} exceeded ${budget} ms`)), budget);
        waiters.set(id, {
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject,
        });
        child.send({ type: 'job', id, job } satisfies ToLoadgen);
      });
      waiters.delete(id);
      marks.delete(id);
      if (msg.type === 'error') throw new Error(`load generator: ${msg.message}`);
      if (msg.type !== 'result') throw new Error(`unexpected message ${msg.type}`);
      const cpuSecondsOut: CpuReading = {};
      if (before && after) for (const k of Object.keys(after)) cpuSecondsOut[k] = Math.round(((after[k] ?? 0) - (before[k] ?? 0)) * 100) / 100;
      return { result: msg.result, cpuSeconds: cpuSecondsOut, windowS: Math.round(tEnd - tStart) / 1000, monotonicUs };
    },
    stop: async () => void (await stopChild(child)),
  };
}

/** What was changed in the rendered authorizer config for the benchmark, for the report. */
export const AUTHORIZER_EDITS =
  'worker_processes 1 (as the baseline); the per-address limit_req/limit_conn lines removed (all load comes from one address); --rate-proxy-identity 1000000/1 (the per-certificate limit_req stays, at a rate the run cannot reach)';

/**
 * What `--authorizer` compares with the rendered config, to price its parts per request:
 * `no-screen` without the njs header screen ($agent_gate_bad_headers); `unbuffered` also
 * without the warm-path tuning (access log written per request, no open_file_cache, no
 * pcre_jit), i.e. the config as first built; `no-jit` the rendered config with `pcre_jit off` (its regular
 * expressions interpreted).
 */
export type AuthorizerVariant = 'rendered' | 'no-screen' | 'unbuffered' | 'no-jit';

function variantOf(conf: string, variant: AuthorizerVariant): string {
  if (variant === 'rendered') return conf;
  if (variant === 'no-jit') {
    const out = conf.replace(/^pcre_jit on;$/m, 'pcre_jit off;');
    if (out === conf) throw new Error('bench variant no-jit: the rendered config no longer has pcre_jit on');
    return out;
  }
  let out = conf.replace(/\n\s*if \(\$agent_gate_bad_headers\) \{\n\s*return 400;\n\s*\}/, '');
  if (variant === 'unbuffered') out = out.replace(' buffer=64k flush=1s;', ';').replace(/^\s*open_file_cache(_valid|_errors)?\s.*\n/gm, '').replace(/^pcre_jit on;$/m, 'pcre_jit off;');
  if (out === conf || (variant === 'unbuffered' && /^\s*open_file_cache|buffer=64k|^pcre_jit on;/m.test(out))) throw new Error(`bench variant ${variant}: the rendered config no longer has what it removes`);
  return out;
}

/** The HMAC key every authorizer nginx and gate of a run share: `root/authz-hmac.key`, made once. */
function authzKey(root: string): { keyFile: string; secret: string } {
  const keyFile = join(root, 'authz-hmac.key');
  try {
    return { keyFile, secret: readFileSync(keyFile, 'utf8').trim() };
  } catch {
    const secret = randomBytes(32).toString('base64');
    writeFileSync(keyFile, secret + '\n', { mode: 0o600 });
    return { keyFile, secret };
  }
}

/**
 * The bench's gate in authorizer mode: plain HTTP on loopback behind nginx (trusted proxy
 * 127.0.0.1, key id k1), decision cache of at least 2 s; `gateRoot` picks another build (A/B runs).
 */
export function startAuthorizerGate(root: string, pki: BenchPki, redisUrl: string, upstreamUrl: string, cacheS: number, name = 'gate-authorizer', nodeArgs: string[] = [], gateRoot = ROOT): Promise<StartedGate> {
  const { secret } = authzKey(root);
  return startGate(
    name,
    root,
    withoutKeys(
      gateEnv(pki, redisUrl, upstreamUrl, { GATE_MODE: 'authorizer', GATE_FWD_TRUSTED_PROXIES: '127.0.0.1/32', GATE_FWD_HMAC_KEYS: `k1:${secret}`, GATE_AUTHZ_CACHE_S: String(Math.max(cacheS, 2)) }),
      ['GATE_TLS_CERT', 'GATE_TLS_KEY', 'GATE_UPSTREAM_URL'],
    ),
    nodeArgs,
    gateRoot,
  );
}

/**
 * nginx (1 worker, from `renderNginxConfig --mode authorizer`) proxying straight to the
 * upstream, asking a gate in authorizer mode (plain HTTP loopback) for decisions; the decision
 * cache on (`cacheS` > 0, warm after the first request) or off (every request decided).
 */
export async function startAuthorizer(
  root: string,
  name: string,
  pki: BenchPki,
  redisUrl: string,
  upstreamUrl: string,
  cacheS: number,
  gate?: StartedGate,
  variant: AuthorizerVariant = 'rendered',
): Promise<{ gate: StartedGate; nginx: Started }> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const { keyFile } = authzKey(root);
  const g = gate ?? (await startAuthorizerGate(root, pki, redisUrl, upstreamUrl, cacheS));
  const port = await freePort();
  const rendered = await renderNginxConfig({
    ...benchNginxOptions(pki, port, g.port, keyFile, dir),
    mode: 'authorizer',
    authorizer: { upstreamUrl, cacheS, rateProxyIdentity: '1000000/1' },
  });
  const edited = readFileSync(rendered.confPath, 'utf8')
    .replace(/^worker_processes auto;/m, 'worker_processes 1;')
    .split('\n')
    .filter((l) => !/^\s*limit_conn\s/.test(l) && !/^\s*limit_req zone=agent_gate_(req|v1)\s/.test(l))
    .join('\n');
  writeFileSync(rendered.confPath, variantOf(edited, variant));
  const nginx = await startNginx(name, dir, rendered.confPath, port, 1);
  return { gate: g, nginx };
}

/** The nginx-config options every bench nginx in front of a gate shares: the bench PKI, key id k1, plain HTTP to the gate. */
function benchNginxOptions(pki: { serverCertFile: string; serverKeyFile: string; caFile: string }, port: number, gatePort: number, hmacKeyFile: string, dir: string) {
  return { listen: `127.0.0.1:${port}`, gateUrl: `http://127.0.0.1:${gatePort}`, tlsCert: pki.serverCertFile, tlsKey: pki.serverKeyFile, clientCa: pki.caFile, hmacKeyFile, kid: 'k1', dir };
}
