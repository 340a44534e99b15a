/**
 * Cost of certificate revocation checking on gated requests with a warm cache: two gates
 * (`node dist/cli/main.js serve`), identical but for GATE_REVOCATION=off vs ocsp (fail closed,
 * the project's own OCSP responder answering `good` with a one-hour nextUpdate), driven in
 * turn by a load-generator child (undici Pool, 32 keep-alive mTLS connections, closed loop,
 * `GET /api/x` with a Bearer token). Reports requests/s, p50/p99 and the gate's CPU µs per
 * request (medians of 3 alternating runs each) and the ratio on/off, asserts the responder
 * was (almost) never asked during the windows, and upserts a section in load/RESULTS.md.
 *
 * Usage: `npm run bench:revocation` (builds first) or `npx tsx load/revocation-bench.ts`
 * after `npm run build`. The same file is forked as the upstream (`--child=upstream`) and as
 * the load generator (`--child=loadgen`).
 * @module
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { GateClient } from '../src/client/index.js';
import { startOcspResponder } from '../src/pki/index.js';
import { cpuSeconds, killAll, stopChild, track } from './bench/procs.js';
import { upsertBlock } from './bench/report.js';
import { makePki, startGate, type StartedGate } from './bench/setup.js';
import { Samples, median, type LatencySummary } from './bench/stats.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const CONNECTIONS = 32;
const WARMUP_MS = 2000;
const WINDOW_MS = 6000;
const RUNS = 3;
/** OCSP requests tolerated during all measurement windows together (the cache is warm). */
const MAX_OCSP_IN_WINDOWS = 3;

interface LoadJob {
  origin: string;
  token: string;
  tls: { cert: string; key: string; ca: string };
  connections: number;
  warmupMs: number;
  durationMs: number;
}
interface LoadResult {
  completed: number;
  errors: number;
  rps: number;
  latency: LatencySummary;
  examples: string[];
}
type FromChild = { type: 'ready'; port?: number } | { type: 'mark'; phase: 'start' | 'end' } | { type: 'result'; result: LoadResult } | { type: 'error'; message: string };

// ---------------------------------------------------------------- children

function upstreamMain(): void {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ ok: true, path: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.maxRequestsPerSocket = 0;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port } satisfies FromChild));
  process.on('disconnect', () => process.exit(0));
}

async function runLoad(job: LoadJob): Promise<LoadResult> {
  const pool = new Pool(job.origin, {
    connections: job.connections,
    pipelining: 1,
    connect: { ...job.tls, servername: 'localhost', rejectUnauthorized: true },
    keepAliveTimeout: 60_000,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const headers = { authorization: `Bearer ${job.token}` };
  const samples = new Samples();
  const examples: string[] = [];
  let completed = 0;
  let errors = 0;
  const t0 = performance.now() + job.warmupMs;
  const t1 = t0 + job.durationMs;
  const startTimer = setTimeout(() => process.send?.({ type: 'mark', phase: 'start' } satisfies FromChild), job.warmupMs);
  const endTimer = setTimeout(() => process.send?.({ type: 'mark', phase: 'end' } satisfies FromChild), job.warmupMs + job.durationMs);
  try {
    await Promise.all(
      Array.from({ length: job.connections }, async () => {
        while (performance.now() < t1) {
          const s = performance.now();
          try {
            const r = await pool.request({ path: '/api/x', method: 'GET', headers });
            const text = await r.body.text();
            const e = performance.now();
            if (e < t0 || e >= t1) continue;
            if (r.statusCode === 200) {
              completed++;
              samples.push(e - s);
            } else {
              errors++;
              if (examples.length < 3) examples.push(`${r.statusCode}: ${text.slice(0, 200)}`);
            }
          } catch (err) {
            const e = performance.now();
            if (e >= t0 && e < t1) errors++;
            if (examples.length < 3) examples.push((err as Error).message);
            await new Promise((r) => setTimeout(r, 10));
          }
        }
      }),
    );
  } finally {
    clearTimeout(startTimer);
    clearTimeout(endTimer);
    await pool.destroy().catch(() => {});
  }
  return { completed, errors, rps: Math.round(completed / (job.durationMs / 1000)), latency: samples.summary(), examples };
}

function loadgenMain(): void {
  process.on('message', (job: LoadJob) => {
    runLoad(job).then(
      (result) => process.send?.({ type: 'result', result } satisfies FromChild),
      (err: unknown) => process.send?.({ type: 'error', message: (err as Error).message } satisfies FromChild),
    );
  });
  process.on('disconnect', () => process.exit(0));
  process.send?.({ type: 'ready' } satisfies FromChild);
}

// ---------------------------------------------------------------- orchestrator

function forkSelf(role: 'upstream' | 'loadgen'): Promise<{ child: ChildProcess; port: number }> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = track(fork(SELF, [`--child=${role}`], { execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role} did not start`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
    child.once('message', (m: FromChild) => {
      clearTimeout(timer);
      if (m.type === 'ready') resolve({ child, port: m.port ?? 0 });
      else reject(new Error(`${role}: unexpected ${m.type}`));
    });
  });
}

interface RunRow {
  mode: 'off' | 'ocsp';
  run: number;
  rps: number;
  p50: number;
  p99: number;
  cpuUsPerReq: number;
  errors: number;
  ocspRequests: number;
}

/** One load job on `gate`, with the gate's CPU time and the responder's count read at the window marks. */
async function measure(loadgen: ChildProcess, job: LoadJob, gatePid: number, ocspCount: () => number): Promise<{ result: LoadResult; cpuS: number; ocsp: number }> {
  let cpu0 = 0;
  let cpu1 = 0;
  let ocsp0 = 0;
  let ocsp1 = 0;
  const result = await new Promise<LoadResult>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('load job timed out')), job.warmupMs + job.durationMs + 30_000);
    const onMessage = (m: FromChild) => {
      if (m.type === 'mark' && m.phase === 'start') {
        cpu0 = cpuSeconds(gatePid);
        ocsp0 = ocspCount();
      } else if (m.type === 'mark') {
        cpu1 = cpuSeconds(gatePid);
        ocsp1 = ocspCount();
      } else if (m.type === 'result' || m.type === 'error') {
        clearTimeout(timer);
        loadgen.off('message', onMessage);
        if (m.type === 'result') resolve(m.result);
        else reject(new Error(`load generator: ${m.message}`));
      }
    };
    loadgen.on('message', onMessage);
    loadgen.send(job);
  });
  return { result, cpuS: cpu1 - cpu0, ocsp: ocsp1 - ocsp0 };
}

/** Largest (max − min) / median across the runs of one mode, in percent, of requests/s and of CPU per request. */
function spread(rows: RunRow[]): number {
  let worst = 0;
  for (const mode of ['off', 'ocsp'] as const) {
    for (const k of ['rps', 'cpuUsPerReq'] as const) {
      const v = rows.filter((r) => r.mode === mode).map((r) => r[k]);
      worst = Math.max(worst, ((Math.max(...v) - Math.min(...v)) / median(v)) * 100);
    }
  }
  return worst;
}

const fmt = (v: number, digits = 0) => v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

async function main(): Promise<void> {
  process.on('exit', killAll);
  const started = Date.now();
  if (!process.argv.includes('--no-build')) {
    process.stderr.write('building (npm run build)...\n');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
  const dir = mkdtempSync(join(tmpdir(), 'agent-gate-revbench-'));
  const closers: (() => Promise<unknown>)[] = [];
  try {
    const { ca, caFile, serverCertFile: certFile, serverKeyFile: keyFile, clientTls } = await makePki(dir);

    const responder = await startOcspResponder({ issuer: ca, lookup: () => ({ status: 'good' }), nextUpdateS: 3600 });
    closers.push(() => responder.close());
    const upstream = await forkSelf('upstream');
    closers.push(() => stopChild(upstream.child));

    const base = {
      GATE_ENV: 'dev',
      GATE_STORE: 'memory',
      GATE_RATE_LIMITS: 'off',
      GATE_LOG_LEVEL: 'warn',
      GATE_MAX_INFLIGHT: '100000',
      GATE_TLS_CERT: certFile,
      GATE_TLS_KEY: keyFile,
      GATE_CLIENT_CA: caFile,
      GATE_UPSTREAM_URL: `http://127.0.0.1:${upstream.port}`,
    };
    const gates: Record<'off' | 'ocsp', StartedGate> = {
      off: await startGate('gate-revocation-off', dir, { ...base, GATE_REVOCATION: 'off' }),
      ocsp: await startGate('gate-revocation-ocsp', dir, {
        ...base,
        GATE_REVOCATION: 'ocsp',
        GATE_REVOCATION_FAIL: 'closed',
        GATE_OCSP_URL: responder.url,
        GATE_REVOCATION_MAX_STALE_S: '3600',
      }),
    };
    for (const g of Object.values(gates)) closers.push(() => g.stop());

    // A token per gate, then a few requests each: the OCSP answer is cached from here on.
    const tokens = {} as Record<'off' | 'ocsp', string>;
    for (const mode of ['off', 'ocsp'] as const) {
      const client = new GateClient({ baseUrl: `https://127.0.0.1:${gates[mode].port}`, cert: clientTls.cert, key: clientTls.key, ca: clientTls.ca });
      try {
        tokens[mode] = await client.getToken();
        for (let i = 0; i < 5; i++) {
          const r = await client.request('/api/x');
          if (r.status !== 200) throw new Error(`warm-up GET /api/x on gate ${mode}: ${r.status}`);
        }
      } finally {
        await client.close();
      }
    }
    const ocspAfterWarm = responder.requests;
    if (ocspAfterWarm < 1) throw new Error('the OCSP gate never asked the responder: revocation is not on');

    const loadgen = await forkSelf('loadgen');
    closers.push(() => stopChild(loadgen.child));
    const rows: RunRow[] = [];
    for (let run = 1; run <= RUNS; run++) {
      for (const mode of ['off', 'ocsp'] as const) {
        const g = gates[mode];
        const job: LoadJob = {
          origin: `https://127.0.0.1:${g.port}`,
          token: tokens[mode],
          tls: { cert: clientTls.cert, key: clientTls.key, ca: clientTls.ca },
          connections: CONNECTIONS,
          warmupMs: WARMUP_MS,
          durationMs: WINDOW_MS,
        };
        const { result, cpuS, ocsp } = await measure(loadgen.child, job, g.pid, () => responder.requests);
        const row: RunRow = {
          mode,
          run,
          rps: result.rps,
          p50: result.latency.p50,
          p99: result.latency.p99,
          cpuUsPerReq: result.completed > 0 ? (cpuS * 1e6) / result.completed : Number.NaN,
          errors: result.errors,
          ocspRequests: ocsp,
        };
        rows.push(row);
        process.stderr.write(
          `run ${run} ${mode.padEnd(4)} ${fmt(row.rps)} req/s p50 ${row.p50} ms p99 ${row.p99} ms gate CPU ${fmt(row.cpuUsPerReq)} µs/req errors ${row.errors} ocsp ${ocsp}\n`,
        );
        if (result.errors > 0) throw new Error(`gate ${mode}: ${result.errors} failed requests, e.g. ${result.examples.join(' | ')}`);
      }
    }

    const med = (mode: 'off' | 'ocsp', k: 'rps' | 'p50' | 'p99' | 'cpuUsPerReq') => median(rows.filter((r) => r.mode === mode).map((r) => r[k]));
    const ocspInWindows = rows.reduce((s, r) => s + r.ocspRequests, 0);
    const rpsRatio = med('ocsp', 'rps') / med('off', 'rps');
    const cpuRatio = med('ocsp', 'cpuUsPerReq') / med('off', 'cpuUsPerReq');
    if (ocspInWindows > MAX_OCSP_IN_WINDOWS) throw new Error(`the OCSP responder saw ${ocspInWindows} requests during the windows: the cache is not warm`);
    const noise = spread(rows);
    const date = new Date().toISOString().slice(0, 10);
    const line = (label: string, mode: 'off' | 'ocsp') =>
      `| ${label} | ${fmt(med(mode, 'rps'))} | ${fmt(med(mode, 'p50'), 2)} | ${fmt(med(mode, 'p99'), 2)} | ${fmt(med(mode, 'cpuUsPerReq'))} | ${rows
        .filter((r) => r.mode === mode)
        .map((r) => fmt(r.rps))
        .join(' / ')} |`;
    const pct = (ratio: number) => `${ratio >= 1 ? '+' : '−'}${fmt(Math.abs(ratio - 1) * 100, 1)} %`;
    const section = [
      `## Revocation on vs off ${date}`,
      '',
      'Command: `npm run bench:revocation` (`load/revocation-bench.ts`).',
      '',
      `Two gates from \`dist/\` (GATE_ENV=dev, GATE_STORE=memory, GATE_RATE_LIMITS=off, GATE_LOG_LEVEL=warn), one with GATE_REVOCATION=off, one with GATE_REVOCATION=ocsp, GATE_REVOCATION_FAIL=closed and GATE_REVOCATION_MAX_STALE_S=3600 against the project's OCSP responder (\`startOcspResponder\`, always \`good\`, nextUpdate 1 h); cache warmed with a token and 5 requests per gate. Load: undici Pool, ${CONNECTIONS} keep-alive mTLS connections (ECDSA P-256 agent), closed loop, \`GET /api/x\` with the Bearer token, ${WARMUP_MS / 1000} s warm-up + ${WINDOW_MS / 1000} s window, runs alternating off/on, median of ${RUNS}. Gate CPU from /proc/<pid>/stat (utime+stime) over the window.`,
      '',
      '| revocation | requests/s | p50 ms | p99 ms | gate CPU µs/request | requests/s per run |',
      '|---|---:|---:|---:|---:|---|',
      line('off', 'off'),
      line('ocsp (cache warm)', 'ocsp'),
      '',
      `Ratio on/off: throughput ${fmt(rpsRatio, 3)} (${pct(rpsRatio)}), gate CPU per request ${fmt(cpuRatio, 3)} (${pct(cpuRatio)}). OCSP requests to the responder: ${ocspAfterWarm} during warm-up, ${ocspInWindows} during all measurement windows.`,
      '',
      (1 - rpsRatio) * 100 > noise || (cpuRatio - 1) * 100 > noise
        ? `With a warm cache the responder is not consulted per request, yet revocation costs ${pct(rpsRatio)} throughput and ${pct(cpuRatio)} gate CPU per request, beyond the run-to-run spread (${fmt(noise)} %): more than a cache lookup should.`
        : `With a warm cache the check is a per-certificate map lookup and the responder is not consulted per request, so revocation has no cost measurable above the run-to-run spread on this machine (${fmt(noise)} % across runs of one mode).`,
    ].join('\n');
    upsertBlock(join(ROOT, 'load', 'RESULTS.md'), `revocation:${date}`, section);
    process.stdout.write(`\n${section}\n\n(total ${fmt((Date.now() - started) / 1000, 1)} s; section written to load/RESULTS.md)\n`);
  } finally {
    for (const close of closers.reverse()) await close().catch(() => {});
    killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

const role = process.argv.find((a) => a.startsWith('--child='))?.slice('--child='.length);
if (role === 'upstream') upstreamMain();
else if (role === 'loadgen') loadgenMain();
else
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`revocation-bench: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
